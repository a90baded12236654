// featstore web app: plain JavaScript over the REST API (no build step, nothing fetched from elsewhere).
// Views: #/grid?FILTERS (the gallery, the default), #/map, #/search, #/item/ID, #/heads, #/history.
// The gallery's view lives in the URL (#/grid?task=...&label=...): a URL can be shared and reloaded.
"use strict";
const $ = (id) => document.getElementById(id);
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
                 [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
const FACET_TITLES = { label: "label", split: "split", status: "status", finding: "audit finding", tag: "tag",
                       pred: "prediction", correct: "correct / wrong" };

async function api(path, options) {
  const r = await fetch(path, options);
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}
const postJSON = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => (k === "class" ? (e.className = v) : e.setAttribute(k, v)));
  children.forEach((c) => c != null && e.append(c));
  return e;
}
const task = () => $("task").value;
const fmt = (p) => (p == null ? "" : Number(p).toFixed(2));

// ---- search-result cards ---------------------------------------------------------------------------------
function card(r) {
  const c = el("div", { class: "card", "data-item": r.item_id, "data-path": r.path });
  if (r.text == null) c.append(el("img", { src: `/items/${r.item_id}/thumbnail?size=256`, alt: r.path, loading: "lazy" }));
  else c.append(el("div", { class: "text" }, r.text));
  c.append(el("div", { class: "name", title: r.path }, r.path.split("/").pop()));
  c.append(el("div", { class: "score" }, [r.label, r.score != null ? `similarity ${r.score.toFixed(3)}` : null].filter((x) => x != null).join(" · ")));
  c.onclick = () => (location.hash = `#/item/${r.item_id}`);
  return c;
}
function showGrid(grid, results) { grid.replaceChildren(...results.map(card)); }

// ---- the gallery -----------------------------------------------------------------------------------------
const CARD_W = 168, CARD_H = 204, PAGE = 120;
const gallery = { key: null, params: null, total: 0, pages: new Map(), loading: new Set(), ids: null, last: -1 };
const selection = new Set();

function viewParams() {
  const q = location.hash.split("?")[1] || "";
  return new URLSearchParams(q);
}
function setView(params) {
  params.delete("offset"); params.delete("limit");
  location.hash = "#/grid" + (params.toString() ? "?" + params.toString() : "");
}

async function showGallery() {
  const params = viewParams();
  if (!params.has("task") && task()) { params.set("task", task()); setView(params); return; }
  if (params.get("task") && params.get("task") !== task()) $("task").value = params.get("task");
  const key = params.toString();
  if (key !== gallery.key) {
    gallery.key = key; gallery.params = params; gallery.pages = new Map(); gallery.loading = new Set();
    gallery.ids = null; gallery.last = -1; gallery.total = 0;
    $("gallery").scrollTop = 0;
    $("grid-total").className = "status"; $("grid-total").textContent = "loading…"; delete $("grid-total").dataset.total;
    fillFilterInputs(params);
    await loadPage(0, true);
  }
  drawGallery();
}

function fillFilterInputs(p) {
  $("f-head").value = p.get("head") || "";
  $("f-sort").value = p.get("sort") || "item_id";
  $("f-conf-min").value = p.get("conf_min") || ""; $("f-conf-max").value = p.get("conf_max") || "";
  $("f-dup").value = p.get("dup_group") || ""; $("f-where").value = p.get("where") || "";
  $("region-note").hidden = !p.get("region");
}

async function loadPage(offset, withCounts) {
  const key = gallery.key;
  if (gallery.pages.has(offset) || gallery.loading.has(offset)) return;
  gallery.loading.add(offset);
  const q = new URLSearchParams(gallery.params);
  q.set("offset", offset); q.set("limit", PAGE);
  if (!withCounts) q.set("counts", "false");
  try {
    const out = await api("/grid?" + q.toString());
    if (key !== gallery.key) return;
    gallery.pages.set(offset, out.items);
    gallery.total = out.total;
    if (out.counts) { drawFacets(out.counts); fillHeads(out.heads); }
    $("read-only").hidden = !out.read_only;
    $("grid-total").className = "status";
    $("grid-total").textContent = `${out.total.toLocaleString()} items`;
    $("grid-total").dataset.total = out.total;
  } catch (e) {
    $("grid-total").className = "status error"; $("grid-total").textContent = e.message;
    gallery.total = 0; gallery.pages.set(offset, []);
  } finally { gallery.loading.delete(offset); }
  drawGallery();
}

