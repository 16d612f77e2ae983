"use strict";
// The shmkit status page.  Everything shown comes from one document, status.json,
// fetched every REFRESH_MS; rates and "held for" are differences between successive
// documents, kept in this page (nothing is fetched from anywhere else).
// Every name from shared memory is untrusted text: it only ever goes into textContent.

const BASE = document.querySelector('meta[name="shmkit-base"]').content;
const REFRESH_MS = Math.max(100, Number(
  document.querySelector('meta[name="shmkit-refresh-ms"]').content) || 1000);
const HISTORY_S = 300;          // the charts cover the last five minutes
const QUERY = location.search;  // ?zone=...&match=... are passed on to status.json

const rates = new Map();        // key -> {last: [t, v], points: [[t, rate], ...]}
const holds = new Map();        // lock key -> {pid, acquisitions, since}
let lastDoc = null;
let lastOk = 0;
let pending = null;

// -- small helpers -----------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "onclick") e.addEventListener("click", v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0, v = n;
  while (Math.abs(v) >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

function num(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US");
}

function rateText(r) {
  if (r === null || r === undefined) return "–";
  if (r >= 1e6) return `${(r / 1e6).toFixed(2)}M/s`;
  if (r >= 1e3) return `${(r / 1e3).toFixed(1)}k/s`;
  return `${r < 10 ? r.toFixed(1) : Math.round(r)}/s`;
}

function ago(seconds) {
  if (seconds < 0) seconds = 0;
  if (seconds < 1) return "just now";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

function when(t) {
  return t ? new Date(t * 1000).toLocaleString() : "–";
}

function pct(used, total) {
  return total ? Math.min(100, 100 * used / total) : 0;
}

function bar(percent, title) {
  const cls = percent >= 95 ? "bar err" : percent >= 80 ? "bar warn" : "bar";
  const fill = el("span", {});
  fill.style.width = `${percent.toFixed(1)}%`;  // CSSOM: allowed by the page's CSP
  return el("div", {class: cls, title: title || `${percent.toFixed(1)}%`}, fill);
}

function badge(text, cls) {
  return el("span", {class: `badge ${cls || ""}`}, text);
}

// -- rates over time ------------------------------------------------------------------------
function track(key, t, value) {
  let r = rates.get(key);
  if (!r) { r = {last: null, points: []}; rates.set(key, r); }
  r.seen = t;
  if (r.last && t > r.last[0]) {
    const dv = value - r.last[1];
    if (dv >= 0) r.points.push([t, dv / (t - r.last[0])]);
    else r.points.length = 0;  // the object was re-created: start again
  }
  if (!r.last || t > r.last[0]) r.last = [t, value];
  while (r.points.length && r.points[0][0] < t - HISTORY_S) r.points.shift();
  return r.points.length ? r.points[r.points.length - 1][1] : null;
}

function series(key) {
  const r = rates.get(key);
  return r ? r.points : [];
}

function forget(now) {
  for (const [k, r] of rates) if (r.seen < now - HISTORY_S) rates.delete(k);
}

function chart(keys, labels, now) {
  const w = 180, h = 34;
  const all = keys.map(series);
  let max = 0, oldest = now;
  for (const s of all) for (const p of s) { max = Math.max(max, p[1]); oldest = Math.min(oldest, p[0]); }
  // the window grows with the history this page has, from one minute to HISTORY_S
  const span = Math.min(HISTORY_S, Math.max(60, now - oldest));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const frame = document.createElementNS(svg.namespaceURI, "rect");
  frame.setAttribute("x", 0.5); frame.setAttribute("y", 0.5);
  frame.setAttribute("width", w - 1); frame.setAttribute("height", h - 1);
  frame.setAttribute("fill", "#fafbfc"); frame.setAttribute("stroke", "#e3e6eb");
  svg.append(frame);
  all.forEach((s, i) => {
    if (s.length < 2) return;
    const pts = s.map(([t, v]) =>
      `${(w - 2 - (now - t) / span * (w - 4)).toFixed(1)},` +
      `${(h - 3 - (max ? v / max : 0) * (h - 7)).toFixed(1)}`);
    const line = document.createElementNS(svg.namespaceURI, "polyline");
    line.setAttribute("class", `s${i}`);
    line.setAttribute("points", pts.join(" "));
    svg.append(line);
  });
  const legend = el("div", {class: "legend"},
    labels.map((l, i) => el("span", {class: `k${i}`}, `${i ? " · " : ""}${l}`)),
    ` · max ${rateText(max)} · last ${ago(span)}`);
  return el("div", {}, svg, legend);
}

// -- per kind: the facts a person wants ------------------------------------------------------
function objectFacts(zone, o, now) {
  const s = o.statistics;
  const key = `${zone}/${o.name}`;
  if (o.error) return {facts: [badge("error", "err"), " ", o.error], chart: null};
  if (!s) {
    const note = {raw: "raw allocation", value: "opened with its type", array:
                  "opened with its type", barrier: "opened with its parties",
                  ndarray: "NumPy is not installed where the page runs"}[o.type] || "";
    return {facts: [el("span", {class: "muted"}, note)], chart: null};
  }
  switch (o.type) {
    case "queue": {
      const put = track(`${key}:puts`, now, s.puts), get = track(`${key}:gets`, now, s.gets);
      const full = Math.max(pct(s.bytes_used, s.capacity),
                            s.max_messages ? pct(s.depth, s.max_messages) : 0);
      return {facts: [
        el("b", {class: "depth"}, `depth ${num(s.depth)}`),
        ` · ${bytes(s.bytes_used)} of ${bytes(s.capacity)} · put ${rateText(put)}` +
        ` · get ${rateText(get)} · ${num(s.waits)} waits · ${num(s.drops)} dropped` +
        ` · ${num(s.members)} handle(s)` +
        (s.unfinished_tasks ? ` · ${num(s.unfinished_tasks)} unfinished task(s)` : "") +
        (s.redeliveries ? ` · ${num(s.redeliveries)} redelivered` : "") +
        (s.abandoned_tasks ? ` · ${num(s.abandoned_tasks)} abandoned` : ""),
        s.delivery === "at-least-once" ? [" ", badge("at-least-once", "info")] : null,
        s.closed ? [" ", badge("closed", "info")] : null,
        bar(full)],
        chart: chart([`${key}:puts`, `${key}:gets`], ["put/s", "get/s"], now)};
    }
    case "dict": {
      const hit = track(`${key}:hits`, now, s.hits), miss = track(`${key}:misses`, now, s.misses);
      const lookups = s.hits + s.misses;
      const ratio = lookups ? `${(100 * s.hits / lookups).toFixed(1)}%` : "–";
      const recent = hit !== null && hit + miss > 0 ?
        ` (now ${(100 * hit / (hit + miss)).toFixed(1)}%)` : "";
      return {facts: [
        el("b", {}, `${num(s.items)} items`),
        ` · hit ratio ${ratio}${recent} · ${num(s.evictions)} evicted · ` +
        `${num(s.expirations)} expired · ${bytes(s.free_space)} free of ${bytes(s.capacity)}` +
        (s.recoveries ? ` · ${num(s.recoveries)} recoveries` : ""),
        bar(pct(s.capacity - s.free_space, s.capacity))],
        chart: chart([`${key}:hits`, `${key}:misses`], ["hits/s", "misses/s"], now)};
    }
    case "lock": case "rlock": {
      track(`${key}:acquisitions`, now, s.acquisitions);
      track(`${key}:contentions`, now, s.contentions);
      let holder;
      if (!s.owner_pid) {
        holds.delete(key);
        holder = [badge("free", "ok")];
      } else {
        let h = holds.get(key);
        if (!h || h.pid !== s.owner_pid || h.acquisitions !== s.acquisitions) {
          h = {pid: s.owner_pid, acquisitions: s.acquisitions, since: now};
          holds.set(key, h);
        }
        const held = now > h.since ? ` for ≥ ${ago(now - h.since)}` : "";
        holder = s.owner_alive === false ?
          [badge("holder dead", "dead"), ` held by pid ${s.owner_pid} (dead)${held}`] :
          [badge("held", "warn"), ` by pid ${s.owner_pid}` +
           (s.owner_tid ? ` tid ${s.owner_tid}` : "") + held];
      }
      return {facts: [holder, ` · ${num(s.waiters)} waiting · ${num(s.acquisitions)} acquired` +
        ` · ${num(s.contentions)} contended · ${num(s.owner_deaths)} owner-death recoveries`],
        chart: chart([`${key}:acquisitions`, `${key}:contentions`],
                     ["acquires/s", "contended/s"], now)};
    }
    case "rwlock":
      return {facts: [s.writer_pid ? [badge("writer", "warn"), ` pid ${s.writer_pid}`] :
                      `${num(s.readers)} reader(s) in ${num(s.reader_processes)} process(es)`,
        ` · ${num(s.waiters)} waiting · ${num(s.owner_deaths)} writer deaths · ` +
        `${num(s.reader_deaths)} reader deaths`], chart: null};
    case "semaphore":
      return {facts: [el("b", {}, `value ${num(s.value)}`), ` of ${num(s.initial)} · ` +
        `${num(s.waiters)} waiting · ${num(s.acquisitions)} acquired` +
        (s.undo ? ` · ${num(s.holders)} holder(s), ${num(s.reclaimed)} reclaimed` : "")],
        chart: null};
    case "event":
      return {facts: [s.is_set ? badge("set", "ok") : badge("clear"),
        ` · ${num(s.waiters)} waiting · ${num(s.sets)} sets`], chart: null};
    case "condition":
      return {facts: [`${num(s.waiters)} waiting · ${num(s.notifies)} notifies · ` +
        `lock ${s.lock}`], chart: null};
    case "counter":
      track(`${key}:value`, now, s.value);
      return {facts: [el("b", {}, num(s.value))],
              chart: chart([`${key}:value`], ["change/s"], now)};
    case "board": case "config": {
      const rate = track(`${key}:version`, now, s.version);
      const since = s.last_publish_ns ? ago(now - s.last_publish_ns / 1e9) : null;
      const last = since === null ? "nothing published" :
        since === "just now" ? "published just now" : `last ${since} ago`;
      const writer = !s.writer_pid ? "no writer" : s.writer_alive ?
        [`writer pid ${s.writer_pid} `, badge("alive", "ok")] :
        [`writer pid ${s.writer_pid} `, badge("dead", "dead")];
      return {facts: [el("b", {}, `version ${num(s.version)}`),
        ` · ${rateText(rate)} · ${last} · `, writer,
        ` · ${num(s.zero_copy_readers_in_use)} of ${num(s.zero_copy_readers)} zero-copy ` +
        `readers · ${num(s.takeovers)} takeovers`],
        chart: chart([`${key}:version`], ["publishes/s"], now)};
    }
    case "ndarray":
      return {facts: [`${s.dtype} [${s.shape.join(" × ")}]`], chart: null};
    default:
      return {facts: [JSON.stringify(s)], chart: null};
  }
}

// -- sections ------------------------------------------------------------------------------
function renderOverview(doc) {
  const box = document.getElementById("overview");
  const shm = doc.dev_shm;
  const zones = doc.zones.length;
  const bad = doc.zones.filter(z => z.state !== "ready").length;
  const objects = doc.zones.reduce((n, z) => n + z.objects.length, 0);
  const tiles = [
    el("div", {class: "tile"}, el("div", {class: "label"}, "zones"),
       el("div", {class: "big"}, String(zones)),
       bad ? badge(`${bad} not ready`, "err") : badge("all ready", "ok")),
    el("div", {class: "tile"}, el("div", {class: "label"}, "objects"),
       el("div", {class: "big"}, String(objects))),
    el("div", {class: "tile"}, el("div", {class: "label"}, "segments"),
       el("div", {class: "big"}, String(doc.segments.length)),
       `${doc.segments.filter(s => s.kind).length} shmkit's`),
  ];
  if (shm.size !== undefined) {
    tiles.push(el("div", {class: "tile"}, el("div", {class: "label"}, shm.path),
      el("div", {class: "big"}, `${bytes(shm.free)} free`), `of ${bytes(shm.size)}`,
      bar(shm.used_percent)));
  }
  box.replaceChildren(...tiles);
}

function renderAlerts(doc) {
  const box = document.getElementById("alerts");
  if (!doc.alerts.length) { box.replaceChildren(); return; }
  box.replaceChildren(el("ul", {}, doc.alerts.map(a =>
    el("li", {class: a.level}, el("b", {}, a.where), a.text))));
}

function renderZone(z, now, openState) {
  const ready = z.state === "ready";
  const card = el("div", {class: ready ? "card zone" : "card zone bad", "data-zone": z.name});
  const head = el("div", {class: "zonehead"}, el("h3", {class: "zonename"}, z.name),
    badge(z.state, ready ? "ok" : ["initialising", "gone", "not-found"].includes(z.state) ?
          "warn" : "err"),
    z.backend !== "posix" ? badge(z.backend, "info") : null);
  card.append(head);
  if (!ready) {
    if (z.error) card.append(el("div", {class: "zoneerror"}, z.error));
    if (z.problems.length) card.append(el("ul", {class: "problems"},
      z.problems.map(p => el("li", {}, p))));
    return card;
  }
  const a = z.allocator, h = z.header;
  head.append(...[
    el("span", {class: "fact"}, "size ", el("b", {}, bytes(h.size)),
       h.max_size > h.size ? ` (grows to ${bytes(h.max_size)})` : ""),
    el("span", {class: "fact"}, "used ", el("b", {}, `${a.used_percent}%`),
       ` · ${bytes(a.free_bytes)} free · largest ${bytes(a.largest_free_bytes)}`),
    bar(a.used_percent),
    el("span", {class: "fact"}, `${z.objects.length} object(s)`),
    a.recoveries ? badge(`${a.recoveries} recoveries`, "warn") : null,
    a.page_fails ? badge(`${a.page_fails} failed allocations`, "warn") : null].filter(x => x));
  if (z.objects.length) {
    const rows = z.objects.map(o => {
      const f = objectFacts(z.name, o, now);
      return el("tr", {"data-object": o.name, class: o.error ? "bad" : ""},
        el("td", {class: "name"}, o.name), el("td", {}, o.type),
        el("td", {class: "num"}, bytes(o.size)), el("td", {class: "facts"}, f.facts),
        el("td", {}, f.chart));
    });
    card.append(el("div", {class: "scroll"}, el("table", {class: "objects"},
      el("tr", {}, el("th", {}, "object"), el("th", {}, "kind"), el("th", {class: "num"}, "size"),
         el("th", {}, "now"), el("th", {}, "rates")), rows)));
  }
  const slabKey = `slab:${z.name}`;
  const details = el("details", {"data-key": slabKey, open: openState.has(slabKey)},
    el("summary", {}, `allocator: ${num(a.used_pages)} of ${num(a.total_pages)} pages used, ` +
       `${num(a.page_reqs)} page-run requests, ${num(a.page_fails)} failed`),
    el("table", {class: "slabs"},
      el("tr", {}, ["chunk", "pages", "used", "free", "requests", "failures"].map(
        t => el("th", {class: "num"}, t))),
      z.slab_classes.map(c => el("tr", {},
        [bytes(c.size), num(c.pages), num(c.used), num(c.free), num(c.reqs), num(c.fails)].map(
          t => el("td", {class: "num"}, t))))));
  card.append(details);
  return card;
}

function renderZones(doc, now) {
  const box = document.getElementById("zones");
  const openState = new Set([...box.querySelectorAll("details[open]")].map(d => d.dataset.key));
  const title = el("h2", {}, "Zones ", el("span", {class: "muted"}, `(${doc.zones.length})`));
  box.replaceChildren(title, ...doc.zones.map(z => renderZone(z, now, openState)));
}

function renderSegments(doc) {
  const t = document.getElementById("segments");
  document.getElementById("segcount").textContent = `(${doc.segments.length})`;
  const head = el("tr", {}, ["type", "name / key", "id", "owner", "perms", "size", "attached",
    "creator", "lifecycle", "status", "shmkit", ""].map(h => el("th", {}, h)));
  const rows = doc.segments.map(s => {
    // "dest": a SysV segment already removed, destroyed when its last user detaches
    const status = s.status.length ? s.status.map(x => badge(x === "dest" ? "removed" : x,
      x === "stale" ? "warn" : x === "in-use" ? "ok" : "info")) : "–";
    const act = doc.actions.enabled && s.kind && !s.status.includes("in-use") ?
      el("button", {onclick: () => act_rm(s)}, "remove") : null;
    return el("tr", {"data-segment": s.display_name},
      el("td", {}, s.backend), el("td", {class: "name"}, s.display_name),
      el("td", {}, s.shmid === null ? "–" : String(s.shmid)), el("td", {}, s.owner),
      el("td", {}, s.perms), el("td", {class: "num", title: `${s.size} bytes`}, bytes(s.size)),
      el("td", {class: "num"}, String(s.nattch)),
      el("td", {}, s.cpid ? `${s.cpid}${s.creator_alive === false ? " (gone)" : ""}` : "–"),
      el("td", {}, s.lifecycle || "–"), el("td", {}, status), el("td", {}, s.kind || "–"),
      el("td", {}, act));
  });
  t.replaceChildren(head, ...rows);
}

// -- actions (only when the server was started with them and a token) ----------------------
function token() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) sessionStorage.setItem("shmkit-token", decodeURIComponent(m[1]));
  let t = sessionStorage.getItem("shmkit-token");
  if (!t) {
    t = prompt("Token for actions (printed by shmkit serve):") || "";
    if (t) sessionStorage.setItem("shmkit-token", t);
  }
  return t;
}

