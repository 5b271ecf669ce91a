// distill view: the page. Routes live in the URL's hash, so every view is a link that can be shared:
//   #/                      the datasets given
//   #/ds/KEY                a dataset's overview (funnel, lengths, by domain and source, config)
//   #/ds/KEY/rows?filters   its rows, paged, filtered, searched, sorted
//   #/ds/KEY/row/I          one row, its parts apart, its verdict beside the text
//   #/prompt/ID             every sample of one prompt, side by side
"use strict";

const { esc } = Render;
const $main = () => document.getElementById("main");
const REASON_KEPT = "kept";
const fmt = (n) => (n == null ? "–" : Number(n).toLocaleString("en-US"));
const dsLink = (key, rest = "") => `#/ds/${encodeURIComponent(key)}${rest}`;

async function api(path, params = {}) {
  const qs = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));
  const r = await fetch(`/api/${path}?${qs}`);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function setCrumbs(parts) {
  document.getElementById("crumbs").innerHTML = parts.map(([text, href]) => (href ? `<a href="${href}">${esc(text)}</a>` : `<span>${esc(text)}</span>`)).join(" / ");
}

// A view is drawn: tests wait for body[data-painted]; the benchmark reads the performance mark's time.
function painted(view) {
  document.body.dataset.painted = view;
  document.body.dataset.route = location.hash; // what was drawn: a test knows a newer URL is not drawn yet
  performance.mark(`painted-${view}`);
}

function status(text) { document.getElementById("status").textContent = text || ""; }

function badge(reason, keep) {
  if (reason == null && keep == null) return "";
  const r = reason ?? (keep ? REASON_KEPT : "rejected");
  return `<span class="badge ${r === REASON_KEPT ? "ok" : "bad"}" data-reason="${esc(r)}">${esc(r)}</span>`;
}

// --- datasets -----------------------------------------------------------------------------------------

let catalog = null;
async function datasets() {
  if (!catalog) catalog = await api("datasets");
  return catalog;
}

// The first page: the steps in the order of the data path (prompts -> traces -> verdicts -> kept -> sft -> eval),
// each with its counts and its funnel read from its manifest, each linking to its dataset.
async function home() {
  const cat = await datasets();
  if (cat.datasets.length === 1) { location.replace(dsLink(cat.datasets[0].key)); return; }
  setCrumbs([]);
  const metrics = (e) => Object.entries(e.metrics || {}).filter(([k, v]) => typeof v === "number" && /pass@1$|^maj@|_pct$/.test(k))
    .map(([k, v]) => `<b>${esc(k)}</b> ${fmt(Math.round(v * 10) / 10)}`).join(" · ");
  $main().innerHTML = `<h1>${esc(cat.roots.join(", "))} <span class="muted">· ${cat.datasets.length} datasets, in pipeline order</span></h1>
    <ol id="pipeline">${cat.datasets.map((d) => `
      <li class="step" data-key="${esc(d.key)}" data-stage="${esc(d.stage)}" data-rows="${d.rows}">
        <h2><a href="${dsLink(d.key)}">${esc(d.key)}</a> <span class="stage">${esc(d.stage)}</span>
          <span class="counts">${d.rows_in != null && d.rows_in !== d.rows ? `${fmt(d.rows_in)} in → ` : ""}<b>${fmt(d.rows)}</b> rows${d.complete ? "" : ` · ${d.shards} of ${d.planned_shards ?? "?"} shards (unfinished)`}</span>
          ${d.inputs.length ? `<span class="muted">reads ${d.inputs.map((k) => `<a href="${dsLink(k)}">${esc(k)}</a>`).join(", ")}</span>` : ""}</h2>
        ${d.eval ? `<p class="eval">${metrics(d.eval)}</p>` : ""}
        ${Object.keys(d.funnel.counts).length > 1 ? bars(d.funnel.counts, d.key, d.funnel.reasons, d.funnel.kept) : ""}
      </li>`).join("")}</ol>`;
  painted("home");
}

// --- overview -----------------------------------------------------------------------------------------

