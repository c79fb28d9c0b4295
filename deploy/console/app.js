// The console: sign-in, queues, a queue's tasks and CSV upload, a task and its call records.
// Plain ES modules, no build step; the DOM is built with h() (never innerHTML with data).

import * as api from "./api.js";
import { BATCH_SIZE, batches, digest, idempotencyKey, readRows, violationsByIndex } from "./csv.js";

// The statuses a task shows (the API's words; its list filter takes each).
const STATUSES = ["scheduled", "executed", "delayed", "delayed_interval", "delayed_concurrent_task", "finished"];
// Counted by listing them. Finished ones are not: the queue's own counters give them
// (task_count - sched_task_count), and they are most of a queue that has been running.
const COUNTED = STATUSES.filter((s) => s !== "finished");
// What a waiting task is waiting for, in words.
const WAITING_FOR = {
  delayed: "waiting out the pause before its next try",
  delayed_interval: "held by the calling window: starts when it opens",
  delayed_concurrent_task: "due, held by the limit (no room under the queue's limit or the client's quota)",
};
const TASK_PAGE = 50;
const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

let stopPolling = () => {};

// --- DOM helpers ------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function say(message, { error = false } = {}) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", error);
}

function fail(error) {
  if (error instanceof api.ApiError && error.status === 401) {
    signOut(`Signed out: the API refused the token (${error.apiMessage}).`);
    return;
  }
  say(error instanceof api.ApiError ? `${error.status} ${error.reason}: ${error.apiMessage}` : String(error), { error: true });
}

function pill(text, ...classes) {
  return h("span", { class: ["pill", ...classes].join(" ") }, text);
}

function field(id, label, input) {
  input.id = id;
  return h("div", {}, h("label", { for: id }, label), input);
}

function table(headers, rows, caption) {
  return h("div", { class: "table-wrap" },
    h("table", {},
      caption ? h("caption", { class: "muted" }, caption) : null,
      h("thead", {}, h("tr", {}, headers.map(([text, cls]) => h("th", { scope: "col", class: cls }, text)))),
      rows instanceof HTMLTableSectionElement ? rows : h("tbody", {}, rows)));
}

function show(...content) {
  const view = $("view");
  view.replaceChildren(...content);
  view.hidden = false;
  $("sign-in").hidden = true;
  const title = view.querySelector("h1");
  if (title) {
    title.tabIndex = -1;
    title.focus();
    document.title = `${title.textContent} · callback-scheduler`;
  }
}

// Calls `tick` now and every POLL_MS while this view is shown (the next view stops it).
function poll(tick) {
  let stopped = false;
  let timer = 0;
  const run = async () => {
    try {
      await tick();
    } catch (error) {
      fail(error);
    }
    if (!stopped) timer = setTimeout(run, POLL_MS);
  };
  stopPolling = () => { stopped = true; clearTimeout(timer); };
  run();
}

// --- sign-in ------------------------------------------------------------------------------------

function signOut(message = "Signed out.") {
  stopPolling();
  api.setToken("");
  $("view").hidden = true;
  $("sign-in").hidden = false;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  say(message);
  $("token").focus();
}

async function signIn(value) {
  api.setToken(value.trim());
  try {
    await api.listQueues({ limit: 1 });
  } catch (error) {
    api.setToken("");
    say(`Not signed in: ${error.status || ""} ${error.apiMessage || error}`, { error: true });
    return false;
  }
  $("who").textContent = `client ${api.tokenClient(api.token())}`;
  $("sign-out").hidden = false;
  say("");
  return true;
}

// --- queues -------------------------------------------------------------------------------------

function inFlightCell(executed, limit) {
  const meter = h("span", { class: "meter", "aria-hidden": "true" }, h("span"));
  meter.firstChild.style.width = `${Math.min(100, (100 * executed) / Math.max(limit, 1))}%`;
  return [`${executed} / ${limit}`, meter];
}

function countText({ count, more }) {
  return more ? `${count.toLocaleString()}+` : count.toLocaleString();
}