async function post(path, body) {
  const r = await fetch(BASE + path, {method: "POST", cache: "no-store",
    headers: {"Content-Type": "application/json", "X-Shmkit-Token": token()},
    body: JSON.stringify(body)});
  const text = await r.text();
  let msg = text;
  try { msg = JSON.parse(text).message || text; } catch (e) { /* plain text */ }
  showBanner(`${r.ok ? "done" : "refused"}: ${msg}`, !r.ok);
  if (r.status === 403) sessionStorage.removeItem("shmkit-token");
  poll(true);
}

function act_rm(s) {
  if (!confirm(`Remove ${s.backend} segment ${s.display_name}?`)) return;
  post("/actions/rm", s.backend === "posix" ? {name: s.name} : {shmid: s.shmid});
}

function act_gc(dry) {
  post("/actions/gc", {dry_run: dry});
}

function renderActions(doc) {
  const box = document.getElementById("actions");
  box.hidden = !doc.actions.enabled;
  if (!doc.actions.enabled || box.childElementCount) return;
  box.append(el("h2", {}, "Actions"),
    el("button", {onclick: () => act_gc(true)}, "gc --dry-run"), " ",
    el("button", {onclick: () => act_gc(false)}, "gc"),
    el("span", {class: "muted"}, " removes what its lifecycle says should be gone"));
}