// reasons: the names are the rows' own reasons, so each bar lists its rows; else each leads to the dataset.
// kept: the names whose bars are rows out (green), as the server's funnel says
function bars(counts, key, reasons = true, keptNames = [REASON_KEPT]) {
  const total = Object.values(counts).reduce((a, b) => a + b, 0) || 1;
  const top = Math.max(...Object.values(counts), 1);
  const kept = (reason) => keptNames.includes(reason);
  return `<div class="bars">${Object.entries(counts).map(([reason, n]) => `
    <a class="bar-row" data-reason="${esc(reason)}" data-count="${n}" href="${reasons ? dsLink(key, `/rows?reason=${encodeURIComponent(reason)}`) : dsLink(key)}">
      <span class="bar-label">${esc(reason)}</span>
      <span class="bar-track"><span class="bar ${kept(reason) ? "ok" : "bad"}" style="width:${((100 * n) / top).toFixed(1)}%"></span></span>
      <span class="bar-count">${fmt(n)}</span><span class="bar-share">${((100 * n) / total).toFixed(1)}%</span></a>`).join("")}</div>`;
}

function histogram(h) {
  if (!h.edges || !h.edges.length) return `<p class="muted">no lengths recorded</p>`;
  const W = 640, H = 180, n = h.kept.length, bw = W / n;
  const top = Math.max(...h.kept.map((k, i) => k + h.other[i]), 1);
  let rects = "";
  for (let i = 0; i < n; i++) {
    const hk = (H * h.kept[i]) / top, ho = (H * h.other[i]) / top;
    const tip = `${fmt(h.edges[i])}–${fmt(h.edges[i + 1])} ${h.unit}: ${fmt(h.kept[i])} kept, ${fmt(h.other[i])} not`;
    rects += `<g><title>${esc(tip)}</title><rect class="h-ok" x="${i * bw + 1}" y="${H - hk}" width="${bw - 2}" height="${hk}"/>
      <rect class="h-bad" x="${i * bw + 1}" y="${H - hk - ho}" width="${bw - 2}" height="${ho}"/></g>`;
  }
  return `<svg class="hist" viewBox="0 -4 ${W} ${H + 24}" role="img" aria-label="length histogram">${rects}
    <line x1="0" y1="${H}" x2="${W}" y2="${H}" class="axis"/>
    <text x="0" y="${H + 16}">${fmt(h.edges[0])}</text><text x="${W}" y="${H + 16}" text-anchor="end">${fmt(h.edges[n])} ${esc(h.unit)}${h.max > h.edges[n] ? ` (max ${fmt(h.max)})` : ""}</text></svg>
    <p class="muted"><span class="swatch h-ok"></span> kept <span class="swatch h-bad"></span> not kept · median ${fmt(h.median)} ${esc(h.unit)}</p>`;
}

function crossTable(by, key, column) {
  const reasons = [...new Set(Object.values(by).flatMap((c) => Object.keys(c)))];
  return `<table class="grid"><thead><tr><th>${esc(column)}</th>${reasons.map((r) => `<th class="num">${esc(r)}</th>`).join("")}</tr></thead><tbody>
    ${Object.entries(by).slice(0, 50).map(([value, counts]) => `<tr><td>${esc(value)}</td>${reasons.map((r) => `<td class="num">${counts[r]
      ? `<a href="${dsLink(key, `/rows?reason=${encodeURIComponent(r)}&${column}=${encodeURIComponent(value)}`)}">${fmt(counts[r])}</a>` : ""}</td>`).join("")}</tr>`).join("")}
    </tbody></table>`;
}