function fillHeads(heads) {
  const s = $("f-head"), want = gallery.params.get("head") || "";
  if (s.options.length - 1 !== heads.length) {
    s.replaceChildren(el("option", { value: "" }, "(none)"), ...heads.map((h) => el("option", { value: h.name }, `${h.name} (${h.task})`)));
  }
  s.value = want;
}

function drawFacets(counts) {
  const box = $("facets"), p = gallery.params;
  for (const [name] of p) if (name in counts || FACET_TITLES[name] || name.startsWith("m.")) {
    counts[name] = counts[name] || {};
    p.getAll(name).forEach((v) => { if (!(v in counts[name])) counts[name][v] = 0; });   // chosen, none left: still shown
  }
  const groups = Object.entries(counts).filter(([, v]) => Object.keys(v).length);
  box.replaceChildren(...groups.map(([name, values]) => {
    const chosen = p.getAll(name);
    const title = FACET_TITLES[name] || name.replace(/^m\./, "");
    return el("div", { class: "facet", "data-facet": name }, el("h4", {}, title),
      ...Object.entries(values).map(([v, n]) => {
        const box = el("input", { type: "checkbox", "data-value": v });
        box.checked = chosen.includes(v);
        box.onchange = () => {
          const q = new URLSearchParams(gallery.params);
          const now = q.getAll(name).filter((x) => x !== v);
          q.delete(name);
          (box.checked ? [...now, v] : now).forEach((x) => q.append(name, x));
          if (name === "correct") { q.delete("correct"); if (box.checked) q.set("correct", v); }
          setView(q);
        };
        return el("label", {}, box, ` ${v} `, el("span", { class: "n" }, `(${n})`));
      }));
  }));
}

function applyInputs() {
  const q = new URLSearchParams(gallery.params || viewParams());
  const set = (k, v) => (v ? q.set(k, v) : q.delete(k));
  set("head", $("f-head").value); set("sort", $("f-sort").value === "item_id" ? "" : $("f-sort").value);
  set("conf_min", $("f-conf-min").value); set("conf_max", $("f-conf-max").value);
  set("dup_group", $("f-dup").value.trim()); set("where", $("f-where").value.trim());
  if (!q.get("head")) ["pred", "correct", "conf_min", "conf_max", "sort"].forEach((k) => q.delete(k));
  setView(q);
}

function drawGallery() {
  const box = $("gallery"), inner = $("gallery-inner");
  const cols = Math.max(1, Math.floor((box.clientWidth - 8) / CARD_W));
  const rows = Math.ceil(gallery.total / cols);
  inner.style.height = `${rows * CARD_H}px`;
  const first = Math.max(0, Math.floor(box.scrollTop / CARD_H) - 1);
  const last = Math.min(rows, Math.ceil((box.scrollTop + box.clientHeight) / CARD_H) + 1);
  const cards = [];
  for (let i = first * cols; i < Math.min(gallery.total, last * cols); i++) {
    const offset = Math.floor(i / PAGE) * PAGE, page = gallery.pages.get(offset);
    if (!page) { loadPage(offset, false); continue; }
    const item = page[i - offset];
    if (item) cards.push(galleryCard(item, i, cols));
  }
  inner.replaceChildren(...cards);
  inner.dataset.shown = String(cards.length);
  window.featstoreGalleryDrawnAt = performance.now();
}

