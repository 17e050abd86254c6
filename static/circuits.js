// saescope circuits: the target picker of the run form, and the drawing of a saved attribution graph.
// The graph page's data is the JSON in #graph-data. A residual-SAE graph's thresholds prune it here by the stored
// cumulative shares (the same rule as AttributionGraph.pruned); a replacement graph's pruning depends on the whole
// adjacency, so the server prunes the stored graph again (/api/graphs/ID/view; the model does not rerun).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

// --- the run form: a next-token button fills in the target ------------------------------------------------
document.addEventListener("click", (event) => {
  const pick = event.target.closest(".pick-target");
  if (!pick) return;
  const box = document.getElementById("circuit-target");
  box.value = pick.dataset.token;
  box.focus();
});

// --- the graph page -----------------------------------------------------------------------------------
const dataEl = document.getElementById("graph-data");
if (dataEl) initGraph(JSON.parse(dataEl.textContent));

function initGraph(graph) {
  const replacement = graph.method === "replacement";
  const byId = new Map(graph.nodes.map((n) => [n.node_id, n]));
  const state = readHash(graph);
  const nodeSlider = document.getElementById("node-threshold");
  const edgeSlider = document.getElementById("edge-threshold");
  nodeSlider.value = state.node;
  edgeSlider.value = state.edge;

  const showThresholds = () => {
    state.node = Number(nodeSlider.value);
    state.edge = Number(edgeSlider.value);
    document.getElementById("node-threshold-out").textContent = state.node.toFixed(2);
    document.getElementById("edge-threshold-out").textContent = state.edge.toFixed(2);
  };
  const redraw = () => {
    showThresholds();
    const shown = replacement ? { nodes: graph.nodes, links: graph.links } : pruned(graph, state.node, state.edge);
    draw(graph, shown, state, byId, redraw);
    tickPinBoxes(state);
    showPins(graph, state, byId);
    writeHash(state);
  };
  // A replacement graph: the server prunes it at the thresholds once a slider is let go; pins stay known.
  let asked = 0;
  const refetch = async () => {
    showThresholds();
    const mine = ++asked;
    const params = new URLSearchParams({ node_threshold: state.node, edge_threshold: state.edge });
    const response = await fetch(`/api/graphs/${graph.id}/view?${params}`, { headers: { Accept: "application/json" } });
    if (!response.ok || mine !== asked) return;
    const view = await response.json();
    Object.assign(graph, view);
    for (const n of view.nodes) byId.set(n.node_id, n);
    document.getElementById("replacement-score").textContent = view.replacement_score.toFixed(3);
    document.getElementById("completeness-score").textContent = view.completeness_score.toFixed(3);
    redraw();
  };
  for (const slider of [nodeSlider, edgeSlider]) {
    slider.addEventListener(replacement ? "change" : "input", replacement ? refetch : redraw);
    if (replacement) slider.addEventListener("input", showThresholds);
  }
  const mode = document.getElementById("pin-mode");
  if (mode) mode.addEventListener("change", () => showPins(graph, state, byId));
  document.getElementById("pin-value").addEventListener("input", () => showPins(graph, state, byId));
  document.querySelectorAll("input.pin").forEach((box) => {
    box.addEventListener("change", () => {
      togglePin(state, box.dataset.node, box.checked);
      redraw();
    });
  });
  window.addEventListener("resize", redraw);
  const asLinked = replacement && (state.node !== graph.node_threshold || state.edge !== graph.edge_threshold);
  if (asLinked) refetch();
  else redraw();
  // A graph wider than its box (a long prompt, a phone) opens on its right end: the measured token and the metric.
  const wrap = document.getElementById("graph-wrap");
  wrap.scrollLeft = wrap.scrollWidth;
}

