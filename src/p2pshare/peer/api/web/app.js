// The web page of a peer: wires the DOM to the control API. Everything from the
// network is put in the page as text (textContent), never as markup.
import {
  actionsFor,
  applyDownload,
  formatEta,
  formatRate,
  formatSize,
  graphPoints,
  graphTop,
  mergeHits,
  percent,
  piecesStrip,
  providerShares,
  pushSample,
  sseParser,
  whyText,
} from "./logic.js";

const TOKEN_KEY = "p2pshare-token";
const GRAPH_WINDOW = 300; // seconds of rates on the graph
const STRIP_CELLS = 120;
const $ = (id) => document.getElementById(id);

// a trace for the measurements of bench/web.py: when each download view was drawn
const trace = { downloads: {}, firstHit: null, searchStarted: null };
window.p2pshareTrace = trace;

// -- talking to the control API ------------------------------------------------

class ApiError extends Error {}
class TokenRefused extends ApiError {}

function headers(extra = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function call(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const answer = await fetch(path, init);
  if (answer.status === 401) askToken("the peer refused the token");
  let doc = null;
  try {
    doc = await answer.json();
  } catch {
    doc = null;
  }
  if (!answer.ok) {
    const detail = doc && typeof doc.error === "string" ? doc.error : `HTTP ${answer.status}`;
    throw new ApiError(detail);
  }
  return doc;
}

/**
 * Read a server-sent event stream with fetch (EventSource cannot send the token):
 * calls onEvent(type, data) for each event until the stream ends or `signal` aborts.
 */
async function readEvents(path, onEvent, signal) {
  const answer = await fetch(path, { headers: headers(), signal });
  if (answer.status === 401) {
    askToken("the peer refused the token");
    throw new TokenRefused("the control API asks for its token");
  }
  if (!answer.ok) {
    let detail = `HTTP ${answer.status}`;
    try {
      detail = (await answer.json()).error ?? detail;
    } catch {
      /* not JSON */
    }
    throw new ApiError(detail);
  }
  const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
  const feed = sseParser((type, data) => onEvent(type, JSON.parse(data)));
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    feed(value);
  }
}

/** Keep a stream open: read it again a second after it ends or fails. */
function follow(path, onEvent, onState) {
  const run = async () => {
    for (;;) {
      try {
        onState("live");
        await readEvents(path, onEvent);
        onState("reconnecting");
      } catch (err) {
        if (err instanceof TokenRefused) {
          onState("waiting for the token"); // the token form reloads the page
          return;
        }
        onState(`reconnecting (${err.message})`);
      }
      await new Promise((done) => setTimeout(done, 1000));
    }
  };
  run();
}

function askToken(why) {
  const form = $("token-form");
  form.hidden = false;
  $("token-error").textContent = sessionStorage.getItem(TOKEN_KEY) ? why : "";
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  location.reload();
});

// -- small DOM helpers -------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

/** `fn` run once, `ms` after the first of a burst of calls (50 downloads ending at
 * once ask for one reload of the shared files, not 50). */
function coalesced(fn, ms) {
  let timer = 0;
  return () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = 0;
      fn();
    }, ms);
  };
}

/** Reload a view's list if it is on screen; else when it is shown next. */
function whenShown(view, load) {
  return coalesced(() => {
    if (!$(`view-${view}`).hidden) load();
  }, 300);
}

function say(id, text) {
  $(id).textContent = text;
}

// -- views -------------------------------------------------------------------------

function showView() {
  const wanted = (location.hash || "#search").slice(1);
  const known = ["search", "transfers", "shared", "subscriptions", "network"];
  const view = known.includes(wanted) ? wanted : "search";
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.dataset.view !== view;
  }
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "shared") loadFiles();
  if (view === "subscriptions") loadSubscriptions();
}
window.addEventListener("hashchange", showView);

// -- search ------------------------------------------------------------------------

let searching = null;