function showBanner(text, error) {
  const b = document.getElementById("banner");
  b.textContent = text;
  b.className = error ? "banner error" : "banner";
  b.hidden = !text;
}

// -- the loop ----------------------------------------------------------------------------------
function render(doc) {
  const now = doc.time;
  document.getElementById("host").textContent = `on ${doc.host}`;
  renderOverview(doc);
  renderAlerts(doc);
  renderActions(doc);
  renderZones(doc, now);
  renderSegments(doc);
  forget(now);
  document.title = doc.alerts.some(a => a.level === "error") ?
    `(!) shmkit on ${doc.host}` : `shmkit on ${doc.host}`;
}

function freshness() {
  const dot = document.getElementById("live");
  const upd = document.getElementById("updated");
  if (!lastDoc) return;
  const age = (Date.now() - lastOk) / 1000;
  const stale = age > Math.max(5, 3 * REFRESH_MS / 1000);
  dot.className = stale ? "dot stale" : "dot live";
  upd.textContent = `updated ${new Date(lastDoc.time * 1000).toLocaleTimeString()}` +
    (stale ? ` — no answer for ${ago(age)}` : ` · every ${REFRESH_MS / 1000} s`);
}

async function poll(once) {
  if (pending && !once) return;
  try {
    const r = await fetch(BASE + "/status.json" + QUERY, {cache: "no-store"});
    if (!r.ok) throw new Error(`status.json: HTTP ${r.status}: ${(await r.text()).slice(0, 200)}`);
    const doc = await r.json();
    lastDoc = doc;
    lastOk = Date.now();
    render(doc);
    const b = document.getElementById("banner");
    if (b.dataset.source === "poll") { b.hidden = true; b.dataset.source = ""; }
  } catch (e) {
    showBanner(`cannot read status: ${e.message}`, true);
    document.getElementById("banner").dataset.source = "poll";
  }
  freshness();
  if (!once) pending = setTimeout(() => { pending = null; poll(); }, REFRESH_MS);
}

document.getElementById("json-link").href = BASE + "/status.json" + QUERY;
document.getElementById("metrics-link").href = BASE + "/metrics";
setInterval(freshness, 1000);
poll();