async function overview(key) {
  const o = await api("overview", { ds: key });
  setCrumbs([[key, dsLink(key)]]);
  const links = (keys) => keys.map((k) => `<a href="${dsLink(k)}">${esc(k)}</a>`).join(", ");
  $main().innerHTML = `<h1>${esc(key)} <span class="stage">${esc(o.stage)}</span></h1>
    <p class="facts" id="facts"><b>${fmt(o.rows)}</b> rows · ${o.record ?? "?"} records · ${o.shards} shard${o.shards === 1 ? "" : "s"}${o.complete ? "" : ` of ${o.planned_shards ?? "?"} (unfinished)`}
      · ${(o.bytes / 1e6).toFixed(1)} MB · ${esc((o.updated_at || "").replace("T", " ").slice(0, 19))}
      · <a href="${dsLink(key, "/rows")}">browse rows</a></p>
    ${o.inputs.length || o.files.length ? `<p>reads ${links(o.inputs)}${o.files.length ? ` ${o.files.slice(0, 3).map((f) => `<code>${esc(f)}</code>`).join(", ")}${o.files.length > 3 ? ` +${o.files.length - 3}` : ""}` : ""}</p>` : ""}
    ${o.readers.length ? `<p>read by ${links(o.readers)}</p>` : ""}
    ${o.command ? `<p class="muted">made by <code>${esc(o.command)}</code></p>` : ""}
    ${o.eval ? `<section id="eval"><h2>Evaluation</h2><p>${esc(o.eval.model?.name ?? "")} on ${esc(o.eval.benchmark?.path ?? "")}:
      ${Object.entries(o.eval.metrics || {}).filter(([, v]) => typeof v === "number").map(([k, v]) => `<b>${esc(k)}</b> ${fmt(Math.round(v * 100) / 100)}`).join(" · ")}</p></section>` : ""}
    <section><h2>Funnel</h2><div id="funnel"><p class="muted">counting…</p></div></section>
    <section><h2>Lengths</h2><div id="lengths"></div></section>
    <section><h2>By domain</h2><div id="by-domain"></div></section>
    <section><h2>By source</h2><div id="by-source"></div></section>
    ${o.card ? `<details id="card"><summary>data card (README.md)</summary><div class="md card-body"></div></details>` : ""}
    <details><summary>config</summary><pre class="json">${esc(JSON.stringify(o.config, null, 2))}</pre></details>
    <details><summary>stats in the manifest</summary><pre class="json">${esc(JSON.stringify(o.stats, null, 2))}</pre></details>`;
  if (o.card) Render.into(document.querySelector("#card .card-body"), o.card.replace(/^---\n[\s\S]*?\n---\n/, "")); // YAML header off
  painted("overview");
  const s = await api("stats", { ds: key });
  document.getElementById("funnel").innerHTML = bars(s.funnel, key);
  document.getElementById("lengths").innerHTML = histogram(s.lengths);
  document.getElementById("by-domain").innerHTML = crossTable(s.by_domain, key, "domain");
  document.getElementById("by-source").innerHTML = crossTable(s.by_source, key, "source");
  painted("stats");
}

// --- rows ---------------------------------------------------------------------------------------------

const FILTERS = ["reason", "domain", "source", "part"];
const facetsCache = {};

async function rowsView(key, params) {
  setCrumbs([[key, dsLink(key)], ["rows", null]]);
  const offset = +(params.get("offset") || 0), limit = +(params.get("limit") || 50);
  if (!facetsCache[key]) facetsCache[key] = api("stats", { ds: key }).then((s) => s.facets);
  const q = Object.fromEntries(["reason", "domain", "source", "part", "keep", "disagree", "q", "sort", "order"].map((k) => [k, params.get(k) || ""]));
  const facets = await facetsCache[key];
  const select = (name) => {
    const values = facets[name] || {};
    if (Object.keys(values).length < 2 && !q[name]) return "";
    return `<label>${name} <select name="${name}"><option value="">all</option>${Object.entries(values).map(([v, n]) =>
      `<option value="${esc(v)}"${v === q[name] ? " selected" : ""}>${esc(v)} (${fmt(n)})</option>`).join("")}</select></label>`;
  };
  $main().innerHTML = `<form id="filters" class="filters">${FILTERS.map(select).join("")}
      <label>keep <select name="keep"><option value="">all</option><option value="1"${q.keep === "1" ? " selected" : ""}>kept</option><option value="0"${q.keep === "0" ? " selected" : ""}>not kept</option></select></label>
      <label title="traces where our verdict and the publisher's own label differ"><input type="checkbox" name="disagree" value="1"${q.disagree === "1" ? " checked" : ""}> disagrees with publisher</label>
      <label>sort <select name="sort"><option value="">as stored</option><option value="length:asc"${q.sort && q.order !== "desc" ? " selected" : ""}>shortest first</option><option value="length:desc"${q.order === "desc" ? " selected" : ""}>longest first</option></select></label>
      <input type="search" name="q" placeholder="search text" value="${esc(q.q)}" size="24"><button>search</button></form>
    <p id="count" class="muted">loading…</p><div id="table"></div><p id="pager" class="pager"></p>`;
  const form = document.getElementById("filters");
  const go = () => {
    const next = new URLSearchParams();
    if (params.get("limit")) next.set("limit", params.get("limit")); // the page size stays; the offset starts over
    for (const el of form.elements) {
      if (!el.name || !el.value || (el.type === "checkbox" && !el.checked)) continue;
      if (el.name === "sort") { const [s, o] = el.value.split(":"); next.set("sort", s); if (o === "desc") next.set("order", "desc"); } else next.set(el.name, el.value);
    }
    location.hash = dsLink(key, `/rows?${next}`);
  };
  form.addEventListener("change", (e) => { if (e.target.name !== "q") go(); });
  form.addEventListener("submit", (e) => { e.preventDefault(); go(); });
  const route = location.hash;
  let page;
  for (;;) { // a text search answers with what it found so far; ask again until the page is full or it is done
    page = await api("rows", { ds: key, ...q, offset, limit });
    if (location.hash !== route) return;
    drawRows(key, page, offset, limit, params);
    if (page.done || page.rows.length >= limit) break;
  }
  painted("rows");
}

