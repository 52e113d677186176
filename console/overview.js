// Overview: agents, ingest and read throughput, object-store requests and their
// cost at S3 Standard list prices, open connections per door.
import { el, table, number, errorBox, watch } from "./lib.js";
import { lineChart, metric, byLabel } from "./chart.js";

// S3 Standard list prices (us-east-1), dollars per request.
const PUT_PRICE = 0.005 / 1000;
const GET_PRICE = 0.0004 / 1000;

export async function overview() {
  const ingest = lineChart({ title: "Ingest", unit: " rows/s" });
  const reads = lineChart({ title: "Reads (queries, views, consumers)", unit: " rows/s" });
  const requests = lineChart({ title: "Object-store requests", unit: "/s" });
  const agentsBox = el("div");
  const cards = el("div", { class: "cards" });
  const connections = el("div");
  const problem = el("div");
  let previous = null;
  let agents = [];
  const failed = (e) => problem.replaceChildren(errorBox(e));
  // From the latest agents and metrics, whichever came last.
  function renderCards() {
    if (!previous) return;
    const cost = previous.puts * PUT_PRICE + previous.gets * GET_PRICE;
    cards.replaceChildren(
      card("Agents live", agents.filter((a) => a.state === "live").length),
      card("Rows appended", number(previous.rows)),
      card("Bytes appended", number(previous.bytes)),
      card("Object-store PUT / GET", `${number(previous.puts)} / ${number(previous.gets)}`),
      card("Request cost so far", `$${cost.toFixed(4)}`),
    );
  }
  // Both pushed by the server every 2 s.
  watch("/v1/agents", 2000, (a) => {
    agents = a.agents;
    agentsBox.replaceChildren(table(
      ["Agent", "State", "Addresses", "Version", "Started"],
      agents.map((a) => [a.id + (a.this ? " (this)" : ""), a.state,
        Object.entries(a.addresses || {}).map(([k, v]) => `${k} ${v}`).join(", "), a.version,
        new Date(a.started_at_us / 1000).toLocaleString()]),
    ));
    renderCards();
  }, failed);
  watch("/metrics", 2000, (text) => {
    const sample = {
      at: performance.now(),
      rows: metric(text, "streamhouse_appended_rows_total"),
      read: metric(text, "streamhouse_read_rows_total"),
      bytes: metric(text, "streamhouse_appended_bytes_total"),
      puts: metric(text, "streamhouse_object_store_requests_total", 'op="put"'),
      gets: metric(text, "streamhouse_object_store_requests_total", 'op="get"'),
    };
    if (previous) {
      const secs = (sample.at - previous.at) / 1000;
      ingest.push((sample.rows - previous.rows) / secs);
      reads.push((sample.read - previous.read) / secs);
      requests.push((sample.puts + sample.gets - previous.puts - previous.gets) / secs);
    }
    previous = sample;
    renderCards();
    const open = byLabel(text, "streamhouse_connections", "door");
    connections.replaceChildren(table(["Door", "Open connections"],
      Object.entries(open).map(([door, n]) => [door, n])));
    problem.replaceChildren();
  }, failed);
  return [
    el("h1", {}, "Overview"),
    problem,
    cards,
    el("div", { class: "row" }, ingest.node, reads.node, requests.node),
    el("h2", {}, "Agents"), agentsBox,
    el("h2", {}, "Connections"), connections,
  ];
}

function card(label, value) {
  return el("div", { class: "card" }, el("div", { class: "value" }, String(value)), el("div", { class: "label" }, label));
}
