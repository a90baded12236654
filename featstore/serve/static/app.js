// featstore web app: plain JavaScript over the REST API (no build step). Views: #/search, #/item/ID, #/map, #/heads.
"use strict";
const $ = (id) => document.getElementById(id);
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];

async function api(path, options) {
  const r = await fetch(path, options);
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => (k === "class" ? (e.className = v) : e.setAttribute(k, v)));
  children.forEach((c) => e.append(c));
  return e;
}

function card(r) {
  const c = el("div", { class: "card", "data-item": r.item_id, "data-path": r.path });
  if (r.text == null) c.append(el("img", { src: `/items/${r.item_id}/thumbnail`, alt: r.path, loading: "lazy" }));
  else c.append(el("div", { class: "text" }, r.text));
  c.append(el("div", { class: "name", title: r.path }, r.path.split("/").pop()));
  c.append(el("div", {}, [r.label, r.score != null ? r.score.toFixed(3) : null].filter((x) => x != null).join(" · ")));
  c.onclick = () => (location.hash = `#/item/${r.item_id}`);
  return c;
}

function showGrid(grid, results) {
  grid.replaceChildren(...results.map(card));
}

// ---- search ----------------------------------------------------------------------------------------------
async function runSearch(file) {
  const status = $("search-status");
  const k = $("search-k").value || "12", where = $("search-where").value.trim();
  status.className = "status"; status.textContent = "searching…";
  try {
    let out;
    if (file) {
      const form = new FormData();
      form.append("file", file); form.append("k", k);
      if (task()) form.append("task", task());
      if (where) form.append("where", where);
      if ($("search-add").checked) form.append("add", "true");
      out = await api("/search", { method: "POST", body: form });
    } else {
      const text = $("search-text").value.trim();
      if (!text) { status.textContent = "type a text or drop an image"; return; }
      const body = /^#\d+$/.test(text) ? { id: Number(text.slice(1)), k: Number(k) } : { text, k: Number(k) };
      if (where) body.where = where;
      if (task()) body.task = task();
      out = await api("/search", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    }
    status.textContent = `${out.results.length} neighbours of ${out.query} (${out.model})` + (out.note ? ` — ${out.note}` : "")
      + (out.added ? ` — being added to the store (job ${out.added.id})` : "");
    showGrid($("grid"), out.results);
  } catch (e) {
    status.className = "status error"; status.textContent = e.message;
  }
}

function setupSearch() {
  $("search-form").onsubmit = (ev) => { ev.preventDefault(); runSearch(null); };
  $("search-file").onchange = (ev) => ev.target.files[0] && runSearch(ev.target.files[0]);
  const zone = $("drop-zone");
  for (const target of [zone, $("search-text")]) {
    target.ondragover = (ev) => { ev.preventDefault(); zone.classList.add("over"); };
    target.ondragleave = () => zone.classList.remove("over");
    target.ondrop = (ev) => { ev.preventDefault(); zone.classList.remove("over"); if (ev.dataTransfer.files[0]) runSearch(ev.dataTransfer.files[0]); };
  }
}

// ---- item ------------------------------------------------------------------------------------------------
async function showItem(id) {
  const detail = $("item-detail");
  try {
    const item = await api(`/items/${id}`);
    const labels = Object.entries(item.labels).map(([t, l]) => `${t}: ${l}`).join(", ") || "no labels";
    detail.replaceChildren(
      item.thumbnail ? el("img", { src: `${item.thumbnail}?size=512`, alt: item.path, id: "item-image" }) : "",
      el("h2", { id: "item-path" }, item.path),
      el("p", {}, `item ${item.item_id} · ${item.width || "?"}×${item.height || "?"} · ${item.size} bytes · ${labels}`));
    const out = await api("/search", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ id: Number(id), k: 12, task: task() || undefined }) });
    showGrid($("item-grid"), out.results);
  } catch (e) {
    detail.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

// ---- map -------------------------------------------------------------------------------------------------
const map = { data: null };
const task = () => $("task").value;

async function showMap() {
  const status = $("map-status"), select = $("map-color"), method = $("map-method");
  status.className = "status";
  status.textContent = "loading the map (computed once per embedding set, then stored)…";
  try {
    if (select.options.length === 1) {
      for (const h of await api("/heads")) select.append(el("option", { value: `head:${h.name}` }, `head ${h.name}`));
      select.onchange = () => { map.data = null; showMap(); };
      method.onchange = () => { map.data = null; showMap(); };
    }
    if (!map.data) map.data = await api(`/map?method=${method.value}&color=${encodeURIComponent(select.value)}&model=${encodeURIComponent(imageModel)}` + (task() ? `&task=${encodeURIComponent(task())}` : ""));
    drawMap();
    status.textContent = `${map.data.n} points (${map.data.model}, ${method.selectedOptions[0].text}); click one to open it`;
  } catch (e) {
    status.className = "status error"; status.textContent = e.message;
  }
}

function drawMap() {
  const canvas = $("map-canvas"), ctx = canvas.getContext("2d"), d = map.data;
  const w = canvas.width, h = canvas.height, pad = 8, size = d.n > 20000 ? 2 : 4;
  ctx.clearRect(0, 0, w, h);
  const byColour = new Map();                        // one fillStyle change per colour, not per point
  for (let i = 0; i < d.n; i++) {
    const c = d.codes[i];
    if (!byColour.has(c)) byColour.set(c, []);
    byColour.get(c).push(i);
  }
  for (const [c, idx] of byColour) {
    ctx.fillStyle = c < 0 ? "#bbb" : PALETTE[c % PALETTE.length];
    for (const i of idx) ctx.fillRect(pad + d.x[i] * (w - 2 * pad) - size / 2, pad + (1 - d.y[i]) * (h - 2 * pad) - size / 2, size, size);
  }
  $("map-legend").replaceChildren(...d.classes.map((name, c) =>
    el("span", {}, el("i", { style: `background:${PALETTE[c % PALETTE.length]}` }), name)));
  canvas.dataset.points = String(d.n);
  window.featstoreMapDrawnAt = performance.now();
  canvas.onclick = (ev) => {
    const r = canvas.getBoundingClientRect();
    const px = ((ev.clientX - r.left) * w / r.width - pad) / (w - 2 * pad), py = 1 - ((ev.clientY - r.top) * h / r.height - pad) / (h - 2 * pad);
    let best = -1, bestD = Infinity;
    for (let i = 0; i < d.n; i++) {
      const dd = (d.x[i] - px) ** 2 + (d.y[i] - py) ** 2;
      if (dd < bestD) { bestD = dd; best = i; }
    }
    if (best >= 0) location.hash = `#/item/${d.ids[best]}`;
  };
}

// ---- heads -----------------------------------------------------------------------------------------------
async function showHeads() {
  const list = $("heads-list");
  try {
    const heads = await api("/heads");
    if (!heads.length) { list.replaceChildren(el("p", {}, "no heads yet (featstore fit-head)")); return; }
    list.replaceChildren(...heads.map((h) => {
      const a = el("a", { href: "#/heads", "data-head": h.name }, `${h.name} (${h.kind}, task ${h.task}, ${h.metric} ${h.value != null ? h.value.toFixed(3) : "?"})`);
      a.onclick = (ev) => { ev.preventDefault(); showConfusion(h.name); };
      return el("p", {}, a);
    }));
  } catch (e) {
    list.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

async function showConfusion(name) {
  const box = $("confusion");
  try {
    const c = await api(`/heads/${encodeURIComponent(name)}/confusion`);
    const head = el("tr", {}, el("th", {}, "true \\ predicted"), ...c.labels.map((l) => el("th", {}, l)));
    const rows = c.labels.map((t, i) => el("tr", {}, el("th", {}, t), ...c.labels.map((p, j) => {
      const td = el("td", { class: `cell ${i === j ? "diag" : c.matrix[i][j] ? "off" : ""}`, "data-cell": `${t}|${p}` }, String(c.matrix[i][j]));
      td.onclick = () => showCell(c, `${t}|${p}`);
      return td;
    })));
    box.replaceChildren(el("h3", {}, `${name} on the held-out split of ${c.task}`), el("table", { class: "confusion" }, head, ...rows));
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

async function showCell(c, key) {
  const ids = c.cells[key] || [];
  const items = await Promise.all(ids.slice(0, 60).map((id) => api(`/items/${id}`)));
  showGrid($("cell-grid"), items.map((it) => ({ item_id: it.item_id, path: it.path, label: key.replace("|", " → ") })));
}

// ---- routing ---------------------------------------------------------------------------------------------
function route() {
  const [, view, arg] = (location.hash || "#/search").split("/");
  for (const v of ["search", "item", "map", "heads"]) $(`view-${v}`).hidden = v !== view;
  if (view === "item") showItem(arg);
  else if (view === "map") showMap();
  else if (view === "heads") showHeads();
  else $("view-search").hidden = false;
}

let imageModel = "";
async function start() {
  setupSearch();
  try {
    const s = await api("/stats");
    $("store-info").textContent = `${s.store} · ${s.items.ok || 0} items · generation ${s.served_generation}`;
    $("task").replaceChildren(el("option", { value: "" }, "(none)"), ...Object.keys(s.tasks).map((t) => el("option", { value: t }, t)));
    if (Object.keys(s.tasks).length) $("task").value = Object.keys(s.tasks)[0];
    const images = s.embedding_sets.filter((e) => e.modality === "image");
    imageModel = (images.length ? images[images.length - 1] : s.embedding_sets[s.embedding_sets.length - 1] || {}).set_id || "";
  } catch (e) { $("store-info").textContent = e.message; }
  $("task").onchange = () => { map.data = null; route(); };
  window.onhashchange = route;
  route();
}
start();