function galleryCard(it, index, cols) {
  const c = el("div", { class: "card" + (selection.has(it.item_id) ? " selected" : "") + (it.excluded ? " excluded" : ""),
                        "data-item": it.item_id, "data-path": it.path, "data-index": index });
  c.style.left = `${(index % cols) * CARD_W}px`; c.style.top = `${Math.floor(index / cols) * CARD_H}px`;
  if (it.text == null) c.append(el("img", { src: `/items/${it.item_id}/thumbnail?size=128`, alt: "", loading: "lazy" }));
  else c.append(el("div", { class: "text" }, it.text));
  c.append(el("div", { class: "name", title: it.path }, el("a", { href: `#/item/${it.item_id}` }, it.path.split("/").pop())));
  c.append(el("div", { class: "meta" }, [it.label || "unlabelled", it.split].filter(Boolean).join(" · ")));
  for (const [head, [pred, p]] of Object.entries(it.preds || {})) {
    const wrong = it.label != null && pred != null && pred !== it.label && (gallery.params.get("head") || head) === head;
    c.append(el("div", { class: "pred" + (wrong ? " wrong" : ""), title: `${head}: ${pred} (p=${fmt(p)})` }, `${head}: ${pred ?? "?"} ${fmt(p)}`));
  }
  const badges = el("div", {});
  (it.findings || []).forEach((f) => badges.append(el("span", { class: `badge ${f}`, title: f === "label_issue" && it.suggested ? `suggested: ${it.suggested}` : f }, f.replace("_", " "))));
  if (it.suggested) badges.append(el("span", { class: "badge" }, `→ ${it.suggested}`));
  if (it.excluded) badges.append(el("span", { class: "badge excluded" }, `excluded: ${it.excluded}`));
  (it.tags || []).forEach((t) => badges.append(el("span", { class: "badge tag" }, `#${t}`)));
  if (it.dup_group != null) badges.append(el("span", { class: "badge" }, `dup ${it.dup_group}`));
  c.append(badges);
  c.onclick = (ev) => { if (ev.target.tagName !== "A") clickCard(ev, it.item_id, index); };
  return c;
}

async function clickCard(ev, id, index) {
  if (ev.shiftKey && gallery.last >= 0) {
    const ids = await matchingIds();
    const [a, b] = [Math.min(gallery.last, index), Math.max(gallery.last, index)];
    ids.slice(a, b + 1).forEach((x) => selection.add(x));
  } else if (selection.has(id)) selection.delete(id);
  else selection.add(id);
  gallery.last = index;
  showSelection(); drawGallery();
}

async function matchingIds() {
  if (!gallery.ids) gallery.ids = (await api("/grid/ids?" + gallery.params.toString())).ids;
  return gallery.ids;
}

function showSelection() { $("sel-count").textContent = `${selection.size.toLocaleString()} selected`; $("sel-count").dataset.n = selection.size; }

// ---- edits -----------------------------------------------------------------------------------------------
function actStatus(text, error) { const s = $("act-status"); s.className = "status" + (error ? " error" : ""); s.textContent = text; }

async function edit(body, say) {
  if (!selection.size) { actStatus("select items first (click, shift-click, lasso on the map, or Select all matching)", true); return; }
  if (["label", "unlabel", "accept"].includes(body.action) && !task()) { actStatus("choose a task first", true); return; }
  actStatus("saving…");
  try {
    const out = await postJSON("/edits", { task: task() || null, ids: [...selection], label: null, tag: null, reason: null, ...body });
    await refreshed(out);
    actStatus(`${say}: ${out.changed} changed (edit ${out.edit_id}) — Undo reverts it`);
  } catch (e) { actStatus(e.message, true); }
}

