// Consumer groups: committed offset and lag per partition, with a chart
// of each group's total lag.
import { get, el, table, number, every, errorBox } from "./app.js";
import { lineChart } from "./chart.js";

export async function groups() {
  const list = el("div");
  const charts = el("div", { class: "row" });
  const lagCharts = new Map();
  every(2000, async () => {
    try {
      const { consumer_groups: rows } = await get("/v1/groups");
      const totals = new Map();
      for (const r of rows) totals.set(r.group, (totals.get(r.group) || 0) + Number(r.lag || 0));
      for (const [group, total] of totals) {
        if (!lagCharts.has(group)) {
          const c = lineChart({ title: `${group} lag`, unit: " rows" });
          c.node.dataset.group = group;
          lagCharts.set(group, c);
          charts.append(c.node);
        }
        lagCharts.get(group).push(total);
      }
      list.replaceChildren(table(["Group", "Stream", "Partition", "Committed", "End", "Lag", "Member", "Generation"],
        rows.map((r) => [r.group, r.stream, r.partition, number(r.committed), number(r.high_watermark), number(r.lag), r.member, r.generation])));
    } catch (e) {
      list.replaceChildren(errorBox(e));
    }
  });
  return [el("h1", {}, "Consumer groups"), charts, list];
}
