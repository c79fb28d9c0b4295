// The REST API as the console uses it: the same paths, token and errors as any client.
// Nothing here reaches the services but through Envoy, with the bearer token.

const TOKEN_KEY = "callbacks.token";
export const PAGE = 1000; // the API's largest page

export class ApiError extends Error {
  constructor(status, reason, message, violations) {
    super(`${status} ${reason}: ${message}`);
    this.status = status;
    this.reason = reason;
    this.apiMessage = message;
    this.violations = violations; // [{field, description}]
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// The client id in the token (shown only; the API decides what the token may reach).
export function tokenClient(value) {
  try {
    const payload = value.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).sub || "";
  } catch {
    return "";
  }
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    return new ApiError(response.status, "", response.statusText, []);
  }
  let reason = "";
  let violations = [];
  for (const detail of body.details || []) {
    const kind = detail["@type"] || "";
    if (kind.endsWith("ErrorInfo")) reason = detail.reason || "";
    if (kind.endsWith("BadRequest")) violations = detail.field_violations || [];
  }
  return new ApiError(response.status, reason, body.message || "", violations);
}

// Answers worth the same request again: the rate limit, a dependency down, a gateway
// timeout. Reads are safe to repeat, and so are POSTs with an Idempotency-Key.
const RETRY_STATUSES = [429, 502, 503, 504];
const RETRIES = 3;

// One request under /client/@me (the token's own client); the parsed JSON answer.
export async function request(method, path, { params, body, headers } = {}) {
  const url = new URL(`/client/@me${path}`, location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== "" && value !== undefined && value !== null) url.searchParams.set(key, value);
  }
  const repeatable = method === "GET" || Boolean(headers && headers["Idempotency-Key"]);
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(url, {
      method,
      headers: {
        Authorization: `Bearer ${token()}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...(headers || {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
    if (response.ok) return response.json();
    const error = await errorOf(response);
    const again = repeatable && attempt < RETRIES && RETRY_STATUSES.includes(response.status) &&
      error.reason !== "QUOTA_EXCEEDED";
    if (!again) throw error;
    const wait = Math.max(Number(response.headers.get("retry-after")) || 0, 0.5 * 2 ** attempt);
    await new Promise((resolve) => setTimeout(resolve, wait * 1000));
  }
}

export const listQueues = (params) => request("GET", "/task_scheduler/", { params });
export const getQueue = (id) => request("GET", `/task_scheduler/${id}`);
export const createQueue = (fields) => request("POST", "/task_scheduler/", { body: fields });
export const updateQueue = (id, fields) => request("PUT", `/task_scheduler/${id}`, { body: fields });
export const listTasks = (queue, params) => request("GET", `/task_scheduler/${queue}/task/`, { params });
export const getTask = (queue, id) => request("GET", `/task_scheduler/${queue}/task/${id}`);
export const taskCalls = (queue, id) => request("GET", `/task_scheduler/${queue}/task/${id}/calls`);
export const listIntervals = (params) => request("GET", "/interval/", { params });
export const getInterval = (id) => request("GET", `/interval/${id}`);
export const addTasks = (queue, tasks, key) =>
  request("POST", `/task_scheduler/${queue}/tasks/`, {
    body: { tasks },
    headers: { "Idempotency-Key": key },
  });

// Every queue, all pages.
export async function allQueues() {
  const queues = [];
  for (;;) {
    const page = await listQueues({ limit: PAGE, after_id: queues.length ? queues.at(-1).id : 0 });
    queues.push(...page);
    if (page.length < PAGE) return queues;
  }
}

// Every calling window (interval), all pages.
export async function allIntervals() {
  const intervals = [];
  for (;;) {
    const page = await listIntervals({ limit: PAGE, after_id: intervals.length ? intervals.at(-1).id : 0 });
    intervals.push(...page);
    if (page.length < PAGE) return intervals;
  }
}

// How many of a queue's tasks have this status, counting at most `cap` (then "cap+").
export async function countTasks(queue, status, cap = 10 * PAGE) {
  let count = 0;
  let after = 0;
  while (count < cap) {
    const page = await listTasks(queue, { status, limit: PAGE, after_id: after });
    count += page.length;
    if (page.length < PAGE) return { count, more: false };
    after = page.at(-1).id;
  }
  return { count, more: true };
}