function drawRows(key, page, offset, limit, params) {
  const searching = page.done ? "" : ` · searching, ${Math.round(100 * page.searched)}% read`;
  const what = page.done ? `${fmt(page.total)} rows` : `${fmt(page.total)}+ rows so far`;
  document.getElementById("count").textContent = page.total ? `rows ${fmt(offset + 1)}–${fmt(offset + page.rows.length)} of ${what}${searching}` : `no rows${searching}`;
  const rowHref = (r) => dsLink(key, `/row/${r.i}${listQuery(params)}`);
  document.getElementById("table").innerHTML = `<table class="grid rows" id="rows"><thead><tr><th>#</th><th>sample</th><th>domain</th><th>source</th><th>verdict</th><th class="num">length</th><th>problem</th><th>answer</th><th>detail</th></tr></thead><tbody>
    ${page.rows.map((r) => `<tr data-i="${r.i}" data-reason="${esc(r.reason ?? "")}" data-part="${esc(r.part)}">
      <td><a href="${rowHref(r)}">${r.i}</a></td><td>${r.sample ?? ""}</td><td>${esc(r.domain ?? "")}</td><td>${esc(r.source ?? "")}</td>
      <td>${badge(r.reason, r.keep)}${r.part !== "data" ? ` <span class="part">${esc(r.part)}</span>` : ""}</td><td class="num">${fmt(r.length)}</td>
      <td class="text"><a href="${rowHref(r)}">${esc(r.problem ?? "")}</a></td><td class="text">${esc(r.answer ?? "")}${r.gold != null ? ` <span class="muted">gold ${esc(r.gold)}</span>` : ""}</td>
      <td class="text muted">${esc(r.detail ?? r.where ?? "")}</td></tr>`).join("")}</tbody></table>`;
  const at = (o) => { const p = new URLSearchParams(params); p.set("offset", Math.max(0, o)); return dsLink(key, `/rows?${p}`); };
  document.getElementById("pager").innerHTML = `${offset > 0 ? `<a href="${at(offset - limit)}" id="prev">← previous</a>` : ""}
    ${offset + limit < page.total || !page.done ? `<a href="${at(offset + limit)}" id="next">next →</a>` : ""}`;
}

// --- one row ------------------------------------------------------------------------------------------

const LIST_KEYS = ["reason", "domain", "source", "part", "keep", "disagree", "q", "sort", "order"];

// the list a row was reached from (its filters), so the row view steps through that list
function listQuery(params) {
  const p = new URLSearchParams();
  for (const k of LIST_KEYS) if (params.get(k)) p.set(k, params.get(k));
  const qs = p.toString();
  return qs ? `?${qs}` : "";
}

