// A live line chart in SVG: push(value) adds a point (the last `points`
// are kept) and redraws.
const NS = "http://www.w3.org/2000/svg";

export function lineChart({ title, width = 420, height = 120, points = 60, unit = "" }) {
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const line = document.createElementNS(NS, "polyline");
  const label = document.createElementNS(NS, "text");
  label.setAttribute("x", 6);
  label.setAttribute("y", 12);
  const max = document.createElementNS(NS, "text");
  max.setAttribute("x", width - 6);
  max.setAttribute("y", 12);
  max.setAttribute("text-anchor", "end");
  svg.append(line, label, max);
  const values = [];
  function draw() {
    const top = Math.max(1, ...values);
    const step = width / Math.max(1, points - 1);
    line.setAttribute("points", values.map((v, i) =>
      `${(i + points - values.length) * step},${height - 4 - (v / top) * (height - 22)}`).join(" "));
    const last = values.length ? values[values.length - 1] : 0;
    label.textContent = `${title}: ${fmt(last)}${unit}`;
    max.textContent = `max ${fmt(top)}${unit}`;
    svg.dataset.points = values.length;
    svg.dataset.last = last;
  }
  draw();
  return {
    node: svg,
    push(v) {
      values.push(Number.isFinite(v) ? v : 0);
      if (values.length > points) values.shift();
      draw();
    },
  };
}

// A chart of each consumer group's total lag, one per group as groups
// appear: update(rows) takes rows of streamhouse.consumer_groups.
export function groupLagCharts() {
  const node = document.createElement("div");
  node.className = "row";
  const charts = new Map();
  return {
    node,
    update(rows) {
      const totals = new Map();
      for (const r of rows) totals.set(r.group, (totals.get(r.group) || 0) + Number(r.lag || 0));
      for (const [group, total] of totals) {
        if (!charts.has(group)) {
          const c = lineChart({ title: `${group} lag`, unit: " rows" });
          c.node.dataset.group = group;
          charts.set(group, c);
          node.append(c.node);
        }
        charts.get(group).push(total);
      }
    },
  };
}

// A small chart of recent values with the last one beside it (a stream's
// rows per second in the streams list).
export function sparkline(values, { width = 90, height = 18, unit = "" } = {}) {
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "sparkline");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const last = values.length ? values[values.length - 1] : 0;
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${fmt(last)}${unit}`);
  const top = Math.max(1, ...values);
  // One value is drawn as a level line.
  const drawn = values.length === 1 ? [last, last] : values;
  const step = width / Math.max(1, drawn.length - 1);
  const line = document.createElementNS(NS, "polyline");
  line.setAttribute("points", drawn.map((v, i) =>
    `${i * step},${height - 2 - (v / top) * (height - 4)}`).join(" "));
  svg.append(line);
  svg.dataset.points = values.length;
  svg.dataset.last = last;
  svg.dataset.max = Math.max(0, ...values);
  const box = document.createElement("span");
  box.className = "spark";
  box.append(svg, ` ${fmt(last)}${unit}`);
  return box;
}

function fmt(v) {
  return v >= 100 ? Math.round(v).toLocaleString("en-US") : Number(v.toFixed(2)).toString();
}

// The sum of a Prometheus metric's samples in an exposition, optionally
// only those whose labels include `match` (e.g. 'op="put"').
export function metric(text, name, match) {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== " " && rest[0] !== "{") continue;
    if (match && !rest.includes(match)) continue;
    const v = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (Number.isFinite(v)) sum += v;
  }
  return sum;
}

// Every value of a labelled gauge, by the value of `label`.
export function byLabel(text, name, label) {
  const out = {};
  const re = new RegExp(`^${name}\\{[^}]*${label}="([^"]*)"[^}]*\\} (\\S+)$`);
  for (const line of text.split("\n")) {
    const m = line.match(re);
    if (m) out[m[1]] = (out[m[1]] || 0) + Number(m[2]);
  }
  return out;
}