// The view's state lives in the URL's fragment, so a link to the page reopens it as it was.
function readHash(graph) {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const number = (key, fallback) => {
    const value = Number(params.get(key));
    return params.has(key) && value > 0 && value <= 1 ? value : fallback;
  };
  const known = new Set(graph.nodes.filter((n) => n.kind === "feature").map((n) => n.node_id));
  const pins = (params.get("pins") || "").split(",").filter((id) => known.has(id));
  return { node: number("n", graph.node_threshold), edge: number("e", graph.edge_threshold), pins: new Set(pins) };
}

function writeHash(state) {
  const params = new URLSearchParams({ n: state.node.toFixed(2), e: state.edge.toFixed(2) });
  if (state.pins.size) params.set("pins", [...state.pins].join(","));
  history.replaceState(null, "", `#${params}`);
}

function togglePin(state, id, on) {
  if (on) state.pins.add(id);
  else state.pins.delete(id);
}

// The table's boxes follow the pins however they were made: a shift-click, or a permalink's fragment.
function tickPinBoxes(state) {
  document.querySelectorAll("input.pin").forEach((box) => { box.checked = state.pins.has(box.dataset.node); });
}

// Nodes under the node threshold and edges under the edge threshold; features and errors left without an
// edge in or out are dropped until none is (embeddings and the metric always stay).
function pruned(graph, nodeCut, edgeCut) {
  const fixed = (n) => n.kind === "embedding" || n.kind === "metric";
  let keep = new Set(graph.nodes.filter((n) => fixed(n) || n.share < nodeCut).map((n) => n.node_id));
  let links = graph.links.filter((l) => l.share < edgeCut);
  for (;;) {
    links = links.filter((l) => keep.has(l.source) && keep.has(l.target));
    const out = new Set(links.map((l) => l.source));
    const into = new Set(links.map((l) => l.target));
    const still = new Set(graph.nodes.filter((n) => keep.has(n.node_id) && (fixed(n) || (out.has(n.node_id) && into.has(n.node_id))))
      .map((n) => n.node_id));
    if (still.size === keep.size) return { nodes: graph.nodes.filter((n) => keep.has(n.node_id)), links };
    keep = still;
  }
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

// Rows: embeddings at the bottom, one per site, the metric on top. Columns: token positions up to the one
// measured, each as wide as its fullest cell.
function layout(graph, nodes) {
  const rows = graph.sites.length + 2;
  const rowOf = (n) => (n.kind === "metric" ? rows - 1 : n.layer + 1);
  const cells = new Map();
  for (const n of nodes) {
    const key = `${rowOf(n)}:${n.pos}`;
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(n);
  }
  for (const list of cells.values()) list.sort((a, b) => Math.abs(b.effect) - Math.abs(a.effect));
  const slot = 16;
  const widths = [];
  for (let pos = 0; pos <= graph.position; pos++) {
    let most = 1;
    for (let row = 0; row < rows; row++) most = Math.max(most, (cells.get(`${row}:${pos}`) || []).length);
    widths.push(Math.max(34, most * slot + 8));
  }
  const left = 130;
  const starts = [];
  widths.reduce((x, w) => (starts.push(x), x + w), left);
  const rowHeight = rows > 14 ? 44 : 78;
  const top = 24;
  const place = new Map();
  for (const [key, list] of cells) {
    const [row, pos] = key.split(":").map(Number);
    const centre = starts[pos] + widths[pos] / 2;
    list.forEach((n, i) => {
      place.set(n.node_id, { x: centre + (i - (list.length - 1) / 2) * slot, y: top + (rows - 1 - row) * rowHeight });
    });
  }
  const width = starts[starts.length - 1] + widths[widths.length - 1] + 10;
  return { place, rows, rowHeight, top, left, starts, widths, width, height: top + rows * rowHeight + 60 };
}

function draw(graph, shown, state, byId, redraw) {
  const svg = document.getElementById("graph");
  svg.replaceChildren();
  const box = layout(graph, shown.nodes);
  svg.setAttribute("width", box.width);
  svg.setAttribute("height", box.height);
  svg.setAttribute("viewBox", `0 0 ${box.width} ${box.height}`);
  const rowNames = ["embeddings", ...graph.sites, graph.metric];
  rowNames.forEach((name, row) => {
    const y = box.top + (box.rows - 1 - row) * box.rowHeight;
    el("line", { x1: box.left - 6, x2: box.width, y1: y, y2: y, class: "row-line" }, svg);
    el("text", { x: 4, y: y + 4, class: "row-name" }, svg).textContent = name;
  });
  graph.tokens.slice(0, graph.position + 1).forEach((token, pos) => {
    const x = box.starts[pos] + box.widths[pos] / 2;
    const y = box.top + (box.rows - 1) * box.rowHeight + 18;
    const label = el("text", { x, y, class: "token", transform: `rotate(35 ${x} ${y})` }, svg);
    label.textContent = JSON.stringify(token).slice(1, -1).slice(0, 12);
  });
  const maxWeight = Math.max(1e-12, ...shown.links.map((l) => Math.abs(l.weight)));
  const edges = el("g", { class: "edges" }, svg);
  for (const link of shown.links) {
    const a = box.place.get(link.source);
    const b = box.place.get(link.target);
    const mid = (a.y + b.y) / 2;
    el("path", {
      d: `M${a.x},${a.y} C${a.x},${mid} ${b.x},${mid} ${b.x},${b.y}`,
      class: `edge ${link.weight > 0 ? "up" : "down"}`,
      "stroke-width": (0.4 + 5 * Math.abs(link.weight) / maxWeight).toFixed(2),
      "data-source": link.source, "data-target": link.target,
    }, edges);
  }
  const sized = shown.nodes.filter((n) => n.kind !== "metric");
  const maxEffect = Math.max(1e-12, ...sized.map((n) => Math.abs(n.effect)));
  for (const n of shown.nodes) drawNode(svg, n, box.place.get(n.node_id), maxEffect, state, redraw);
  document.getElementById("graph-count").textContent =
    `${shown.nodes.filter((n) => n.kind === "feature" || n.kind === "error").length} nodes, ${shown.links.length} edges shown`;
}

function drawNode(svg, n, at, maxEffect, state, redraw) {
  const r = n.kind === "metric" ? 9 : 2.5 + 7 * Math.sqrt(Math.abs(n.effect) / maxEffect);
  const sign = n.kind === "metric" ? "metric" : n.effect > 0 ? "up" : "down";
  const classes = `node ${n.kind} ${sign}${state.pins.has(n.node_id) ? " pinned" : ""}`;
  const shape = n.kind === "feature" || n.kind === "metric"
    ? el("circle", { cx: at.x, cy: at.y, r, class: classes }, svg)
    : el("rect", { x: at.x - r, y: at.y - r, width: 2 * r, height: 2 * r, class: classes }, svg);
  shape.dataset.node = n.node_id;
  shape.addEventListener("mouseenter", (event) => showTip(n, event));
  shape.addEventListener("mousemove", (event) => moveTip(event));
  shape.addEventListener("mouseleave", () => { document.getElementById("graph-tip").hidden = true; });
  if (n.kind !== "feature") return;
  shape.addEventListener("click", (event) => {
    if (!event.shiftKey) {
      window.location.href = n.href;
      return;
    }
    togglePin(state, n.node_id, !state.pins.has(n.node_id));
    redraw();
  });
}

function fmt(value) {
  return value === null || value === undefined ? "not verified" : (value >= 0 ? "+" : "") + value.toFixed(4);
}

function showTip(n, event) {
  const tip = document.getElementById("graph-tip");
  const graph = JSON.parse(document.getElementById("graph-data").textContent);
  const where = n.kind === "embedding" || n.kind === "metric" ? "" : ` at ${graph.sites[n.layer]}`;
  const lines = graph.method === "replacement" ? replacementTip(graph, n, where) : n.kind === "metric"
    ? [`${graph.metric} of ${JSON.stringify(graph.target)} = ${n.effect.toFixed(4)}`]
    : [
      `${n.kind === "feature" ? `feature #${n.feature}` : n.kind}${where}, position ${n.pos} ${JSON.stringify(n.token)}`,
      ...(n.label ? [`label: ${n.label}`] : []),
      ...(n.top ? [`top tokens: ${n.top.slice(0, 80)}`] : []),
      `effect ${fmt(n.effect)}, exact ${fmt(n.exact)}; activation ${n.activation.toFixed(3)}`,
    ];
  tip.replaceChildren(...lines.map((line) => Object.assign(document.createElement("div"), { textContent: line })));
  tip.hidden = false;
  moveTip(event);
}

function replacementTip(graph, n, where) {
  if (n.kind === "metric") return [`output ${JSON.stringify(n.output)}, probability ${n.probability.toFixed(3)}`];
  const what = n.kind === "feature" ? `feature #${n.feature}` : n.kind === "error" ? "MLP error" : "embedding";
  return [
    `${what}${where}, position ${n.pos} ${JSON.stringify(n.token)}`,
    ...(n.label ? [`label: ${n.label}`] : []),
    ...(n.top ? [`top tokens: ${n.top.slice(0, 80)}`] : []),
    `influence ${n.effect.toFixed(4)}${n.activation === null ? "" : `; activation ${n.activation.toFixed(3)}`}`,
  ];
}

function moveTip(event) {
  const tip = document.getElementById("graph-tip");
  const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  tip.style.left = `${Math.max(4, x) + window.scrollX}px`;
  tip.style.top = `${event.clientY + 14 + window.scrollY}px`;
}

// Pinned features, and per SAE a link that opens the steering playground with them as ablations or clamps.
function showPins(graph, state, byId) {
  const pins = [...state.pins].map((id) => byId.get(id)).filter(Boolean);
  const list = document.getElementById("pins");
  const links = document.getElementById("steer-links");
  const rerun = document.getElementById("pin-run");
  if (rerun) {
    document.getElementById("pin-ids").value = pins.map((n) => n.node_id).join(",");
    rerun.disabled = !pins.length;
  }
  if (!pins.length) {
    list.replaceChildren(Object.assign(document.createElement("p"), { className: "empty", textContent: "Nothing pinned yet." }));
    links.replaceChildren();
    return;
  }
  const ul = document.createElement("ul");
  ul.className = "plain";
  for (const n of pins) {
    const li = document.createElement("li");
    const a = Object.assign(document.createElement("a"), { href: n.href, textContent: `#${n.feature}` });
    const size = graph.method === "replacement" ? `influence ${n.effect.toFixed(4)}` : `effect ${fmt(n.effect)}`;
    li.append(a, ` ${graph.sites[n.layer]}, position ${n.pos} ${JSON.stringify(n.token)} ${n.label || ""} (${size})`);
    ul.appendChild(li);
  }
  list.replaceChildren(ul);
  const mode = document.getElementById("pin-mode")?.value || "clamp";
  const value = Number(document.getElementById("pin-value").value) || 0;
  const bySae = new Map();
  for (const n of pins) {
    if (!bySae.has(n.sae_id)) bySae.set(n.sae_id, new Set());
    bySae.get(n.sae_id).add(n.feature);
  }
  links.replaceChildren(...[...bySae].map(([sae, features]) => {
    const params = new URLSearchParams({ prompt: graph.prompt, raw: "1" });
    for (const f of features) params.append("pin", mode === "ablate" ? `${f}:ablate` : `${f}:clamp:${value}`);
    const site = graph.sites[graph.sae_ids.indexOf(sae)];
    return Object.assign(document.createElement("a"), {
      href: `/saes/${sae}/steer?${params}`, className: "steer-link", textContent: `open in the steering playground (${site})`,
    });
  }));
}