const FIELD_LABEL = { problem: "problem", reasoning: "reasoning", answer: "answer", matched_text: "the benchmark item it matched", raw: "the input row as read" };
const VERDICT_KEYS = ["keep", "reject_reason", "reject_detail", "correct", "publisher_correct", "publisher_label", "readable", "language_ok", "checker", "sandbox", "finish_reason", "completion_tokens", "prompt_tokens", "num_tokens", "teacher", "latency_s", "error", "input", "row", "reason", "similarity", "matched_id", "matched_source"];
const ABOUT_KEYS = ["id", "sample", "source", "domain", "language", "answer"];

function fieldLabel(name) {
  if (FIELD_LABEL[name]) return FIELD_LABEL[name];
  const [k, role, part] = name.split(":"); // a conversation's k-th message
  return `#${k} ${role}${part ? ` · ${part}` : ""}`;
}

function fieldSection(name, text, marks, notes, prefix = "") {
  const id = `${prefix}f-${name.replaceAll(":", "-")}`;
  const sec = document.createElement("section");
  sec.className = "field";
  sec.dataset.field = name;
  sec.innerHTML = `<h3>${esc(fieldLabel(name))} <span class="muted">${fmt((text ?? "").length)} chars</span>
      ${(notes || []).map((n) => `<span class="note">${esc(n)}</span>`).join("")}
      <span class="toggle"><button type="button" data-mode="rendered" class="on">rendered</button><button type="button" data-mode="raw">raw</button></span></h3>
    <div class="body" id="${id}"></div>`;
  const body = sec.querySelector(".body");
  const mine = marks.filter((m) => m.field === name);
  Render.into(body, text, mine);
  sec.querySelectorAll(".toggle button").forEach((b) => b.addEventListener("click", () => {
    sec.querySelectorAll(".toggle button").forEach((x) => x.classList.toggle("on", x === b));
    Render.into(body, text, mine, b.dataset.mode);
  }));
  if (mine.length) {
    const legend = [...new Set(mine.map((m) => m.kind))].map((k) => `<span class="mk mk-${esc(k)}">${esc(k)}</span> ${mine.filter((m) => m.kind === k).length}`);
    sec.querySelector("h3").insertAdjacentHTML("beforeend", `<span class="legend">${legend.join(" ")}</span>`);
  }
  return sec;
}

async function rowView(key, i, params) {
  const list = listQuery(params);
  const r = await api("row", { ds: key, i, ...Object.fromEntries(new URLSearchParams(list.slice(1))) });
  setCrumbs([[key, dsLink(key)], ["rows", dsLink(key, `/rows${list}`)], [`#${i}`, null]]);
  const row = r.row, v = r.view;
  const kv = (keys) => keys.filter((k) => row[k] !== undefined && row[k] !== null).map((k) => `<dt>${esc(k)}</dt><dd>${esc(typeof row[k] === "number" && !Number.isInteger(row[k]) ? row[k].toFixed(3) : row[k])}</dd>`).join("");
  // in the list it was reached from (the filters in the URL), else in the directory's order
  const a = r.among;
  const [prev, next] = a ? [a.prev, a.next] : [i > 0 ? i - 1 : null, i + 1 < r.rows ? i + 1 : null];
  const where = a ? `<span class="muted" id="position">${fmt(a.position + 1)} of ${fmt(a.total)}${a.done ? "" : "+"} in this list</span>` : "";
  const nav = `${where} ${prev != null ? `<a href="${dsLink(key, `/row/${prev}${list}`)}" id="prev">← #${prev}</a>` : ""} ${next != null ? `<a href="${dsLink(key, `/row/${next}${list}`)}" id="next">#${next} →</a>` : ""}`;
  const elsewhere = r.links.map((l) => `<li><a href="${dsLink(l.ds, `/row/${l.i}`)}">${esc(l.ds)} #${l.i}</a> <span class="muted">${esc(l.stage)}</span></li>`).join("");
  $main().innerHTML = `<div class="row-head"><h1>${esc(key)} #${i} ${badge(row.reject_reason ?? row.reason ?? (r.part === "rejects" ? (row.error || "").split(":")[0] : null), row.keep ?? (r.part === "data" ? null : false))}
      ${r.part !== "data" ? `<span class="part">${esc(r.part)}</span>` : ""}</h1><span class="nav">${nav}</span></div>
    <div class="row-layout"><div id="fields"></div>
    <aside id="verdict"><h2>verdict</h2><dl>${kv(VERDICT_KEYS)}</dl><h2>row</h2><dl>${kv(ABOUT_KEYS)}</dl>
      ${row.id ? `<p><a href="#/prompt/${encodeURIComponent(row.id)}" id="prompt-link">all samples of this prompt</a></p>` : ""}
      ${elsewhere ? `<h2>in other stages</h2><ul id="links">${elsewhere}</ul>` : ""}
      <details><summary>every column</summary><pre class="json">${esc(JSON.stringify(row, null, 2))}</pre></details></aside></div>`;
  const fields = document.getElementById("fields");
  for (const [name, text] of Object.entries(v.fields)) {
    if (text == null && name !== "answer") continue;
    fields.appendChild(fieldSection(name, text, v.marks, v.notes[name]));
  }
  painted("row");
}