async function queueCounts(queue) {
  const counted = await Promise.all(COUNTED.map((status) => api.countTasks(queue.id, status)));
  const finished = { count: Number(queue.task_count || 0) - Number(queue.sched_task_count || 0), more: false };
  return { ...Object.fromEntries(COUNTED.map((status, i) => [status, counted[i]])), finished };
}

// A queue's calling window in words; `interval` is the one its interval_id names, if read.
function windowText(queue, interval) {
  if (!queue.interval_id) return "none (always open)";
  if (!interval) return `interval ${queue.interval_id}`;
  return `${interval.name || `interval ${interval.id}`} (${interval.timezone})`;
}

async function setQueueStatus(queue, on) {
  try {
    await api.updateQueue(queue.id, { status: on ? "on" : "off" });
    say(`Queue ${queue.name || queue.id} switched ${on ? "on" : "off"}.`);
  } catch (error) {
    fail(error);
  }
}

function createQueueForm(after) {
  const name = h("input", { name: "name", maxlength: 255, required: true });
  const comment = h("input", { name: "comment", maxlength: 4000 });
  const limit = h("input", { type: "number", name: "limit", min: 1, max: 10000, value: 1, required: true });
  const on = h("input", { type: "checkbox", id: "new-queue-on", role: "switch" });
  return h("form", {
    class: "inline panel",
    "aria-labelledby": "create-title",
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const queue = await api.createQueue({
          name: name.value,
          comment: comment.value,
          concurrent_task_limit: Number(limit.value),
          status: on.checked ? "on" : "off",
        });
        say(`Queue ${queue.name} created (id ${queue.id}).`);
        event.target.reset();
        after(queue);
      } catch (error) {
        fail(error);
      }
    },
  },
  h("h2", { id: "create-title", class: "sr-title" }, "Create a queue"),
  field("new-queue-name", "Name", name),
  field("new-queue-comment", "Comment", comment),
  field("new-queue-limit", "Concurrent task limit", limit),
  h("div", {}, h("label", { class: "switch", for: "new-queue-on" }, on, "Start switched on")),
  h("button", { type: "submit", class: "primary" }, "Create queue"));
}

async function queuesView() {
  const body = h("tbody");
  const render = async () => {
    const [queues, intervals] = await Promise.all([api.allQueues(), api.allIntervals()]);
    const intervalsById = new Map(intervals.map((i) => [i.id, i]));
    const rows = [];
    for (const queue of queues) {
      const counts = await queueCounts(queue);
      const toggle = h("input", {
        type: "checkbox",
        role: "switch",
        "aria-label": `Queue ${queue.name || queue.id} on`,
        onchange: (event) => setQueueStatus(queue, event.target.checked),
      });
      toggle.checked = queue.status === "on";
      rows.push(h("tr", {},
        h("td", {}, h("a", { href: `#/queues/${queue.id}` }, queue.name || `queue ${queue.id}`),
          h("div", { class: "muted" }, queue.comment)),
        h("td", {}, h("label", { class: "switch" }, toggle, queue.status)),
        h("td", { class: "num" }, inFlightCell(counts.executed.count, queue.concurrent_task_limit)),
        h("td", { class: "num" }, countText(counts.scheduled)),
        h("td", { class: "num" }, countText(counts.delayed)),
        h("td", { class: "num" }, countText(counts.delayed_interval)),
        h("td", { class: "num" }, countText(counts.delayed_concurrent_task)),
        h("td", { class: "num" }, countText(counts.finished)),
        h("td", {}, windowText(queue, intervalsById.get(queue.interval_id))),
        h("td", { class: "hide-small" }, queue.last_call_date || "—"),
        h("td", { class: "hide-small" }, queue.create_date_utc),
        h("td", { class: "num hide-small" }, queue.id)));
    }
    body.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 12 }, "No queues yet: create one above."))]));
  };
  show(
    h("h1", {}, "Queues"),
    createQueueForm(() => render().catch(fail)),
    h("h2", {}, "Your queues"),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {},
        h("th", { scope: "col" }, "Queue"),
        h("th", { scope: "col" }, "Status"),
        h("th", { scope: "col", class: "num" }, "In flight / limit"),
        h("th", { scope: "col", class: "num" }, "Scheduled"),
        h("th", { scope: "col", class: "num" }, "Delayed"),
        h("th", { scope: "col", class: "num" }, "Held (window)"),
        h("th", { scope: "col", class: "num" }, "Held (limit)"),
        h("th", { scope: "col", class: "num" }, "Finished"),
        h("th", { scope: "col" }, "Calling window"),
        h("th", { scope: "col", class: "hide-small" }, "Last call (UTC)"),
        h("th", { scope: "col", class: "hide-small" }, "Created (UTC)"),
        h("th", { scope: "col", class: "num hide-small" }, "Id"))),
      body)),
    h("p", { class: "muted" }, "Counts refresh every 2 s (up to 10,000 per status are counted; finished from the queue's own counters)."),
  );
  poll(render);
}

