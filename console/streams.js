// Streams: the list (create, delete), and a stream's page: partitions,
// schema and its versions, and a message browser (partition, from an
// offset or a time, live tail, a row's JSON).
import { get, sql, query, el, table, number, errorBox, pageSignal, quote, ident, events, watch } from "./lib.js";
import { sparkline } from "./chart.js";


export async function streams() {
  const list = el("div");
  const problem = el("div");
  // Each stream's recent row counts, for its rows per second.
  const history = new Map();
  function render({ streams }) {
    const now = performance.now();
    const seen = new Set();
    list.replaceChildren(table(
      ["Stream", "Kind", "Partitions", "Rows", "Bytes", "Retention", "Rows/s (last minute)", ""],
      streams.map((s) => {
        seen.add(s.name);
        const h = history.get(s.name) || [];
        h.push({ at: now, rows: s.rows });
        if (h.length > 31) h.shift();
        history.set(s.name, h);
        const rates = h.slice(1).map((p, i) => Math.max(0, (p.rows - h[i].rows) / Math.max(0.001, (p.at - h[i].at) / 1000)));
        return [
          el("a", { href: `#/streams/${encodeURIComponent(s.name)}` }, s.name), s.kind, s.partitions,
          number(s.rows), number(s.bytes), s.retention_ms ? `${s.retention_ms / 1000} s` : "forever",
          sparkline(rates, { unit: "/s" }),
          el("button", { class: "delete", "data-stream": s.name, onclick: () => drop(s.name) }, "Delete"),
        ];
      }),
    ));
    for (const name of history.keys()) if (!seen.has(name)) history.delete(name);
    problem.replaceChildren();
  }
  const failed = (e) => problem.replaceChildren(errorBox(e));
  async function refresh() {
    try { render(await get("/v1/streams")); } catch (e) { failed(e); }
  }
  async function drop(name) {
    if (!confirm(`Delete stream ${name} and every row in it?`)) return;
    try {
      await sql(`DROP STREAM ${ident(name)}`);
      refresh();
    } catch (e) {
      problem.replaceChildren(errorBox(e));
    }
  }
  const name = el("input", { id: "new-stream-name", placeholder: "name", required: true });
  const columns = el("input", { id: "new-stream-columns", placeholder: "id BIGINT, payload TEXT", size: 40, required: true });
  const partitions = el("input", { id: "new-stream-partitions", type: "number", min: 1, value: 4, style: "width:5em" });
  const create = el("form", {
    class: "row",
    onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        await sql(`CREATE STREAM ${ident(name.value)} (${columns.value}) WITH (partitions = ${Number(partitions.value) || 1})`);
        name.value = "";
        refresh();
      } catch (e) {
        problem.replaceChildren(errorBox(e));
      }
    },
  }, "New stream", name, "columns", columns, "partitions", partitions, el("button", { type: "submit", id: "create-stream" }, "Create"));
  // Pushed by the server every 2 s; refresh() after a change of ours.
  watch("/v1/streams", 2000, render, failed);
  return [el("h1", {}, "Streams"), create, problem, list];
}