// --- one prompt ---------------------------------------------------------------------------------------

async function promptView(id) {
  const p = await api("prompt", { id });
  setCrumbs([["prompt", null], [id, null]]);
  $main().innerHTML = `<h1>prompt <code>${esc(p.id)}</code></h1><div id="problem" class="md"></div><div id="groups"></div>`;
  Render.into(document.getElementById("problem"), p.problem || "");
  const groups = document.getElementById("groups");
  for (const g of p.groups) {
    const sec = document.createElement("section");
    sec.className = "group";
    sec.dataset.ds = g.ds;
    const kept = g.items.filter((it) => it.keep === true).length;
    sec.innerHTML = `<h2><a href="${dsLink(g.ds)}">${esc(g.ds)}</a> <span class="stage">${esc(g.stage)}</span> <span class="muted">${g.rows} row${g.rows === 1 ? "" : "s"}${g.items.some((it) => it.keep != null) ? `, ${kept} kept` : ""}</span></h2><div class="samples"></div>`;
    const row = sec.querySelector(".samples");
    for (const it of g.items) {
      const card = document.createElement("article");
      card.className = "sample-card";
      card.dataset.sample = it.sample ?? "";
      card.dataset.reason = it.reason ?? (it.keep ? REASON_KEPT : "");
      card.innerHTML = `<header><a href="${dsLink(g.ds, `/row/${it.i}`)}">${it.sample != null ? `sample ${it.sample}` : `#${it.i}`}</a> ${badge(it.reason, it.keep)}
        ${it.tokens != null ? `<span class="muted">${fmt(it.tokens)} tokens</span>` : ""}${it.detail ? `<div class="muted">${esc(it.detail)}</div>` : ""}</header>`;
      for (const [name, text] of Object.entries(it.view.fields)) {
        if (name === "problem" || text == null) continue;
        const sec2 = fieldSection(name, text, it.view.marks, it.view.notes[name], `s${it.i}-`);
        sec2.classList.add(name.endsWith("reasoning") ? "scroll" : "short");
        card.appendChild(sec2);
      }
      row.appendChild(card);
    }
    groups.appendChild(sec);
  }
  painted("prompt");
}

// --- routing ------------------------------------------------------------------------------------------

async function route() {
  document.body.dataset.painted = "";
  const hash = location.hash.slice(1) || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  status("");
  try {
    if (parts[0] === "ds" && parts.length === 2) await overview(parts[1]);
    else if (parts[0] === "ds" && parts[2] === "rows") await rowsView(parts[1], params);
    else if (parts[0] === "ds" && parts[2] === "row") await rowView(parts[1], +parts[3], params);
    else if (parts[0] === "prompt") await promptView(parts.slice(1).join("/"));
    else await home();
  } catch (e) {
    $main().innerHTML = `<p class="error" id="error">${esc(e.message)}</p>`;
    painted("error");
  }
  window.scrollTo(0, 0);
}

// ← and → step through rows (and pages), as the links beside them do
window.addEventListener("keydown", (e) => {
  if (e.target.closest?.("input, select, textarea") || e.altKey || e.ctrlKey || e.metaKey) return;
  const link = document.getElementById(e.key === "ArrowLeft" ? "prev" : e.key === "ArrowRight" ? "next" : "");
  if (link) { e.preventDefault(); location.hash = link.getAttribute("href"); }
});

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
