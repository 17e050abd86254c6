// saescope: the feature map on a canvas. Points come from /api/saes/{id}/map; no library, no build step.
"use strict";

(function () {
  const root = document.getElementById("map");
  if (!root) return;
  const sae = root.dataset.sae;
  const canvas = document.getElementById("map-canvas");
  const ctx = canvas.getContext("2d");
  const tip = document.getElementById("map-tip");
  const colourBy = document.getElementById("map-colour");
  const search = document.getElementById("map-search");
  const found = document.getElementById("map-found");
  const selectMode = document.getElementById("map-select-mode");
  const panel = document.getElementById("map-selection");
  const HIT = 6; // pixels within which the pointer is on a point

  let pts = []; // {i, x, y, c, d, label, top, text}
  let view = { cx: 0, cy: 0, k: 1 };
  let home = view;
  let colours = []; // [fillStyle, [point index...]] groups, rebuilt when the colouring changes
  let matches = new Set();
  const selected = new Set();
  let focus = null;
  let box = null; // the selection rectangle being drawn, in canvas pixels

  function size() {
    const ratio = window.devicePixelRatio || 1;
    const rect = canvas.getBoundingClientRect();
    canvas.width = Math.round(rect.width * ratio);
    canvas.height = Math.round(rect.height * ratio);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return rect;
  }

  function toScreen(p, rect) {
    return [(p.x - view.cx) * view.k + rect.width / 2, rect.height / 2 - (p.y - view.cy) * view.k];
  }

  function fit() {
    const rect = canvas.getBoundingClientRect();
    let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
    for (const p of pts) { x0 = Math.min(x0, p.x); x1 = Math.max(x1, p.x); y0 = Math.min(y0, p.y); y1 = Math.max(y1, p.y); }
    const k = 0.92 * Math.min(rect.width / Math.max(x1 - x0, 1e-6), rect.height / Math.max(y1 - y0, 1e-6));
    home = view = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, k: k };
  }

  function colourOf(p, mode, lo, hi) {
    if (mode === "label") return p.label ? "#1b7a1b" : "#c4c4c4";
    if (mode === "density") {
      const t = hi > lo ? (Math.log10(p.d) - lo) / (hi - lo) : 0.5;
      return `hsl(${Math.round(240 - 240 * t)}, 80%, 45%)`;
    }
    return p.c === null ? "#c4c4c4" : `hsl(${Math.round((p.c * 137.508) % 360)}, 65%, 48%)`;
  }

  function recolour() {
    const mode = colourBy.value;
    const logs = pts.map((p) => Math.log10(p.d));
    const lo = Math.min(...logs), hi = Math.max(...logs);
    const groups = new Map();
    pts.forEach((p, n) => {
      const colour = colourOf(p, mode, lo, hi);
      if (!groups.has(colour)) groups.set(colour, []);
      groups.get(colour).push(n);
    });
    colours = [...groups.entries()];
    draw();
  }

  function draw() {
    const rect = size();
    ctx.clearRect(0, 0, rect.width, rect.height);
    const r = view.k > home.k * 4 ? 2.5 : 1.5;
    const dim = matches.size > 0;
    ctx.globalAlpha = dim ? 0.25 : 0.85;
    for (const [colour, members] of colours) {
      ctx.fillStyle = colour;
      for (const n of members) {
        const [x, y] = toScreen(pts[n], rect);
        if (x < -r || y < -r || x > rect.width + r || y > rect.height + r) continue;
        ctx.fillRect(x - r, y - r, 2 * r, 2 * r);
      }
    }
    ctx.globalAlpha = 1;
    ring(matches, "#c24e00", r + 2, rect);
    ring(selected, "#111", r + 1.5, rect);
    if (focus !== null) ring(new Set([focus]), "#b00020", 7, rect);
    if (box) {
      ctx.strokeStyle = "#0b57d0";
      ctx.setLineDash([4, 3]);
      ctx.strokeRect(box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0);
      ctx.setLineDash([]);
    }
  }

  function ring(set, colour, r, rect) {
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    for (const n of set) {
      const [x, y] = toScreen(pts[n], rect);
      ctx.moveTo(x + r, y);
      ctx.arc(x, y, r, 0, 2 * Math.PI);
    }
    ctx.stroke();
  }

  function nearest(mx, my) {
    const rect = canvas.getBoundingClientRect();
    let best = -1, bestD = HIT * HIT;
    pts.forEach((p, n) => {
      const [x, y] = toScreen(p, rect);
      const d = (x - mx) ** 2 + (y - my) ** 2;
      if (d <= bestD) { best = n; bestD = d; }
    });
    return best;
  }

  function showTip(n, mx, my) {
    if (n < 0) { tip.hidden = true; canvas.style.cursor = ""; return; }
    const p = pts[n];
    tip.replaceChildren();
    const head = document.createElement("strong");
    head.textContent = `Feature ${p.i}` + (p.c === null ? "" : ` · cluster ${p.c}`);
    const label = document.createElement("div");
    label.textContent = p.label || "(no label)";
    label.className = p.label ? "" : "muted";
    const top = document.createElement("div");
    top.className = "mono";
    top.textContent = p.top.length ? p.top.join("  ") : "(no top tokens)";
    tip.append(head, label, top);
    tip.dataset.feature = p.i;
    tip.hidden = false;
    const rect = canvas.getBoundingClientRect();
    tip.style.left = `${Math.min(mx + 12, rect.width - 220)}px`;
    tip.style.top = `${my + 12}px`;
    canvas.style.cursor = "pointer";
  }

  function highlight() {
    const q = search.value.trim().toLowerCase();
    matches = new Set();
    if (q) pts.forEach((p, n) => { if (p.text.includes(q)) matches.add(n); });
    found.textContent = q ? `${matches.size} match${matches.size === 1 ? "" : "es"}` : "";
    draw();
  }

  function selectBox(b) {
    const rect = canvas.getBoundingClientRect();
    const [x0, x1] = [Math.min(b.x0, b.x1), Math.max(b.x0, b.x1)];
    const [y0, y1] = [Math.min(b.y0, b.y1), Math.max(b.y0, b.y1)];
    pts.forEach((p, n) => {
      const [x, y] = toScreen(p, rect);
      if (x >= x0 && x <= x1 && y >= y0 && y <= y1) selected.add(n);
    });
    showSelection();
  }

  function showSelection() {
    panel.hidden = selected.size === 0;
    document.getElementById("map-selected-count").textContent = selected.size;
    const list = document.getElementById("map-selected");
    list.replaceChildren();
    for (const n of [...selected].slice(0, 200)) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `/saes/${sae}/features/${pts[n].i}`;
      a.textContent = pts[n].i;
      li.append(a, " ", pts[n].label || "");
      list.append(li);
    }
    draw();
  }

  // Pointer: drag pans, shift-drag (or Select mode) draws a selection box, a click without a drag opens a feature.
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    drag = { x: e.offsetX, y: e.offsetY, view: { ...view }, moved: false,
             selecting: e.shiftKey || selectMode.getAttribute("aria-pressed") === "true" };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) { showTip(nearest(e.offsetX, e.offsetY), e.offsetX, e.offsetY); return; }
    const dx = e.offsetX - drag.x, dy = e.offsetY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    if (drag.selecting) box = { x0: drag.x, y0: drag.y, x1: e.offsetX, y1: e.offsetY };
    else view = { cx: drag.view.cx - dx / view.k, cy: drag.view.cy + dy / view.k, k: view.k };
    tip.hidden = true;
    draw();
  });
  canvas.addEventListener("pointerup", (e) => {
    const was = drag;
    drag = null;
    if (was && was.selecting && box) { selectBox(box); box = null; draw(); return; }
    if (was && !was.moved) {
      const n = nearest(e.offsetX, e.offsetY);
      if (n >= 0) window.location.href = `/saes/${sae}/features/${pts[n].i}`;
    }
  });
  canvas.addEventListener("pointerleave", () => { tip.hidden = true; });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const rect = canvas.getBoundingClientRect();
    const factor = Math.exp(-e.deltaY * 0.0015);
    const wx = view.cx + (e.offsetX - rect.width / 2) / view.k;
    const wy = view.cy - (e.offsetY - rect.height / 2) / view.k;
    const k = Math.min(Math.max(view.k * factor, home.k * 0.5), home.k * 200);
    view = { cx: wx - (e.offsetX - rect.width / 2) / k, cy: wy + (e.offsetY - rect.height / 2) / k, k: k };
    draw();
  }, { passive: false });

  colourBy.addEventListener("change", recolour);
  search.addEventListener("input", highlight);
  selectMode.addEventListener("click", () => {
    const on = selectMode.getAttribute("aria-pressed") !== "true";
    selectMode.setAttribute("aria-pressed", on ? "true" : "false");
  });
  document.getElementById("map-reset").addEventListener("click", () => { view = home; draw(); });
  document.getElementById("map-clear").addEventListener("click", () => { selected.clear(); showSelection(); });
  window.addEventListener("resize", draw);

  const form = document.getElementById("map-add");
  if (form) form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = document.getElementById("map-added");
    const data = new FormData(form);
    if (!data.get("list_id")) data.delete("list_id");
    data.set("features", [...selected].map((n) => pts[n].i).join(","));
    const token = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || "";
    const response = await fetch(`/saes/${sae}/map/selection`, { method: "POST", body: data, headers: { "X-CSRF-Token": token } });
    const body = await response.json().catch(() => ({}));
    out.className = response.ok ? "ok" : "error";
    out.textContent = response.ok ? `Added ${body.added} features to ${body.target}.` : (body.detail || `failed (${response.status})`);
  });

  fetch(`/api/saes/${sae}/map`).then((r) => r.json()).then((data) => {
    pts = data.points.map((p) => ({ i: p.feature_index, x: p.x, y: p.y, c: p.cluster, d: Math.max(p.density, 1e-9),
      label: p.label, top: p.top_tokens, text: `${p.label || ""} ${p.top_tokens.join(" ")}`.toLowerCase() }));
    fit();
    const wanted = root.dataset.focus === "" ? NaN : Number(root.dataset.focus);
    const at = pts.findIndex((p) => p.i === wanted);
    if (at >= 0) { focus = at; view = { cx: pts[at].x, cy: pts[at].y, k: home.k * 4 }; }
    recolour();
    root.dataset.points = pts.length;
    root.dataset.paintedMs = Math.round(performance.now());
  });
})();