// --- a queue ------------------------------------------------------------------------------------

function editQueueForm(queue, after) {
  const comment = h("input", { value: queue.comment, maxlength: 4000 });
  const limit = h("input", { type: "number", min: 1, max: 10000, value: queue.concurrent_task_limit, required: true });
  const on = h("input", { type: "checkbox", role: "switch", id: "edit-on" });
  on.checked = queue.status === "on";
  return h("form", {
    class: "inline panel",
    "aria-label": "Edit queue",
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const changed = await api.updateQueue(queue.id, {
          comment: comment.value,
          concurrent_task_limit: Number(limit.value),
          status: on.checked ? "on" : "off",
        });
        say(`Queue ${changed.name || changed.id} saved.`);
        after(changed);
      } catch (error) {
        fail(error);
      }
    },
  },
  field("edit-comment", "Comment", comment),
  field("edit-limit", "Concurrent task limit", limit),
  h("div", {}, h("label", { class: "switch", for: "edit-on" }, on, "Switched on")),
  h("button", { type: "submit", class: "primary" }, "Save"));
}

function taskRow(queueId, task) {
  return h("tr", {},
    h("td", { class: "num" }, h("a", { href: `#/queues/${queueId}/tasks/${task.id}` }, task.id)),
    h("td", {}, task.name),
    h("td", {}, pill(task.status, task.status.split("_")[0], task.finish_result)),
    h("td", {}, task.a_number),
    h("td", {}, task.b_number),
    h("td", { class: "hide-small" }, task.start_time_utc),
    h("td", { class: "hide-small" }, task.finish_comment || task.finish_result));
}

function tasksPanel(queueId) {
  const status = h("select", {}, h("option", { value: "" }, "any"), STATUSES.map((s) => h("option", { value: s }, s)));
  const body = h("tbody");
  const pageInfo = h("span", { class: "muted" });
  const previous = h("button", { type: "button" }, "Previous page");
  const next = h("button", { type: "button" }, "Next page");
  let starts = [0]; // after_id of each page seen, for Previous
  let last = [];
  const load = async () => {
    const after = starts.at(-1);
    last = await api.listTasks(queueId, { status: status.value, limit: TASK_PAGE, after_id: after });
    body.replaceChildren(...(last.length ? last.map((t) => taskRow(queueId, t)) : [h("tr", {}, h("td", { colspan: 7 }, "No tasks."))]));
    previous.disabled = starts.length === 1;
    next.disabled = last.length < TASK_PAGE;
    pageInfo.textContent = `page ${starts.length}, ${last.length} task(s)`;
  };
  status.addEventListener("change", () => { starts = [0]; load().catch(fail); });
  previous.addEventListener("click", () => { starts.pop(); load().catch(fail); });
  next.addEventListener("click", () => { starts.push(last.at(-1).id); load().catch(fail); });
  const panel = h("section", { "aria-labelledby": "tasks-title" },
    h("h2", { id: "tasks-title" }, "Tasks"),
    h("div", { class: "toolbar" }, field("task-status", "Status", status)),
    table([["Id", "num"], ["Name"], ["Status"], ["A number"], ["B number"], ["Start (UTC)", "hide-small"], ["Result", "hide-small"]], body),
    h("div", { class: "pager" }, previous, next, pageInfo));
  return { panel, load };
}