$("search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("q").value.trim();
  if (!q) return;
  searching?.abort();
  const abort = new AbortController();
  searching = abort;
  trace.searchStarted = performance.now();
  trace.firstHit = null;
  let hits = [];
  const states = [];
  const body = $("hits").tBodies[0];
  body.replaceChildren();
  say("search-state", `searching for “${q}”…`);
  const params = new URLSearchParams({ q });
  try {
    await readEvents(
      `/v1/search/stream?${params}`,
      (type, doc) => {
        if (type === "hits") {
          if (doc.hits.length) {
            hits = mergeHits(hits, doc.hits);
            renderHits(hits);
            if (trace.firstHit === null) trace.firstHit = performance.now();
          }
          if (doc.state) states.push(`${doc.source}: ${doc.state}`);
          say("search-state", `${hits.length} found so far (${states.join(", ")})`);
        } else if (type === "done") {
          say("search-state", `${hits.length} found (${states.join(", ")})`);
        }
      },
      abort.signal,
    );
  } catch (err) {
    if (err.name !== "AbortError") say("search-state", `search failed: ${err.message}`);
  }
});

function renderHits(hits) {
  const rows = hits.map((hit) => {
    const button = el("button", {
      type: "button",
      text: "Download",
      "aria-label": `Download ${hit.name}`,
      onclick: () => startDownload(hit, button),
    });
    const providers = hit.providers.map((p) => p.address).join(", ");
    return el(
      "tr",
      {},
      el("td", { class: "name", text: hit.name }),
      el("td", { class: "num", text: formatSize(hit.size) }),
      el("td", { class: "num", text: String(hit.providers.length), title: providers }),
      el("td", {}, button),
    );
  });
  $("hits").tBodies[0].replaceChildren(...rows);
}

async function startDownload(hit, button) {
  const outDir = $("out-dir").value.trim();
  const body = { content_id: hit.content_id };
  if (outDir) body.out_dir = outDir;
  button.disabled = true;
  try {
    const view = await call("POST", "/v1/downloads", body);
    onDownload(view);
    say("search-state", `downloading ${hit.name}: see Transfers`);
    button.textContent = "Started";
  } catch (err) {
    button.disabled = false;
    say("search-state", `cannot download ${hit.name}: ${err.message}`);
  }
}

// -- transfers ---------------------------------------------------------------------

const downloads = new Map();
const cards = new Map();
const dirty = new Set();
let frame = 0;

function onDownload(view) {
  const before = downloads.get(view.content_id);
  if (!applyDownload(downloads, view)) return;
  dirty.add(view.content_id);
  if (!frame) frame = requestAnimationFrame(drawDownloads);
  if (before === undefined || before.state !== view.state) {
    if (view.state === "complete") refreshFiles();
    refreshSubscriptions();
  }
}

function drawDownloads() {
  frame = 0;
  for (const cid of dirty) drawDownload(downloads.get(cid));
  dirty.clear();
  const running = [...downloads.values()].filter((d) => d.state !== "complete").length;
  say("transfers-count", running ? `(${running})` : "");
  $("transfers-empty").hidden = downloads.size > 0;
}

function makeCard(cid) {
  const parts = {
    name: el("h3", { class: "name" }),
    bar: el("progress", { max: "100", value: "0" }),
    line: el("p", { class: "line" }),
    why: el("p", { class: "why", role: "status" }),
    strip: el("canvas", { class: "strip", width: String(STRIP_CELLS), height: "1" }),
    providers: el("ul", { class: "providers" }),
    actions: el("div", { class: "actions" }),
  };
  parts.bar.id = `bar-${cid.slice(0, 16)}`;
  parts.strip.setAttribute("role", "img");
  const label = el("label", { for: parts.bar.id, class: "visually-hidden", text: "Progress" });
  const card = el(
    "li",
    { class: "card", "data-cid": cid },
    parts.name,
    label,
    parts.bar,
    parts.line,
    parts.why,
    parts.strip,
    parts.providers,
    parts.actions,
  );
  parts.card = card;
  parts.actionState = "";
  $("transfers").prepend(card);
  cards.set(cid, parts);
  return parts;
}

