// What every page uses: the REST API (GET, POST, SQL as JSON lines) with
// the signed-in token, DOM and table helpers, pushed answers (watch), and
// the requests of the page shown (stopped when another is shown).

export const TOKEN = "streamhouse.token";

// What a 401 does (the shell shows the sign-in dialog).
let onUnauthorized = () => {};
export function whenUnauthorized(f) { onUnauthorized = f; }

// A failed request: the server's message, SQLSTATE, HTTP status, and
// where in the SQL text a syntax error is ({line, column}, from 1).
export class ApiError extends Error {
  constructor(status, message, sqlstate, position) {
    super(message);
    this.status = status;
    this.sqlstate = sqlstate;
    this.position = position;
  }
}

export function headers(extra = {}) {
  const token = sessionStorage.getItem(TOKEN);
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function failure(r) {
  let body = {};
  try { body = await r.json(); } catch { body = { error: await r.text().catch(() => r.statusText) }; }
  if (r.status === 401) onUnauthorized();
  return new ApiError(r.status, body.error || r.statusText, body.sqlstate, body.position);
}

// GET a JSON resource of the REST API.
export async function get(path, signal) {
  const r = await fetch(path, { headers: headers(), signal });
  if (!r.ok) throw await failure(r);
  return r.json();
}

// POST a JSON body to the REST API; its JSON answer.
export async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
  });
  if (!r.ok) throw await failure(r);
  return r.json();
}

// Runs SQL through POST /v1/sql; calls onLine for each JSON line of the
// answer as it arrives. Abort with `signal`.
export async function sql(text, { limit, signal, onLine } = {}) {
  const r = await fetch("/v1/sql", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(limit ? { sql: text, limit } : { sql: text }),
    signal,
  });
  if (!r.ok) throw await failure(r);
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  const lines = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = JSON.parse(buffered.slice(0, nl));
      buffered = buffered.slice(nl + 1);
      if (onLine) onLine(line); else lines.push(line);
      if (line.error) throw new ApiError(200, line.error.message, line.error.sqlstate, line.error.position);
    }
  }
  return lines;
}

// Follows a Server-Sent Events answer (read with fetch, so the token goes
// in a header): onEvent(kind, data) for each event, data parsed as JSON.
// Ends with the answer, or when `signal` aborts.
export async function events(path, onEvent, signal) {
  const r = await fetch(path, { headers: headers(), signal });
  if (!r.ok) throw await failure(r);
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length) onEvent(kind, JSON.parse(data.join("\n")));
    }
  }
}

// A GET endpoint's answer pushed every `ms` while the page is shown
// (GET /v1/watch): onAnswer(answer) for each; onError(e) when the watch
// fails or onAnswer throws. A watch refused (400, 403, 404) stays
// closed; one that failed otherwise is opened again after a pause.
export function watch(path, ms, onAnswer, onError = () => {}) {
  const signal = pageAbort.signal;
  const q = new URLSearchParams({ path, every_ms: ms });
  (async () => {
    while (!signal.aborted) {
      try {
        await events(`/v1/watch?${q}`, (kind, data) => {
          if (kind === "error") {
            if (data.status === 401) onUnauthorized();
            throw new ApiError(data.status, data.error, data.sqlstate);
          }
          if (kind !== "answer") return;
          try { onAnswer(data); } catch (e) { onError(e); }
        }, signal);
      } catch (e) {
        if (signal.aborted) return;
        onError(e);
        // Refused for good (a bad path, no privilege, nothing there).
        if ([400, 403, 404].includes(e.status)) return;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.max(ms, 1000)));
    }
  })();
}

// The rows of one query, as objects keyed by column.
export async function query(text) {
  const lines = await sql(text);
  const columns = lines.find((l) => l.columns)?.columns || [];
  return lines.filter((l) => l.rows).flatMap((l) => l.rows)
    .map((r) => Object.fromEntries(columns.map((c, i) => [c.name, r[i]])));
}

// Small DOM helpers.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

// A table of `rows` (arrays) under `columns` (names); onRow(i) on click.
export function table(columns, rows, onRow) {
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, rows.map((r, i) => el("tr", onRow ? { class: "clickable", onclick: () => onRow(i) } : {},
      r.map((v) => el("td", {}, cell(v)))))));
}

function cell(v) {
  if (v === null) return el("span", { class: "muted" }, "NULL");
  if (v === undefined) return "";
  if (v instanceof Node) return v;
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

export function errorBox(e) {
  const code = e.sqlstate ? ` (SQLSTATE ${e.sqlstate})` : e.status ? ` (HTTP ${e.status})` : "";
  return el("p", { class: "error", role: "alert" }, `${e.message}${code}`);
}

export function number(n) {
  return n === null || n === undefined ? "" : Number(n).toLocaleString("en-US");
}

// The requests and watches of the page shown; ended when it changes.
let pageAbort = new AbortController();
export function pageSignal() { return pageAbort.signal; }

// Stops the page shown: its requests and watches.
export function leavePage() {
  pageAbort.abort();
  pageAbort = new AbortController();
}

export function quote(s) { return `'${String(s).replaceAll("'", "''")}'`; }
export function ident(s) { return `"${String(s).replaceAll('"', '""')}"`; }