function uploadPanel(queueId) {
  const file = h("input", { type: "file", accept: ".csv,text/csv" });
  const summary = h("div", { "aria-live": "polite" });
  const bar = h("progress", { max: 1, value: 0, "aria-label": "Upload progress" });
  const progressText = h("p", { class: "muted", "aria-live": "polite" });
  const rejectedBox = h("div");
  const send = h("button", { type: "button", class: "primary", disabled: true }, "Add tasks");
  let parsed = null;

  file.addEventListener("change", async () => {
    send.disabled = true;
    rejectedBox.replaceChildren();
    progressText.textContent = "";
    bar.value = 0;
    const chosen = file.files[0];
    if (!chosen) return;
    const text = await chosen.text();
    const { rows, error } = readRows(text);
    if (error) {
      summary.replaceChildren(h("p", { class: "error-text" }, error));
      return;
    }
    parsed = { rows, digest: await digest(text), name: chosen.name };
    const bad = rows.filter((r) => r.problems.length).length;
    const state = loadImport(queueId, parsed.digest);
    const doneBatches = state ? Object.keys(state.done).length : 0;
    const batchCount = Math.ceil(rows.length / BATCH_SIZE);
    const allDone = rows.length > 0 && doneBatches === batchCount;
    const again = h("button", {
      type: "button",
      onclick: () => {
        localStorage.removeItem(importKey(queueId, parsed.digest));
        file.dispatchEvent(new Event("change"));
      },
    }, "Add this file again as new tasks");
    summary.replaceChildren(h("p", {},
      `${rows.length.toLocaleString()} rows in ${batchCount} batch(es) of up to ${BATCH_SIZE}`,
      bad ? `; ${bad} row(s) cannot be sent as written (listed after the upload)` : "",
      allDone ? `. ${doneBatches} of ${batchCount} batches were sent before: this file is already in this queue.` : "",
      doneBatches && !allDone ? `. ${doneBatches} of ${batchCount} batches were sent before: the rest will follow (resume).` : "",
      doneBatches ? "" : ".",
    ), allDone ? again : "");
    send.disabled = rows.length === 0 || allDone;
    if (allDone) showResult(state, rows.length);
  });

  const showResult = (state, total) => {
    const created = Object.values(state.done).reduce((sum, d) => sum + d.created, 0);
    const rejected = Object.values(state.done).flatMap((d) => d.rejected).sort((a, b) => a[0] - b[0]);
    bar.max = 1;
    bar.value = 1;
    progressText.textContent = `${created.toLocaleString()} of ${total.toLocaleString()} rows added; ${rejected.length} rejected.`;
    rejectedBox.replaceChildren(rejected.length
      ? table([["Row", "num"], ["Why (the API's reasons)"]],
        rejected.map(([row, reasons]) => h("tr", {}, h("td", { class: "num" }, row), h("td", {}, reasons.map((r) => h("div", {}, r))))),
        "Rejected rows")
      : h("p", {}, "Every row was added."));
  };

  send.addEventListener("click", async () => {
    if (!parsed) return;
    send.disabled = true;
    file.disabled = true;
    try {
      const state = await runImport(queueId, parsed, (done, total, rate, eta) => {
        bar.max = total;
        bar.value = done;
        progressText.textContent = `${done.toLocaleString()} of ${total.toLocaleString()} rows` +
          (rate ? ` · ${Math.round(rate).toLocaleString()} rows/s · about ${Math.ceil(eta)} s left` : "");
      });
      showResult(state, parsed.rows.length);
      say(`Upload of ${parsed.name} finished.`);
    } catch (error) {
      fail(error);
      send.disabled = false;
    } finally {
      file.disabled = false;
    }
  });

  return h("section", { "aria-labelledby": "upload-title" },
    h("h2", { id: "upload-title" }, "Add tasks from a CSV file"),
    h("p", { class: "muted" }, "Header row = task fields: name, a_number, b_number, extension_id, try_count, try_again_pause, url_before, url_before_again, url_success, url_after, start_time_utc, caller_id_name, caller_id_number, extended_a_numbers, try_count_caller, try_again_pause_caller, timezone (the callee's IANA time zone). Sent in batches of 1,000; each batch has its own Idempotency-Key, so a reload and a new upload of the same file resume without doubling a task."),
    h("div", { class: "toolbar" }, field("csv-file", "CSV file", file), send),
    summary, bar, progressText, rejectedBox);
}

