// CSV rows as the API's task objects, batches of 1,000, and each batch's Idempotency-Key.
// The same columns and rules as the command line (services/cli/rows.py).

export const BATCH_SIZE = 1000;
const FIRST_DATA_ROW = 2; // rows numbered as a spreadsheet shows them: the header is row 1
const TEXT = ["name", "a_number", "b_number", "url_before", "url_before_again", "url_success",
  "url_after", "start_time_utc"];
// Sent as JSON numbers: the API refuses a string in these (try_again_pause_caller too).
const INTEGER = ["extension_id", "try_count", "try_count_caller", "try_again_pause_caller"];
// callback_params; timezone is the callee's IANA zone (the API checks it).
const PARAMS = ["caller_id_name", "caller_id_number", "extended_a_numbers", "timezone"];
// In the order the command line lists them: the newest revision's columns last.
export const COLUMNS = [...TEXT, "extension_id", "try_count", "try_again_pause",
  "caller_id_name", "caller_id_number", "extended_a_numbers",
  "try_count_caller", "try_again_pause_caller", "timezone"];

// RFC 4180: fields separated by commas, quoted with "", "" inside quotes is one ".
export function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field); rows.push(row); row = []; field = "";
    } else field += c;
  }
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return rows.filter((r) => r.some((cell) => cell.trim() !== ""));
}

// {rows: [{number, task, problems}], error} from the file's text.
export function readRows(text) {
  const table = parseCsv(text.replace(/^\uFEFF/, ""));
  if (!table.length) return { rows: [], error: "the file is empty" };
  const header = table[0].map((name) => name.trim());
  const unknown = header.filter((name) => !COLUMNS.includes(name));
  if (unknown.length) {
    return {
      rows: [],
      error: `unknown column(s) ${unknown.join(", ")}; the columns are the task fields: ${COLUMNS.join(", ")}`,
    };
  }
  const rows = table.slice(1).map((cells, offset) => {
    const values = Object.fromEntries(header.map((name, i) => [name, (cells[i] || "").trim()]));
    return rowTask(FIRST_DATA_ROW + offset, values);
  });
  return { rows, error: "" };
}

export function rowTask(number, values) {
  const task = {};
  const problems = [];
  for (const name of TEXT) if (values[name]) task[name] = values[name];
  for (const name of INTEGER) {
    if (!values[name]) continue;
    if (/^[+-]?\d+$/.test(values[name])) task[name] = Number(values[name]);
    else problems.push(`${name}: must be a whole number, got '${values[name]}'`);
  }
  if (values.try_again_pause) task.try_again_pause = values.try_again_pause;
  const params = {};
  if (values.caller_id_name) params.caller_id_name = values.caller_id_name;
  if (values.caller_id_number) params.caller_id_number = values.caller_id_number;
  if (values.timezone) params.timezone = values.timezone;
  if (values.extended_a_numbers) params.extended_a_numbers = values.extended_a_numbers.split(/[\s,;]+/);
  if (Object.keys(params).length) task.callback_params = params;
  return { number, task, problems };
}

export function batches(rows, size = BATCH_SIZE) {
  const result = [];
  for (let start = 0; start < rows.length; start += size) {
    result.push({ index: result.length, rows: rows.slice(start, start + size) });
  }
  return result;
}

// The API's violations ("tasks[3].a_number") by the index of the task in the request.
export function violationsByIndex(violations) {
  const found = new Map();
  for (const { field, description } of violations) {
    const match = /^tasks\[(\d+)\]\.?(.*)$/.exec(field || "");
    if (!match) continue;
    const index = Number(match[1]);
    if (!found.has(index)) found.set(index, []);
    found.get(index).push(`${match[2] || "task"}: ${description}`);
  }
  return found;
}

// Hex digest of text: SHA-256 where the page may use WebCrypto (https, localhost), else
// FNV-1a 64 (enough to tell two files apart for resuming; the keys also carry a random run).
export async function digest(text) {
  const bytes = new TextEncoder().encode(text);
  if (globalThis.crypto && crypto.subtle) {
    const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  let hash = 0xcbf29ce484222325n;
  for (const b of bytes) hash = BigInt.asUintN(64, (hash ^ BigInt(b)) * 0x100000001b3n);
  return hash.toString(16).padStart(16, "0");
}

// The key of one bulk add: the import, the queue, the batch and exactly which rows are sent.
export async function idempotencyKey(importId, queue, batch, rows) {
  const which = (await digest(rows.map((r) => r.number).join(","))).slice(0, 16);
  return `console-import-${importId}-q${queue}-b${batch}-${which}`;
}