function drawDownload(d) {
  const parts = cards.get(d.content_id) ?? makeCard(d.content_id);
  const name = d.name || d.content_id.slice(0, 16);
  parts.card.dataset.state = d.state;
  parts.name.textContent = name;
  const pct = percent(d.bytes_done, d.size);
  parts.bar.value = pct;
  parts.bar.setAttribute("aria-valuetext", `${pct}%`);
  parts.bar.previousSibling.textContent = `Progress of ${name}`;
  const running = d.state === "downloading" || d.state === "starting";
  parts.line.textContent = [
    `${pct}%`,
    `${formatSize(d.bytes_done)} of ${formatSize(d.size)}`,
    running ? `rate ${formatRate(d.rate)}` : d.state,
    running ? `time left ${formatEta(d.size - d.bytes_done, d.rate)}` : "",
  ]
    .filter(Boolean)
    .join(" · ");
  parts.why.textContent = whyText(d);
  drawStrip(parts.strip, d);
  const shares = providerShares(d.delivered);
  const used = new Set(shares.map(([a]) => a));
  for (const address of d.providers) if (!used.has(address)) shares.push([address, 0]);
  parts.providers.replaceChildren(
    ...shares.map(([address, bytes]) =>
      el("li", {
        text: `${address}: ${formatSize(bytes)}${d.banned.includes(address) ? " (banned)" : ""}`,
      }),
    ),
  );
  const actions = `${actionsFor(d.state).join(",")} ${name}`; // labels name the file
  if (actions !== parts.actionState) {
    parts.actionState = actions;
    parts.actions.replaceChildren(
      ...actionsFor(d.state).map((action) =>
        el("button", {
          type: "button",
          text: action[0].toUpperCase() + action.slice(1),
          "aria-label": `${action[0].toUpperCase() + action.slice(1)} ${name}`,
          onclick: () => act(action, d.content_id),
        }),
      ),
    );
  }
  (trace.downloads[d.content_id] ??= []).push([Date.now(), d.bytes_done, d.state]);
}

// the strip's colours, read once per colour scheme: reading styles for each of 50
// strips at once forced a style recalculation each (a 190 ms long task)
let colours = null;
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  colours = null;
  for (const d of downloads.values()) dirty.add(d.content_id);
  if (!frame) frame = requestAnimationFrame(drawDownloads);
});

function stripColours() {
  if (colours === null) {
    const style = getComputedStyle(document.documentElement);
    colours = {};
    for (const key of ["verified", "partial", "flight", "missing"]) {
      colours[key] = style.getPropertyValue(`--${key}`).trim();
    }
  }
  return colours;
}

function drawStrip(canvas, d) {
  const cells = piecesStrip(d.have, d.pieces, d.in_flight, STRIP_CELLS);
  const n = cells.length;
  if (canvas.width !== Math.max(n, 1)) canvas.width = Math.max(n, 1);
  const ctx = canvas.getContext("2d");
  const colours = stripColours();
  cells.forEach((cell, i) => {
    ctx.fillStyle = colours[cell];
    ctx.fillRect(i, 0, 1, 1);
  });
  const count = (what) => cells.filter((c) => c === what).length;
  canvas.setAttribute(
    "aria-label",
    `pieces: ${count("verified")} of ${n} parts verified, ${count("flight")} in flight`,
  );
}

async function act(action, cid) {
  try {
    onDownload(await call("POST", `/v1/downloads/${cid}/${action}`));
  } catch (err) {
    const parts = cards.get(cid);
    if (parts) parts.why.textContent = `${action} failed: ${err.message}`;
  }
}

// -- shared files ------------------------------------------------------------------

const refreshFiles = whenShown("shared", () => loadFiles());

async function loadFiles() {
  let doc;
  try {
    doc = await call("GET", "/v1/files");
  } catch {
    return;
  }
  const rows = doc.files.map((f) => {
    const served = (doc.served ?? {})[f.content_id] ?? 0;
    const times = f.size > 0 ? served / f.size : 0;
    const id = el("code", { class: "cid", text: f.content_id });
    const copy = el("button", {
      type: "button",
      text: "Copy",
      "aria-label": `Copy the content id of ${f.name}`,
      onclick: () => copyText(f.content_id, copy),
    });
    return el(
      "tr",
      {},
      el("td", { class: "name", text: f.name }),
      el("td", { class: "num", text: formatSize(f.size) }),
      el("td", {}, id, " ", copy),
      el("td", { class: "num", text: times ? times.toFixed(1) : "0" }),
    );
  });
  $("files").tBodies[0].replaceChildren(...rows);
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(button.previousSibling.previousSibling);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    button.textContent = "Selected: Ctrl+C";
  }
}

// -- subscriptions -----------------------------------------------------------------

let subsPending = false;
const refreshSubscriptions = whenShown("subscriptions", () => loadSubscriptions());