// Upload state in this browser: which batches of which file went to which queue.
function importKey(queueId, fileDigest) {
  return `callbacks.import.${api.tokenClient(api.token())}.${queueId}.${fileDigest}`;
}

function loadImport(queueId, fileDigest) {
  try {
    return JSON.parse(localStorage.getItem(importKey(queueId, fileDigest)) || "null");
  } catch {
    return null;
  }
}

async function runImport(queueId, parsed, progress) {
  const storageKey = importKey(queueId, parsed.digest);
  const random = Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, "0")).join("");
  const state = loadImport(queueId, parsed.digest) || { run: random, done: {} };
  localStorage.setItem(storageKey, JSON.stringify(state)); // before the first request
  const importId = `${parsed.digest.slice(0, 24)}-${state.run}`;
  const plan = batches(parsed.rows);
  let done = plan.filter((b) => state.done[b.index]).reduce((n, b) => n + b.rows.length, 0);
  const started = performance.now();
  const resumedRows = done;
  progress(done, parsed.rows.length, 0, 0);
  for (const batch of plan) {
    if (state.done[batch.index]) continue;
    const local = batch.rows.filter((r) => r.problems.length).map((r) => [r.number, r.problems]);
    const { created, rejected } = await sendRows(queueId, importId, batch.index, batch.rows.filter((r) => !r.problems.length));
    state.done[batch.index] = { created, rejected: [...local, ...rejected] };
    localStorage.setItem(storageKey, JSON.stringify(state));
    done += batch.rows.length;
    const seconds = (performance.now() - started) / 1000;
    const rate = (done - resumedRows) / Math.max(seconds, 0.001);
    progress(done, parsed.rows.length, rate, (parsed.rows.length - done) / rate);
  }
  return state;
}

// A bulk add is all or nothing: rows the API names are set aside with its reasons and the
// rest sent again (another key); an error naming no row is narrowed down by halves.
async function sendRows(queueId, importId, batchIndex, rows) {
  let created = 0;
  const rejected = [];
  while (rows.length) {
    const key = await idempotencyKey(importId, queueId, batchIndex, rows);
    try {
      const tasks = await api.addTasks(queueId, rows.map((r) => r.task), key);
      return { created: created + tasks.length, rejected };
    } catch (error) {
      const tooLarge = error instanceof api.ApiError && error.status === 413 && rows.length > 1;
      if (!tooLarge && (!(error instanceof api.ApiError) || error.status !== 400)) throw error;
      // Over the gateway's 4 MiB (long URLs): no row is named, the halves go below.
      const named = tooLarge ? new Map() : violationsByIndex(error.violations);
      for (const index of [...named.keys()]) if (index >= rows.length) named.delete(index);
      if (named.size) {
        for (const [index, reasons] of named) rejected.push([rows[index].number, reasons]);
        rows = rows.filter((_, index) => !named.has(index));
      } else if (rows.length === 1) {
        rejected.push([rows[0].number, [error.apiMessage]]);
        rows = [];
      } else {
        const middle = Math.floor(rows.length / 2);
        const first = await sendRows(queueId, importId, batchIndex, rows.slice(0, middle));
        const second = await sendRows(queueId, importId, batchIndex, rows.slice(middle));
        return { created: created + first.created + second.created, rejected: [...rejected, ...first.rejected, ...second.rejected] };
      }
    }
  }
  return { created, rejected };
}

