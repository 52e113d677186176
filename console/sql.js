// The SQL editor: run statements (Ctrl+Enter), see rows as a paged table
// or the error with its SQLSTATE, EXPLAIN, cancel a long query, the
// query history, and a view made from the query. A syntax error shows
// its line with a caret and puts the cursor there.
import { sql, el, table, errorBox, pageSignal, ident } from "./lib.js";

const HISTORY = "streamhouse.history";
const PAGE = 100;

export async function sqlEditor() {
  const editor = el("textarea", { id: "sql-text", spellcheck: "false", placeholder: "SELECT …" });
  const out = el("div", { id: "sql-result" });
  const status = el("span", { id: "sql-status", class: "muted" });
  const history = el("ol", { class: "history", id: "sql-history" });
  const run = el("button", { id: "sql-run", onclick: () => execute(editor.value) }, "Run");
  const cancel = el("button", { id: "sql-cancel", disabled: true, onclick: () => running?.abort() }, "Cancel");
  const explain = el("button", { id: "sql-explain", onclick: () => execute(`EXPLAIN ${editor.value}`) }, "EXPLAIN");
  const viewName = el("input", { id: "view-name", placeholder: "view name" });
  const makeView = el("button", {
    id: "create-view",
    onclick: () => viewName.value && execute(`CREATE MATERIALIZED VIEW ${ident(viewName.value)} AS ${editor.value.replace(/;\s*$/, "")}`),
  }, "Create view from query");
  let running = null;
  editor.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); execute(editor.value); }
  });

  function remember(text) {
    const past = JSON.parse(localStorage.getItem(HISTORY) || "[]").filter((t) => t !== text);
    past.unshift(text);
    localStorage.setItem(HISTORY, JSON.stringify(past.slice(0, 50)));
    showHistory();
  }
  function showHistory() {
    const past = JSON.parse(localStorage.getItem(HISTORY) || "[]");
    history.replaceChildren(...past.map((t) => el("li", { onclick: () => { editor.value = t; } }, t.length > 120 ? `${t.slice(0, 120)}…` : t)));
  }

  async function execute(text) {
    if (!text.trim()) return;
    remember(text.trim());
    running = new AbortController();
    pageSignal().addEventListener("abort", () => running?.abort());
    run.disabled = true;
    cancel.disabled = false;
    status.textContent = "Running…";
    out.replaceChildren();
    const started = performance.now();
    const results = [];
    let current = null;
    try {
      await sql(text, {
        limit: 10000,
        signal: running.signal,
        onLine: (line) => {
          if (line.columns) { current = { columns: line.columns.map((c) => c.name), rows: [] }; results.push(current); }
          if (line.rows && current) current.rows.push(...line.rows);
          if (line.done) {
            if (!current || current.done) results.push({ tag: line.done.tag });
            else current.done = line.done;
          }
        },
      });
      status.textContent = `Done in ${Math.round(performance.now() - started)} ms`;
      out.replaceChildren(...results.map(render));
    } catch (e) {
      status.textContent = "";
      out.replaceChildren(...results.map(render), e.name === "AbortError" ? el("p", { class: "error", role: "alert" }, "Cancelled") : errorBox(e));
      if (e.position) out.append(...pointAt(text, e.position));
    } finally {
      run.disabled = false;
      cancel.disabled = true;
      running = null;
    }
  }

  // Where a syntax error is: the line with a caret under the column, and
  // the editor's cursor there (the text run may have had EXPLAIN or
  // CREATE … AS put before the editor's text).
  function pointAt(text, { line, column }) {
    const lines = text.split("\n");
    const bad = lines[line - 1];
    if (bad === undefined) return [];
    const where = el("pre", { class: "error-position", id: "sql-error-position" },
      `LINE ${line}: ${bad}\n${" ".repeat(`LINE ${line}: `.length + Math.max(0, column - 1))}^`);
    const prefix = text.indexOf(editor.value);
    let at = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0) + column - 1 - Math.max(0, prefix);
    if (prefix >= 0 && at >= 0 && at <= editor.value.length) {
      editor.focus();
      editor.setSelectionRange(at, Math.min(editor.value.length, at + 1));
    }
    return [where];
  }

  showHistory();
  return [
    el("h1", {}, "SQL"),
    editor,
    el("div", { class: "row" }, run, cancel, explain, status, el("span", { style: "margin-left:auto" }), viewName, makeView),
    out,
    el("h2", {}, "History"), history,
  ];
}

// One statement's result: a command tag, or rows paged PAGE at a time.
function render(result) {
  if (result.tag) return el("p", { class: "ok tag" }, result.tag);
  const box = el("div", { class: "result" });
  let page = 0;
  const pages = Math.max(1, Math.ceil(result.rows.length / PAGE));
  function draw() {
    const info = `${result.rows.length} row${result.rows.length === 1 ? "" : "s"}${result.done?.truncated ? " (more were left out)" : ""}`;
    box.replaceChildren(
      el("div", { class: "row" },
        el("span", { class: "muted row-count" }, info),
        el("button", { class: "prev", disabled: page === 0, onclick: () => { page -= 1; draw(); } }, "‹"),
        el("span", { class: "page" }, `page ${page + 1} of ${pages}`),
        el("button", { class: "next", disabled: page + 1 >= pages, onclick: () => { page += 1; draw(); } }, "›")),
      table(result.columns, result.rows.slice(page * PAGE, (page + 1) * PAGE)),
    );
  }
  draw();
  return box;
}