async function refreshed(out) {
  // the write is committed when its answer comes; out.served: the server already serves a snapshot holding it
  for (let i = 0; !out.served && i < 30; i++) {
    const s = await api("/stats");
    if (s.served_generation >= out.generation) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  gallery.key = null;
  route();
}

async function undo(statusEl) {
  const show = (t, e) => { const s = statusEl || $("act-status"); s.className = "status" + (e ? " error" : ""); s.textContent = t; };
  try {
    const out = await postJSON("/edits/undo", {});
    await refreshed(out);
    show(`undid edit ${out.undone}: ${out.changed} changed`);
  } catch (e) { show(e.message, true); }
}

function setupGallery() {
  $("f-apply").onclick = applyInputs;
  for (const id of ["f-head", "f-sort"]) $(id).onchange = applyInputs;
  for (const id of ["f-where", "f-dup", "f-conf-min", "f-conf-max"]) $(id).onkeydown = (ev) => { if (ev.key === "Enter") applyInputs(); };
  $("f-clear").onclick = () => setView(new URLSearchParams(task() ? { task: task() } : {}));
  $("f-region-clear").onclick = () => { const q = new URLSearchParams(gallery.params); ["region", "region_set", "region_method"].forEach((k) => q.delete(k)); setView(q); };
  $("gallery").onscroll = () => requestAnimationFrame(drawGallery);
  window.addEventListener("resize", () => !$("view-grid").hidden && drawGallery());
  $("sel-all").onclick = async () => {
    try { (await matchingIds()).forEach((x) => selection.add(x)); showSelection(); drawGallery(); }
    catch (e) { actStatus(e.message, true); }
  };
  $("sel-none").onclick = () => { selection.clear(); showSelection(); drawGallery(); };
  $("act-label-go").onclick = () => { const l = $("act-label").value.trim(); if (l) edit({ action: "label", label: l }, `labelled '${l}'`); else actStatus("type a label", true); };
  $("act-tag-go").onclick = () => { const t = $("act-tag").value.trim(); if (t) edit({ action: "tag", tag: t }, `tagged '${t}'`); };
  $("act-untag-go").onclick = () => { const t = $("act-tag").value.trim(); if (t) edit({ action: "untag", tag: t }, `untagged '${t}'`); };
  $("act-dup").onclick = () => edit({ action: "exclude", reason: "duplicate" }, "excluded as duplicates");
  $("act-outlier").onclick = () => edit({ action: "exclude", reason: "outlier" }, "excluded as outliers");
  $("act-include").onclick = () => edit({ action: "include" }, "included again");
  $("act-accept").onclick = () => edit({ action: "accept" }, "accepted the audit's suggestions");
  $("undo").onclick = () => undo();
}

// ---- search ----------------------------------------------------------------------------------------------
async function runSearch(file) {
  const status = $("search-status"), shown = $("search-query");
  const k = $("search-k").value || "12", where = $("search-where").value.trim();
  status.className = "status"; status.textContent = "searching…";
  try {
    let out;
    if (file) {
      shown.replaceChildren(el("img", { src: URL.createObjectURL(file), alt: file.name, id: "query-image" }), el("div", {}, `query: ${file.name}`));
      const form = new FormData();
      form.append("file", file); form.append("k", k);
      if (task()) form.append("task", task());
      if (where) form.append("where", where);
      if ($("search-add").checked) form.append("add", "true");
      out = await api("/search", { method: "POST", body: form });
    } else {
      const text = $("search-text").value.trim();
      if (!text) { status.textContent = "type a text or drop an image"; return; }
      const byId = /^#\d+$/.test(text);
      shown.replaceChildren(byId ? el("img", { src: `/items/${text.slice(1)}/thumbnail?size=256`, id: "query-image", alt: text })
        : el("div", { class: "qtext" }, `query: “${text}”`));
      const body = byId ? { id: Number(text.slice(1)), k: Number(k) } : { text, k: Number(k) };
      if (where) body.where = where;
      if (task()) body.task = task();
      out = await postJSON("/search", body);
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
    const t = task();
    const [item, view] = await Promise.all([api(`/items/${id}`), api(`/items/${id}/view` + (t ? `?task=${encodeURIComponent(t)}` : ""))]);
    const labels = Object.entries(item.labels).map(([k, l]) => `${k}: ${l}`).join(", ") || "no labels";
    const preds = el("table", { class: "plain", id: "item-preds" }, el("tr", {}, el("th", {}, "head"), el("th", {}, "task"), el("th", {}, "prediction (probability)")),
      ...view.predictions.map((p) => el("tr", { "data-pred-head": p.head }, el("td", {}, p.head), el("td", {}, p.task),
        el("td", {}, p.top ? p.top.map(([c, q]) => `${c} ${q.toFixed(3)}`).join(" · ") : `value ${p.value}`))));
    const findings = el("div", { id: "item-findings" }, ...view.findings.map((f) => {
      const row = el("p", { class: "finding", "data-kind": f.kind }, el("span", { class: `badge ${f.kind}` }, f.kind.replace("_", " ")),
        ` score ${f.score ?? "?"}` + (f.given != null ? ` · given ${f.given}` : "") + (f.suggested != null ? ` · suggested ${f.suggested}` : "")
        + (f.group != null ? ` · group ${f.group}` : "") + (f.reason ? ` — ${f.reason}` : ""));
      if (f.group != null) row.append(" ", el("a", { href: `#/grid?${t ? "task=" + encodeURIComponent(t) + "&" : ""}dup_group=${f.group}`, class: "dup-group" }, "the group in the gallery"));
      if (f.kind === "label_issue" && f.suggested != null) {
        const b = el("button", { class: "accept-one" }, `accept '${f.suggested}'`);
        b.onclick = async () => { selection.clear(); selection.add(Number(id)); await edit({ action: "accept" }, "accepted"); };
        row.append(" ", b);
      }
      return row;
    }));
    const copies = view.copies.length ? el("p", { id: "item-copies" }, "exact copies: ", ...view.copies.map((c) => el("a", { href: `#/item/${c.item_id}` }, c.path.split("/").pop() + " "))) : "";
    detail.replaceChildren(
      item.thumbnail ? el("img", { src: `${item.thumbnail}?size=512`, alt: item.path, id: "item-image" }) : "",
      el("h2", { id: "item-path" }, item.path),
      el("p", {}, `item ${item.item_id} · ${item.width || "?"}×${item.height || "?"} · ${item.size} bytes · ${labels}`),
      view.excluded ? el("p", { class: "error" }, `excluded: ${view.excluded}`) : "",
      view.tags.length ? el("p", {}, "tags: " + view.tags.join(", ")) : "",
      el("h3", {}, "Predictions"), view.predictions.length ? preds : el("p", {}, "no heads for this item's embedding set"),
      view.findings.length ? el("h3", {}, `Audit findings (${t})`) : "", findings, copies,
      el("p", {}, el("a", { href: `#/search`, id: "item-search" }, "search by this item"), " · ",
        el("a", { href: `#/grid?${t ? "task=" + encodeURIComponent(t) + "&" : ""}where=${encodeURIComponent("item_id = " + item.item_id)}` }, "select in the gallery")));
    $("item-search").onclick = () => setTimeout(() => { $("search-text").value = `#${id}`; runSearch(null); }, 0);
    const out = await postJSON("/search", { id: Number(id), k: 12, task: t || undefined });
    showGrid($("item-grid"), out.results);
  } catch (e) {
    detail.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

// ---- map -------------------------------------------------------------------------------------------------
const map = { data: null, scale: 1, tx: 0, ty: 0, pad: 8 };

async function showMap() {
  const status = $("map-status"), select = $("map-color"), method = $("map-method");
  status.className = "status";
  status.textContent = "loading the map (computed once per embedding set, then stored)…";
  try {
    if (select.options.length === 1) {
      for (const h of await api("/heads")) select.append(el("option", { value: `head:${h.name}` }, `head ${h.name}`));
      select.onchange = () => { map.data = null; showMap(); };
      method.onchange = () => { map.data = null; resetZoom(); showMap(); };
    }
    if (!map.data) map.data = await api(`/map?method=${method.value}&color=${encodeURIComponent(select.value)}&model=${encodeURIComponent(imageModel)}` + (task() ? `&task=${encodeURIComponent(task())}` : ""));
    drawMap();
    status.textContent = `${map.data.n} points (${map.data.model}, ${method.selectedOptions[0].text})` +
      (map.data.task == null && select.value === "label" ? " — choose a task to colour by label" : "") +
      "; wheel zooms, drag pans, click opens a point; lasso or box selects into the gallery";
  } catch (e) {
    status.className = "status error"; status.textContent = e.message;
  }
}

function resetZoom() { map.scale = 1; map.tx = 0; map.ty = 0; }
// data [0,1] -> canvas pixels and back
function toPx(x, y) {
  const c = $("map-canvas"), w = c.width - 2 * map.pad, h = c.height - 2 * map.pad;
  return [map.pad + (x * w) * map.scale + map.tx, map.pad + ((1 - y) * h) * map.scale + map.ty];
}
function toData(px, py) {
  const c = $("map-canvas"), w = c.width - 2 * map.pad, h = c.height - 2 * map.pad;
  return [(px - map.pad - map.tx) / map.scale / w, 1 - (py - map.pad - map.ty) / map.scale / h];
}
function canvasXY(ev) {
  const c = $("map-canvas"), r = c.getBoundingClientRect();
  return [(ev.clientX - r.left) * c.width / r.width, (ev.clientY - r.top) * c.height / r.height];
}
function viridis(t) {
  const f = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1), i = Math.min(VIRIDIS.length - 2, Math.floor(f)), u = f - i;
  const [a, b] = [VIRIDIS[i], VIRIDIS[i + 1]];
  return `rgb(${a.map((v, k) => Math.round(v + (b[k] - v) * u)).join(",")})`;
}

function drawMap(path) {
  const canvas = $("map-canvas"), ctx = canvas.getContext("2d"), d = map.data;
  const w = canvas.width, h = canvas.height, size = (d.n > 20000 ? 2 : d.n > 2000 ? 4 : 6) * Math.min(3, Math.sqrt(map.scale));
  ctx.clearRect(0, 0, w, h);
  const byColour = new Map();                        // one fillStyle change per colour, not per point
  for (let i = 0; i < d.n; i++) {
    let c;
    if (d.numeric) c = d.values[i] == null ? "#bbb" : viridis(Math.round(((d.values[i] - d.range[0]) / ((d.range[1] - d.range[0]) || 1)) * 31) / 31);
    else c = d.codes[i] < 0 ? "#bbb" : PALETTE[d.codes[i] % PALETTE.length];
    if (!byColour.has(c)) byColour.set(c, []);
    byColour.get(c).push(i);
  }
  for (const [c, idx] of byColour) {
    ctx.fillStyle = c;
    for (const i of idx) { const [px, py] = toPx(d.x[i], d.y[i]); if (px > -5 && py > -5 && px < w + 5 && py < h + 5) ctx.fillRect(px - size / 2, py - size / 2, size, size); }
  }
  if (path && path.length > 1) {
    ctx.strokeStyle = "#d62728"; ctx.lineWidth = 2; ctx.beginPath();
    path.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y))); ctx.closePath(); ctx.stroke();
  }
  const legend = $("map-legend");
  if (d.numeric) {
    const bar = el("canvas", { width: 300, height: 14, id: "colour-bar" }), g = bar.getContext("2d");
    for (let x = 0; x < 300; x++) { g.fillStyle = viridis(x / 299); g.fillRect(x, 0, 1, 14); }
    legend.replaceChildren(el("span", {}, `${d.range[0]}`), bar, el("span", {}, ` ${d.range[1]}`), el("span", {}, ` (${map.data.task})`));
  } else {
    legend.replaceChildren(...d.classes.map((name, c) => el("span", {}, el("i", { style: `background:${PALETTE[c % PALETTE.length]}` }), name)));
  }
  canvas.dataset.points = String(d.n);
  window.featstoreMapDrawnAt = performance.now();
}