async function queueView(queueId) {
  let queue = await api.getQueue(queueId);
  const heading = h("h1", {}, queue.name || `Queue ${queue.id}`);
  const facts = h("p", { class: "muted" });
  const windowFacts = h("p", { "aria-label": "Calling window" });
  let interval = null; // the interval queue.interval_id names, read again when that changes
  const renderFacts = (counts) => {
    facts.replaceChildren(
      pill(queue.status, queue.status), " ",
      `in flight ${counts.executed.count} / ${queue.concurrent_task_limit} · scheduled ${countText(counts.scheduled)} · delayed ${countText(counts.delayed)} · held by the window ${countText(counts.delayed_interval)} · held by the limit ${countText(counts.delayed_concurrent_task)} · finished ${countText(counts.finished)} · id ${queue.id} · created ${queue.create_date_utc} UTC · last call ${queue.last_call_date ? `${queue.last_call_date} UTC` : "none yet"}`);
    windowFacts.replaceChildren(`Calling window: ${windowText(queue, interval)}`);
  };
  const tasks = tasksPanel(queueId);
  show(
    h("p", {}, h("a", { href: "#/queues" }, "← Queues")),
    heading,
    facts,
    windowFacts,
    editQueueForm(queue, (changed) => { queue = changed; }),
    uploadPanel(queueId),
    tasks.panel,
  );
  poll(async () => {
    queue = await api.getQueue(queueId);
    if (queue.interval_id !== (interval ? interval.id : 0)) {
      interval = queue.interval_id ? await api.getInterval(queue.interval_id) : null;
    }
    renderFacts(await queueCounts(queue));
    await tasks.load();
  });
}

// --- a task -------------------------------------------------------------------------------------

function fieldList(pairs) {
  return h("dl", { class: "fields" }, pairs.filter(([, v]) => v !== undefined).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v === "" ? "—" : v)]));
}

function seconds(utc) {
  return utc ? Date.parse(`${utc.replace(" ", "T")}Z`) / 1000 : null;
}

// The legs on one time axis from the start of the call. Times in the record are whole
// seconds; the legs' ring and talk durations are exact, so the bars are drawn from those.
function legTimeline(call) {
  const start = seconds(call.started_utc);
  const offset = (leg) => Math.max(0, (seconds(leg.ring_started_utc) ?? start) - start);
  const span = Math.max(
    Number(call.duration_seconds) || 0,
    ...call.legs.map((l) => offset(l) + Number(l.ring_seconds || 0) + Number(l.talk_seconds || 0)),
    0.001,
  );
  const percent = (value) => `${(100 * value) / span}%`;
  return h("div", {},
    h("ol", { class: "timeline", "aria-label": `Legs of call ${call.call_uuid}` },
      call.legs.map((leg) => {
        const track = h("div", { class: "track", "aria-hidden": "true" });
        const ring = Number(leg.ring_seconds || 0);
        const talk = Number(leg.talk_seconds || 0);
        if (leg.ring_started_utc) {
          const bar = h("span", { class: "ring" });
          bar.style.left = percent(offset(leg));
          bar.style.width = percent(ring);
          track.append(bar);
        }
        if (leg.answered_utc) {
          const bar = h("span", { class: "talk" });
          bar.style.left = percent(offset(leg) + ring);
          bar.style.width = percent(talk);
          track.append(bar);
        }
        const words = [
          `${leg.role.toUpperCase()} ${leg.number}: ${leg.result}`,
          leg.ring_started_utc && `rang ${leg.ring_started_utc} (${ring.toFixed(2)} s)`,
          leg.answered_utc && `answered ${leg.answered_utc}`,
          leg.answered_utc && `talked ${talk.toFixed(2)} s`,
          leg.ended_utc && `ended ${leg.ended_utc}`,
          leg.hangup_by && `hung up by ${leg.hangup_by}`,
        ].filter(Boolean).join(" · ");
        return h("li", {}, h("span", {}, `${leg.role.toUpperCase()} ${leg.number}`), h("div", {}, track, h("div", { class: "muted" }, words)));
      })),
    h("p", { class: "legend" }, `Bars over the call's ${span.toFixed(2)} s:`, h("span", { class: "ring-key" }), "ringing", h("span", { class: "talk-key" }), "answered (talking)"));
}

