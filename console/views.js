// Views: the list with status and lag, and a view's page: definition,
// lag and freshness charts, checkpoint, its rows' latest changes; drop.
import { sql, el, table, number, errorBox, ident, watch } from "./lib.js";
import { lineChart } from "./chart.js";

export async function views() {
  const list = el("div");
  // Pushed by the server every 2 s.
  watch("/v1/views", 2000, ({ views }) => {
    list.replaceChildren(table(["View", "Status", "Lag (rows)", "Freshness (s)", "Late rows", "State bytes", "Inputs", "Owner agent"],
      views.map((v) => [el("a", { href: `#/views/${encodeURIComponent(v.name)}` }, v.name), v.status, number(v.lag_rows),
        v.freshness_seconds, number(v.late_rows), number(v.state_bytes), v.inputs, v.owner])));
  }, (e) => list.replaceChildren(errorBox(e)));
  return [el("h1", {}, "Views"), list];
}

export async function view(name) {
  const lag = lineChart({ title: "Lag", unit: " rows" });
  const fresh = lineChart({ title: "Freshness", unit: " s" });
  const late = lineChart({ title: "Late rows" });
  lag.node.id = "view-lag-chart";
  const facts = el("div");
  const definition = el("pre", { id: "view-definition" });
  const problem = el("div");
  // Pushed by the server every 2 s.
  watch("/v1/views", 2000, ({ views }) => {
    const v = views.find((x) => x.name === name);
    if (!v) { problem.replaceChildren(errorBox(new Error(`no view ${name}`))); return; }
    lag.push(Number(v.lag_rows));
    fresh.push(Number(v.freshness_seconds));
    late.push(Number(v.late_rows));
    definition.textContent = v.definition;
    facts.replaceChildren(table(["Status", "Owner agent", "Emit", "Last checkpoint", "Restored from", "Watermark", "State bytes"],
      [[v.status, v.owner, v.emit, v.last_checkpoint, v.restored_from, v.watermark, number(v.state_bytes)]]));
    problem.replaceChildren();
  }, (e) => problem.replaceChildren(errorBox(e)));
  const drop = el("button", {
    id: "drop-view",
    onclick: async () => {
      if (!confirm(`Drop view ${name}?`)) return;
      try { await sql(`DROP MATERIALIZED VIEW ${ident(name)}`); location.hash = "#/views"; } catch (e) { problem.replaceChildren(errorBox(e)); }
    },
  }, "Drop view");
  return [el("h1", {}, `View ${name}`), problem, facts, el("div", { class: "row" }, lag.node, fresh.node, late.node),
    el("h2", {}, "Definition"), definition, drop,
    el("p", {}, el("a", { href: `#/streams/${encodeURIComponent(name)}` }, "Changelog and rows"))];
}
