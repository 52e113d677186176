// The simulator: start simulated producers (generated rows at a rate) and
// consumers (members of a group, at a rate or as fast as they can) inside
// the server, watch the streams' partitions fill and the groups' lag grow
// and shrink, stop one client (its group rebalances) or all of them.
import { get, post, el, table, number, errorBox, headers, watch } from "./lib.js";
import { groupLagCharts } from "./chart.js";

async function del(path) {
  const r = await fetch(path, { method: "DELETE", headers: headers() });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error(body.error || r.statusText);
    e.status = r.status;
    throw e;
  }
  return body;
}

function field(label, input) {
  return el("label", {}, `${label} `, input);
}

export async function simulator() {
  const problem = el("div", { id: "sim-problem" });
  const streamNames = el("datalist", { id: "sim-streams" });
  get("/v1/streams").then(({ streams }) => {
    streamNames.replaceChildren(...streams.map((s) => el("option", { value: s.name })));
  }).catch(() => {});

  const pStream = el("input", { id: "sim-p-stream", list: "sim-streams", required: true, placeholder: "stream" });
  const pCount = el("input", { id: "sim-p-count", type: "number", min: 1, max: 16, value: 1 });
  const pRate = el("input", { id: "sim-p-rate", type: "number", min: 1, max: 100000, value: 100 });
  const pRows = el("input", { id: "sim-p-rows", type: "number", min: 1, placeholder: "no limit" });
  const producers = el("form", {
    class: "row",
    onsubmit: async (ev) => {
      ev.preventDefault();
      const body = { stream: pStream.value, count: Number(pCount.value), rate: Number(pRate.value) };
      if (pRows.value) body.rows = Number(pRows.value);
      try {
        await post("/v1/simulator/producers", body);
        problem.replaceChildren();
        refresh();
      } catch (e) {
        problem.replaceChildren(errorBox(e));
      }
    },
  }, field("Stream", pStream), field("Producers", pCount), field("Rows/s each", pRate),
  field("Rows each", pRows), el("button", { type: "submit", id: "sim-start-producers" }, "Start producers"));

  const cStream = el("input", { id: "sim-c-stream", list: "sim-streams", required: true, placeholder: "stream" });
  const cGroup = el("input", { id: "sim-c-group", required: true, placeholder: "group" });
  const cCount = el("input", { id: "sim-c-count", type: "number", min: 1, max: 16, value: 1 });
  const cRate = el("input", { id: "sim-c-rate", type: "number", min: 1, placeholder: "as fast as it can" });
  const cFrom = el("select", { id: "sim-c-from" }, el("option", { value: "earliest" }, "earliest"),
    el("option", { value: "latest" }, "latest"));
  const consumers = el("form", {
    class: "row",
    onsubmit: async (ev) => {
      ev.preventDefault();
      const body = { stream: cStream.value, group: cGroup.value, count: Number(cCount.value), from: cFrom.value };
      if (cRate.value) body.rate = Number(cRate.value);
      try {
        await post("/v1/simulator/consumers", body);
        problem.replaceChildren();
        refresh();
      } catch (e) {
        problem.replaceChildren(errorBox(e));
      }
    },
  }, field("Stream", cStream), field("Group", cGroup), field("Consumers", cCount),
  field("Rows/s each", cRate), field("New group from", cFrom),
  el("button", { type: "submit", id: "sim-start-consumers" }, "Start consumers"));

  const stopAll = el("button", {
    id: "sim-stop-all",
    onclick: async () => {
      if (!confirm("Stop every simulated producer and consumer?")) return;
      try {
        await del("/v1/simulator");
        refresh();
      } catch (e) {
        problem.replaceChildren(errorBox(e));
      }
    },
  }, "Stop all");

  const clients = el("div", { id: "sim-clients" });
  const partitions = el("div", { id: "sim-partitions" });
  const lags = el("div", { id: "sim-lag" });
  const charts = groupLagCharts();
  const lastRows = new Map();
  let lastAt = 0;

  async function stop(id) {
    try {
      await del(`/v1/simulator/clients/${encodeURIComponent(id)}`);
      refresh();
    } catch (e) {
      problem.replaceChildren(errorBox(e));
    }
  }

  // The clients, the streams and the groups, each pushed by the server
  // every second; refresh() after a change of ours.
  let list = [];
  let all = null;
  let rows = null;
  function renderClients() {
    const now = performance.now();
    const seconds = lastAt ? (now - lastAt) / 1000 : 0;
    lastAt = now;
    clients.replaceChildren(list.length
      ? table(["Client", "Kind", "Stream", "Group", "Rate (rows/s)", "Rows", "Rows/s now", "Partitions", "Generation", "State"],
        list.map((c) => {
          const before = lastRows.get(c.id);
          lastRows.set(c.id, c.rows);
          const now = before === undefined || !seconds ? "" : number(Math.round((c.rows - before) / seconds));
          return [c.id, c.kind, c.stream, c.group, c.rate === null ? "unlimited" : number(c.rate), number(c.rows), now,
            c.kind === "consumer" ? c.partitions.join(", ") : "", c.generation,
            el("span", { class: c.error ? "error" : "" }, c.error ? `${c.state}: ${c.error}` : c.state),
            el("button", { class: "sim-stop", "data-client": c.id, onclick: () => stop(c.id) }, "Stop")];
        }))
      : el("p", { class: "muted" }, "No simulated clients run."));
  }
  // The streams the clients write and read, and the groups they are in.
  function renderLag() {
    const streams = new Set(list.map((c) => c.stream));
    const groups = new Set(list.filter((c) => c.group).map((c) => c.group));
    if (!streams.size) {
      partitions.replaceChildren();
      lags.replaceChildren();
      return;
    }
    if (all) {
      partitions.replaceChildren(table(["Stream", "Partition", "End offset"],
        all.filter((s) => streams.has(s.name))
          .flatMap((s) => s.partition_ends.map((end, p) => [s.name, p, number(end)]))));
    }
    if (rows) {
      const mine = rows.filter((r) => groups.has(r.group));
      lags.replaceChildren(table(["Group", "Stream", "Partition", "Committed", "End", "Lag", "Member"],
        mine.map((r) => [r.group, r.stream, r.partition, number(r.committed), number(r.high_watermark), number(r.lag), r.member])));
      charts.update(mine);
    }
  }
  async function refresh() {
    try {
      ({ clients: list } = await get("/v1/simulator"));
      renderClients();
      renderLag();
    } catch (e) {
      problem.replaceChildren(errorBox(e));
    }
  }
  watch("/v1/simulator", 1000, (a) => {
    list = a.clients;
    renderClients();
    renderLag();
  }, (e) => problem.replaceChildren(errorBox(e)));
  // Partitions and lag need pg_monitor; the clients above do not.
  watch("/v1/streams", 1000, (a) => { all = a.streams; renderLag(); }, (e) => partitions.replaceChildren(errorBox(e)));
  watch("/v1/groups", 1000, (a) => { rows = a.consumer_groups; renderLag(); }, (e) => lags.replaceChildren(errorBox(e)));

  return [
    el("h1", {}, "Simulator"),
    el("p", { class: "muted" }, "Producers and consumers run inside the server, as ordinary clients of the log: "
      + "their rows, groups and offsets are what every other page shows. A restart ends them."),
    streamNames,
    el("h2", {}, "Producers"), producers,
    el("h2", {}, "Consumers"), consumers,
    problem,
    el("h2", {}, "Running"), el("div", { class: "row" }, stopAll), clients,
    el("h2", {}, "Groups' lag"), charts.node, lags,
    el("h2", {}, "Partitions"), partitions,
  ];
}