export async function stream(name) {
  const path = `/v1/streams/${encodeURIComponent(name)}`;
  const info = await get(path);
  const partitionsBox = el("div", { id: "stream-partitions" });
  const groupsBox = el("div", { id: "stream-groups" });
  const problem = el("div");
  // Offsets, sizes and each group's lag, pushed by the server every 2 s.
  watch(path, 2000, (s) => {
    partitionsBox.replaceChildren(table(["Partition", "Start offset", "End offset", "Rows held", "Bytes", "Chunks", "Last append"],
      s.partition_stats.map((p) => [p.partition, number(p.start_offset), number(p.end_offset), number(p.rows), number(p.bytes),
        number(p.chunks), p.last_append_us ? new Date(p.last_append_us / 1000).toLocaleString() : ""])));
    groupsBox.replaceChildren(s.groups.length
      ? table(["Group", "Partition", "Committed", "End offset", "Lag"],
        s.groups.map((g) => [g.group, g.partition, number(g.committed), number(g.end_offset), number(g.lag)]))
      : el("p", { class: "muted" }, "No consumer group has committed offsets on this stream."));
    problem.replaceChildren();
  }, (e) => problem.replaceChildren(errorBox(e)));
  const versions = await query(`SELECT version, columns, change, created_at FROM streamhouse.schema_versions WHERE stream = ${quote(name)} ORDER BY version`).catch(() => []);
  return [
    el("h1", {}, `Stream ${name}`),
    el("p", { class: "muted" }, `${info.kind}, ${info.partitions} partitions, key ${info.key?.join(", ") || "none"}`),
    problem,
    el("h2", {}, "Partitions"), partitionsBox,
    el("h2", {}, "Consumer groups"), groupsBox,
    el("h2", {}, "Schema"),
    table(["Column", "Type", "Nullable"], info.columns.map((c) => [c.name, c.type, c.nullable ? "yes" : "no"])),
    versions.length ? table(["Version", "Columns", "Change", "Created"], versions.map((v) => [v.version, v.columns, v.change, v.created_at])) : null,
    el("h2", {}, "Messages"), browser(name, info.partitions),
  ];
}

// The message browser of one stream.
function browser(name, partitions) {
  const partition = el("select", { id: "browse-partition" },
    [...Array(partitions).keys()].map((p) => el("option", { value: p }, `partition ${p}`)));
  const from = el("input", { id: "browse-offset", type: "number", min: 0, placeholder: "latest", style: "width:8em" });
  const time = el("input", { id: "browse-time", type: "datetime-local" });
  const tail = el("input", { id: "browse-tail", type: "checkbox" });
  const out = el("div", { id: "messages" });
  const detail = el("pre", { id: "message-json", hidden: true });
  let next = null;
  let tailing = null;
  function render(start, end, rows, columns) {
    out.rows = rows;
    const names = columns.map((c) => c.name);
    out.replaceChildren(
      el("p", { class: "muted" }, `offsets ${start} to ${next} of ${end} in partition ${partition.value}`),
      table(names, rows, (i) => {
        detail.hidden = false;
        detail.textContent = JSON.stringify(Object.fromEntries(names.map((n, j) => [n, rows[i][j]])), null, 2);
      }),
    );
  }
  async function load(params) {
    const q = new URLSearchParams({ partition: partition.value, limit: 100, ...params });
    const page = await get(`/v1/streams/${encodeURIComponent(name)}/messages?${q}`, pageSignal());
    next = page.next;
    out.start = page.start;
    out.columns = page.columns;
    render(page.start, page.end, page.rows, page.columns);
  }
  // A live tail: rows pushed by the server as they are committed.
  function follow() {
    tailing = new AbortController();
    const signal = tailing.signal;
    pageSignal().addEventListener("abort", () => tailing && tailing.abort());
    const q = new URLSearchParams({ partition: partition.value, offset: next });
    events(`/v1/streams/${encodeURIComponent(name)}/tail?${q}`, (kind, data) => {
      if (kind === "error") throw new Error(data.error);
      if (kind !== "rows") return;
      next = data.next;
      const rows = [...(out.rows || []), ...data.rows];
      const kept = rows.slice(-500);
      out.start = next - kept.length;
      render(out.start, next, kept, out.columns);
    }, signal).catch((e) => {
      if (!signal.aborted) out.replaceChildren(errorBox(e));
    });
  }
  async function go() {
    try {
      if (tailing) { tailing.abort(); tailing = null; }
      const params = from.value !== "" ? { offset: from.value }
        : time.value ? { time_us: String(new Date(time.value).getTime() * 1000) } : {};
      await load(params);
      if (tail.checked) follow();
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  }
  go();
  return el("div", {},
    el("div", { class: "row" }, partition, "from offset", from, "or time", time,
      el("label", {}, tail, " live tail"), el("button", { id: "browse", onclick: go }, "Show")),
    out, detail);
}