async function loadSubscriptions() {
  if (subsPending) return;
  subsPending = true;
  try {
    const doc = await call("GET", "/v1/subscriptions");
    $("subs").replaceChildren(...doc.subscriptions.map(drawSubscription));
  } catch {
    /* shown by the next attempt */
  } finally {
    subsPending = false;
  }
}

function drawSubscription(sub) {
  const fetched = sub.fetched.map((f) => el("li", { text: `${f.name || f.content_id.slice(0, 16)} (${f.state})` }));
  const events = (sub.events || []).slice(-5).map((e) => el("li", { text: `${e.action} ${e.name} ${e.detail}` }));
  const how = [sub.two_way ? "two-way" : "one-way", sub.mirror ? "mirror" : "removals kept"];
  how.push(`${(sub.kept || []).length} versions kept (${sub.versions} per file)`);
  return el(
    "li",
    { class: "card" },
    el("h3", { class: "name", text: sub.query }),
    el("p", { text: `into ${sub.into} · id ${sub.id}` }),
    el("p", { text: how.join(" · ") }),
    (sub.conflicts || []).length ? el("p", { text: `conflict copies: ${sub.conflicts.join(", ")}` }) : el("span"),
    events.length ? el("ul", { class: "fetched" }, ...events) : el("span"),
    fetched.length ? el("ul", { class: "fetched" }, ...fetched) : el("p", { text: "nothing fetched yet" }),
    el("button", {
      type: "button",
      text: "Remove",
      "aria-label": `Remove the subscription to ${sub.query}`,
      onclick: async () => {
        try {
          await call("DELETE", `/v1/subscriptions/${encodeURIComponent(sub.id)}`);
          say("sub-state", `removed ${sub.query}`);
        } catch (err) {
          say("sub-state", `cannot remove: ${err.message}`);
        }
        loadSubscriptions();
      },
    }),
  );
}

$("sub-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const query = $("sub-query").value.trim();
  try {
    await call("POST", "/v1/subscriptions", {
      query,
      into: $("sub-into").value.trim(),
      mirror: $("sub-mirror").checked,
    });
    say("sub-state", `subscribed to ${query}`);
    $("sub-query").value = "";
  } catch (err) {
    say("sub-state", `cannot subscribe: ${err.message}`);
  }
  loadSubscriptions();
});

// -- network -----------------------------------------------------------------------

const history = [];
let lastFiles = -1;

function onStatus(s) {
  say("peer-line", `peer ${s.peer_id || "(no id)"} at ${s.address} · tracker ${s.tracker.state}`);
  const facts = [
    ["Tracker", `${s.tracker.url ?? "none"}: ${s.tracker.state}`],
    ["Address (other peers dial it)", s.address],
    ["Reachability", `${s.neighbours.length} neighbours; ${s.overlay.queries_relayed} queries relayed; tracker ${s.tracker.state}`],
    ["Bytes served", formatSize(s.bytes_served)],
    ["Bytes received", formatSize(s.bytes_received)],
    ["Shared", `${s.files} files, ${formatSize(s.shared_bytes)}`],
    ["Private network", s.private_network ? "on" : "off"],
    ["TLS between peers", s.tls ? "on" : "off"],
    ["Version", s.version],
  ];
  $("net").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  $("neighbours").replaceChildren(...s.neighbours.map((n) => el("li", { text: n })));
  const now = performance.now() / 1000;
  const rates = pushSample(history, { t: now, served: s.bytes_served, received: s.bytes_received }, GRAPH_WINDOW);
  const top = graphTop(rates);
  const box = { now, windowSeconds: GRAPH_WINDOW, width: 600, height: 160, top };
  $("graph-up").setAttribute("points", graphPoints(rates, "up", box));
  $("graph-down").setAttribute("points", graphPoints(rates, "down", box));
  const last = rates[rates.length - 1];
  say("rate-up", formatRate(last?.up ?? 0));
  say("rate-down", formatRate(last?.down ?? 0));
  say("rate-top", formatRate(top));
  if (s.files !== lastFiles) {
    lastFiles = s.files;
    refreshFiles();
  }
}

// -- start -------------------------------------------------------------------------

showView();
follow(
  "/v1/status/events",
  (type, doc) => {
    if (type === "status") onStatus(doc);
    else if (type === "download") onDownload(doc);
  },
  (state) => document.body.setAttribute("data-live", state),
);
