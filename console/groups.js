// Consumer groups: committed offset and lag per partition, with a chart
// of each group's total lag; reset a group's offsets on a stream (to the
// earliest, the latest, or a time) after a confirmation.
import { el, table, number, errorBox, post, watch } from "./lib.js";
import { groupLagCharts } from "./chart.js";

export async function groups() {
  const list = el("div");
  const charts = groupLagCharts();
  // Pushed by the server every 2 s.
  watch("/v1/groups", 2000, ({ consumer_groups: rows }) => {
    charts.update(rows);
    list.replaceChildren(table(["Group", "Stream", "Partition", "Committed", "End", "Lag", "Member", "Generation"],
      rows.map((r) => [r.group, r.stream, r.partition, number(r.committed), number(r.high_watermark), number(r.lag), r.member, r.generation])));
  }, (e) => list.replaceChildren(errorBox(e)));
  const problem = el("div");
  const group = el("input", { id: "reset-group", placeholder: "group" });
  const stream = el("input", { id: "reset-stream", placeholder: "stream" });
  const to = el("select", { id: "reset-to" }, el("option", { value: "earliest" }, "earliest"),
    el("option", { value: "latest" }, "latest"), el("option", { value: "time" }, "time"));
  const time = el("input", { id: "reset-time", type: "datetime-local" });
  const reset = el("form", {
    class: "row",
    onsubmit: async (ev) => {
      ev.preventDefault();
      const target = to.value === "time" ? new Date(time.value).toISOString() : to.value;
      if (!confirm(`Reset group ${group.value} on ${stream.value} to ${target}?`)) return;
      try {
        const r = await post(`/v1/groups/${encodeURIComponent(group.value)}/reset`, { stream: stream.value, to: target });
        problem.replaceChildren(el("p", { class: "ok", id: "reset-done" },
          `Reset: ${r.offsets.map((o) => `partition ${o.partition} at ${o.offset}`).join(", ")}`));
      } catch (e) {
        problem.replaceChildren(errorBox(e));
      }
    },
  }, "Reset offsets of", group, "on", stream, "to", to, time, el("button", { type: "submit", id: "reset" }, "Reset"));
  return [el("h1", {}, "Consumer groups"), charts.node, list, el("h2", {}, "Reset"), reset, problem];
}