function nearest(px, py, radius) {
  const d = map.data; let best = -1, bestD = radius * radius;
  for (let i = 0; i < d.n; i++) {
    const [x, y] = toPx(d.x[i], d.y[i]), dd = (x - px) ** 2 + (y - py) ** 2;
    if (dd < bestD) { bestD = dd; best = i; }
  }
  return best;
}

function setupMap() {
  const canvas = $("map-canvas"), tip = $("map-tip");
  let drag = null;
  const mode = () => document.querySelector("input[name=map-mode]:checked").value;
  canvas.onwheel = (ev) => {
    if (!map.data) return;
    ev.preventDefault();
    const [px, py] = canvasXY(ev), f = ev.deltaY < 0 ? 1.25 : 0.8;
    map.tx = px - (px - map.tx) * f; map.ty = py - (py - map.ty) * f; map.scale *= f;
    drawMap();
  };
  canvas.onmousedown = (ev) => { if (map.data) drag = { start: canvasXY(ev), path: [canvasXY(ev)], moved: false, tx: map.tx, ty: map.ty }; };
  canvas.onmousemove = (ev) => {
    if (!map.data) return;
    const [px, py] = canvasXY(ev);
    if (drag) {
      const [sx, sy] = drag.start;
      if (Math.abs(px - sx) + Math.abs(py - sy) > 3) drag.moved = true;
      if (mode() === "pan") { map.tx = drag.tx + px - sx; map.ty = drag.ty + py - sy; drawMap(); }
      else if (mode() === "lasso") { drag.path.push([px, py]); drawMap(drag.path); }
      else { drag.path = [[sx, sy], [px, sy], [px, py], [sx, py]]; drawMap(drag.path); }
      tip.hidden = true;
      return;
    }
    const i = nearest(px, py, 8);
    if (i < 0) { tip.hidden = true; return; }
    const d = map.data, r = canvas.getBoundingClientRect(), label = d.numeric ? d.values[i] : d.classes[d.codes[i]];
    tip.replaceChildren(el("img", { src: `/items/${d.ids[i]}/thumbnail?size=128`, alt: "" }), el("div", {}, `#${d.ids[i]} ${label ?? ""}`));
    tip.style.left = `${(px * r.width / canvas.width) + 12}px`; tip.style.top = `${(py * r.height / canvas.height) + 12}px`;
    tip.hidden = false; tip.dataset.item = d.ids[i];
  };
  canvas.onmouseleave = () => { tip.hidden = true; };
  canvas.onmouseup = (ev) => {
    if (!drag || !map.data) return;
    const done = drag; drag = null;
    if (!done.moved) {                                   // a click: open the nearest point
      const [px, py] = canvasXY(ev), i = nearest(px, py, Infinity);
      if (i >= 0) location.hash = `#/item/${map.data.ids[i]}`;
      return;
    }
    if (mode() !== "pan" && done.path.length >= 3) selectRegion(done.path);
  };
  $("map-reset").onclick = () => { resetZoom(); map.data && drawMap(); };
}