function callRecord(call) {
  const b = call.legs.find((l) => l.role === "b" && l.answered_utc);
  return h("article", { class: "panel", "aria-label": `Call ${call.call_uuid}` },
    h("h3", {}, `Attempt ${call.attempt}: `, pill(call.result, call.result === "connected" ? "connected" : call.result === "in_progress" ? "executed" : "bad")),
    fieldList([
      ["Call id", call.call_uuid],
      ["Started (UTC)", call.started_utc],
      ["Connected (UTC)", b ? b.answered_utc : ""],
      ["Ended (UTC)", call.ended_utc],
      ["Duration", `${Number(call.duration_seconds).toFixed(1)} s (talk ${Number(call.talk_seconds).toFixed(1)} s)`],
      ["Comment", call.comment],
      ["Backend", call.backend],
    ]),
    legTimeline(call));
}

async function taskView(queueId, taskId) {
  const heading = h("h1", {}, `Task ${taskId}`);
  const details = h("div");
  const calls = h("div");
  show(
    h("p", {}, h("a", { href: `#/queues/${queueId}` }, "← Queue")),
    heading,
    details,
    h("h2", {}, "Webhooks"),
    h("div", { id: "webhooks" }),
    h("h2", {}, "Call record"),
    calls,
  );
  let finishedSeen = false;
  poll(async () => {
    if (finishedSeen) return;
    const task = await api.getTask(queueId, taskId);
    heading.textContent = `Task ${task.id}${task.name ? `: ${task.name}` : ""}`;
    const params = task.callback_params || {};
    details.replaceChildren(fieldList([
      ["Status", [pill(task.status, task.status.split("_")[0], task.finish_result), WAITING_FOR[task.status] ? ` ${WAITING_FOR[task.status]}` : ""]],
      ["Result", task.finish_result],
      ["Why", task.finish_comment],
      ["A number", task.a_number],
      ["B number", task.b_number],
      ["Extended A numbers", (params.extended_a_numbers || []).join(", ")],
      ["Caller id", [params.caller_id_name, params.caller_id_number].filter(Boolean).join(" ")],
      ["Start (UTC)", task.start_time_utc],
      ["Tries", `${task.try_count}, ${task.try_again_pause} s apart`],
      ["A-leg retries", task.try_count_caller ? `up to ${task.try_count_caller} failures at A, ${task.try_again_pause_caller} s apart` : "off"],
      ["Callee time zone", params.timezone || ""],
      ["Created (UTC)", task.create_date_utc],
      ["Latest call", task.cdr],
    ]));
    $("webhooks").replaceChildren(
      fieldList([["before", task.url_before], ["before_again", task.url_before_again], ["success", task.url_success], ["after", task.url_after]]),
      h("p", { class: "muted" }, "The public API does not show webhook deliveries; these are the URLs each event goes to."));
    const records = await api.taskCalls(queueId, taskId);
    calls.replaceChildren(...(records.length ? records.map(callRecord) : [h("p", {}, "No call yet.")]));
    finishedSeen = task.status === "finished";
  });
}

// --- routing ------------------------------------------------------------------------------------

async function route() {
  stopPolling();
  if (!api.token()) {
    signOut("");
    return;
  }
  const path = location.hash.replace(/^#/, "") || "/queues";
  let match;
  try {
    if ((match = path.match(/^\/queues\/(\d+)\/tasks\/(\d+)$/))) await taskView(match[1], match[2]);
    else if ((match = path.match(/^\/queues\/(\d+)$/))) await queueView(match[1]);
    else await queuesView();
  } catch (error) {
    fail(error);
  }
}

async function start() {
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (await signIn($("token").value)) {
      $("token").value = "";
      if (location.hash === "#/queues") route();
      else location.hash = "#/queues";
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", route);
  // The link `make run` prints carries the token in the fragment (never sent to a server):
  // take it, and take it out of the address bar and the history.
  const fromLink = location.hash.match(/^#token=([^&]+)/);
  if (fromLink) {
    history.replaceState(null, "", `${location.pathname}#/queues`);
    if (!(await signIn(decodeURIComponent(fromLink[1])))) {
      signOut($("status").textContent);
      return;
    }
  } else if (api.token()) {
    $("who").textContent = `client ${api.tokenClient(api.token())}`;
    $("sign-out").hidden = false;
  }
  route();
}

start();