function selectRegion(pixels) {
  const step = Math.max(1, Math.ceil(pixels.length / 150));     // at most ~150 vertices in the URL
  const pts = pixels.filter((_, i) => i % step === 0).map(([x, y]) => toData(x, y).map((v) => v.toFixed(4)).join(","));
  const q = new URLSearchParams(task() ? { task: task() } : {});
  q.set("region", pts.join(";")); q.set("region_set", map.data.set_id); q.set("region_method", map.data.method);
  setView(q);
}

// ---- heads, refit ----------------------------------------------------------------------------------------
async function showHeads() {
  const list = $("heads-list");
  try {
    const heads = await api("/heads");
    if (!heads.length) { list.replaceChildren(el("p", {}, "no heads yet: Refit above, or featstore fit-head")); return; }
    list.replaceChildren(...heads.map((h) => {
      const a = el("a", { href: "#/heads", "data-head": h.name }, `${h.name} (${h.kind}, task ${h.task}, ${h.metric} ${h.value != null ? h.value.toFixed(3) : "?"})`);
      a.onclick = (ev) => { ev.preventDefault(); showConfusion(h.name); };
      return el("p", {}, a);
    }));
  } catch (e) {
    list.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

function confusionTable(c, onCell) {
  const head = el("tr", {}, el("th", {}, "true \\ predicted"), ...c.labels.map((l) => el("th", {}, l)));
  const rows = c.labels.map((t, i) => el("tr", {}, el("th", {}, t), ...c.labels.map((p, j) => {
    const td = el("td", { class: `cell ${i === j ? "diag" : c.matrix[i][j] ? "off" : ""}`, "data-cell": `${t}|${p}` }, String(c.matrix[i][j]));
    if (onCell) td.onclick = () => onCell(`${t}|${p}`);
    return td;
  })));
  return el("table", { class: "confusion" }, head, ...rows);
}

async function showConfusion(name) {
  const box = $("confusion");
  try {
    const c = await api(`/heads/${encodeURIComponent(name)}/confusion`);
    box.replaceChildren(el("h3", {}, `${name} on the held-out split of ${c.task}`), confusionTable(c, (key) => showCell(c, key)));
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

async function showCell(c, key) {
  const ids = c.cells[key] || [];
  const items = await Promise.all(ids.slice(0, 60).map((id) => api(`/items/${id}`)));
  showGrid($("cell-grid"), items.map((it) => ({ item_id: it.item_id, path: it.path, label: key.replace("|", " → ") })));
}

async function refit() {
  const status = $("refit-status"), out = $("refit-result"), t = $("refit-task").value;
  status.className = "status"; out.replaceChildren();
  if (!t) { status.className = "status error"; status.textContent = "choose a task"; return; }
  try {
    const { job } = await postJSON("/refit", { task: t, kind: $("refit-kind").value });
    status.textContent = `refitting (job ${job}); the server keeps answering meanwhile…`;
    let j;
    for (;;) {
      j = await api(`/jobs/${job}`);
      if (!["queued", "running"].includes(j.state)) break;
      await new Promise((r) => setTimeout(r, 700));
    }
    if (j.state !== "done") throw new Error(j.error || `refit ${j.state}`);
    status.textContent = `refit done (job ${job})`;
    const res = j.result || {}, board = res.leaderboard || [];
    const cols = board.length ? Object.keys(board[0]).filter((k) => typeof board[0][k] !== "object") : [];
    out.replaceChildren(el("h3", {}, "Leaderboard"),
      el("table", { class: "plain", id: "refit-leaderboard" }, el("tr", {}, ...cols.map((k) => el("th", {}, k))),
        ...board.map((r) => el("tr", {}, ...cols.map((k) => el("td", {}, typeof r[k] === "number" ? String(Math.round(r[k] * 1000) / 1000) : String(r[k] ?? "")))))),
      res.confusion && res.confusion.labels ? el("h3", {}, `Confusion matrix${res.confusion.head ? " of " + res.confusion.head : ""}`) : "",
      res.confusion && res.confusion.labels ? confusionTable(res.confusion) : "");
    showHeads();
    setTimeout(showHeads, 2500);          // the refitted head, once the server serves the store's next snapshot
  } catch (e) { status.className = "status error"; status.textContent = e.message; }
}

// ---- history ---------------------------------------------------------------------------------------------
async function showHistory() {
  const table = $("history-table");
  try {
    const { edits } = await api("/edits?limit=50");
    const cols = ["edit_id", "at", "who", "action", "task", "count", "summary", "undone"];
    table.replaceChildren(el("tr", {}, ...cols.map((c) => el("th", {}, c))),
      ...edits.map((e) => el("tr", { "data-edit": e.edit_id, class: e.undone ? "undone" : "" }, ...cols.map((c) => el("td", {}, String(e[c] ?? ""))))));
    if (!edits.length) table.replaceChildren(el("tr", {}, el("td", {}, "no edits yet")));
  } catch (e) { table.replaceChildren(el("tr", {}, el("td", { class: "error" }, e.message))); }
}

// ---- routing ---------------------------------------------------------------------------------------------
function route() {
  const [path] = (location.hash || "#/grid").split("?");
  const [, view, arg] = path.split("/");
  const known = ["grid", "search", "item", "map", "heads", "history"];
  const v = known.includes(view) ? view : "grid";
  for (const k of known) $(`view-${k}`).hidden = k !== v;
  if (v === "item") showItem(arg);
  else if (v === "map") showMap();
  else if (v === "heads") showHeads();
  else if (v === "history") showHistory();
  else if (v === "grid") showGallery();
}

let imageModel = "";
async function start() {
  setupSearch(); setupGallery(); setupMap();
  $("refit-go").onclick = refit;
  $("history-undo").onclick = async () => { await undo($("history-status")); showHistory(); };
  try {
    const s = await api("/stats");
    $("store-info").textContent = `${s.store} · ${s.items.ok || 0} items · generation ${s.served_generation}`;
    const tasks = Object.keys(s.tasks);
    $("task").replaceChildren(el("option", { value: "" }, "(none)"), ...tasks.map((t) => el("option", { value: t }, t)));
    $("refit-task").replaceChildren(...tasks.map((t) => el("option", { value: t }, t)));
    // the CLI's rule: the only task is the task; with several, none until the user chooses
    const fromUrl = viewParams().get("task");
    $("task").value = fromUrl && tasks.includes(fromUrl) ? fromUrl : tasks.length === 1 ? tasks[0] : "";
    $("refit-task").value = $("task").value || tasks[0] || "";
    const images = s.embedding_sets.filter((e) => e.modality === "image");
    imageModel = (images.length ? images[images.length - 1] : s.embedding_sets[s.embedding_sets.length - 1] || {}).set_id || "";
  } catch (e) { $("store-info").textContent = e.message; }
  $("task").onchange = () => {
    map.data = null;
    $("refit-task").value = task() || $("refit-task").value;
    const [path] = (location.hash || "#/grid").split("?");
    if (path === "#/grid" || path === "#/" || path === "") {
      const q = viewParams(); q.delete("label"); q.delete("split"); q.delete("finding");
      if (task()) q.set("task", task()); else q.delete("task");
      setView(q);
    } else route();
  };
  window.onhashchange = route;
  route();
}
start();
