// The web page's own logic, without the DOM: formatting, parsing server-sent events,
// merging search hits, the state of downloads built from events, the pieces strip
// and the rate graph. Tested by tests/web/logic.test.mjs with `node --test`.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** A size in bytes as people read it: 0 B, 1023 B, 1.5 KiB, 12 MiB, 3.25 GiB. */
export function formatSize(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return "?";
  let n = bytes;
  let unit = 0;
  while (n >= 1024 && unit < UNITS.length - 1) {
    n /= 1024;
    unit += 1;
  }
  if (unit === 0) return `${n} B`;
  const digits = n >= 100 ? 0 : n >= 10 ? 1 : 2;
  return `${n.toFixed(digits)} ${UNITS[unit]}`;
}

/** A rate in bytes per second: "1.5 MiB/s"; "-" when nothing moves. */
export function formatRate(bytesPerSecond) {
  if (!(bytesPerSecond > 0)) return "-";
  return `${formatSize(bytesPerSecond)}/s`;
}

/** Seconds as a short duration: "45 s", "3 min 20 s", "2 h 05 min". */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  const h = Math.floor(s / 3600);
  if (h >= 100) return `${h} h`;
  return `${h} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

/** Time left at the current rate, or "-" when it cannot be told. */
export function formatEta(remainingBytes, bytesPerSecond) {
  if (remainingBytes <= 0) return "0 s";
  if (!(bytesPerSecond > 0)) return "-";
  return formatDuration(remainingBytes / bytesPerSecond);
}

/** Whole percent done, never 100 before the last byte. */
export function percent(done, size) {
  if (!(size > 0)) return done > 0 ? 100 : 0;
  if (done >= size) return 100;
  return Math.min(99, Math.floor((done * 100) / size));
}

/**
 * An incremental parser of a text/event-stream: feed it the text as it arrives (in
 * chunks cut anywhere); it calls onEvent(type, data) for each complete event.
 * Comments (": keepalive") are skipped; data lines are joined with "\n".
 */
export function sseParser(onEvent) {
  let buffer = "";
  let type = "";
  let data = [];
  function line(text) {
    if (text === "") {
      if (data.length) onEvent(type || "message", data.join("\n"));
      type = "";
      data = [];
      return;
    }
    if (text.startsWith(":")) return;
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
  }
  return function feed(chunk) {
    buffer += chunk;
    let end;
    while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
      if (buffer[end] === "\r" && end === buffer.length - 1) break; // "\r\n" cut in two?
      const text = buffer.slice(0, end);
      const sep = buffer[end] === "\r" && buffer[end + 1] === "\n" ? 2 : 1;
      buffer = buffer.slice(end + sep);
      line(text);
    }
  };
}

/**
 * Search hits merged as they arrive from each source: one per content id, each
 * provider (by address) once; most providers first, then in order of arrival.
 * `hits` is the current list (not changed); returns the new one.
 */
export function mergeHits(hits, batch) {
  const byId = new Map(hits.map((h) => [h.content_id, { ...h, providers: [...h.providers] }]));
  let order = hits.length;
  for (const hit of batch) {
    const known = byId.get(hit.content_id);
    if (known === undefined) {
      byId.set(hit.content_id, { ...hit, providers: [...hit.providers], order: order++ });
      continue;
    }
    for (const p of hit.providers) {
      if (!known.providers.some((q) => q.address === p.address)) known.providers.push(p);
    }
  }
  return [...byId.values()].sort(
    (a, b) => b.providers.length - a.providers.length || a.order - b.order,
  );
}

/**
 * The downloads as the page shows them, from `download` events: a Map by content id,
 * where an event older than the one held (a lower version) is ignored.
 * Returns whether the event changed anything.
 */
export function applyDownload(downloads, view) {
  const held = downloads.get(view.content_id);
  if (held !== undefined && held.version > view.version && held.state === view.state) {
    return false;
  }
  downloads.set(view.content_id, view);
  return true;
}

/** Decode the base64 bitfield of verified pieces into a Uint8Array of bits. */
export function decodeHave(b64) {
  if (!b64) return new Uint8Array(0);
  const raw = atob(b64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function held(bits, index) {
  const byte = index >> 3;
  return byte < bits.length && (bits[byte] & (0x80 >> (index & 7))) !== 0;
}

/**
 * The pieces strip: `cells` cells (at most one per piece), each "verified" when all
 * its pieces are, else "flight" when one of them is asked of a provider, else
 * "missing" (a cell mixing verified and missing pieces shows "partial").
 */
export function piecesStrip(haveB64, pieces, inFlight, cells) {
  const n = Math.max(0, Math.min(cells, pieces));
  const bits = decodeHave(haveB64);
  const flying = new Set(inFlight);
  const out = [];
  for (let c = 0; c < n; c++) {
    const from = Math.floor((c * pieces) / n);
    const to = Math.floor(((c + 1) * pieces) / n);
    let got = 0;
    let fly = false;
    for (let i = from; i < to; i++) {
      if (held(bits, i)) got += 1;
      else if (flying.has(i)) fly = true;
    }
    out.push(got === to - from ? "verified" : fly ? "flight" : got > 0 ? "partial" : "missing");
  }
  return out;
}

/** Why a download is not moving, or what it is doing, in words. */
export function whyText(view) {
  switch (view.state) {
    case "complete":
      return `complete: ${view.path ?? ""}`;
    case "failed":
      return `failed: ${view.error ?? "unknown error"}`;
    case "cancelled":
      return "cancelled";
    case "paused":
      return "paused (the partial file is kept; resume goes on from it)";
    default:
      if (view.why_stalled) return view.why_stalled;
      return view.state === "starting" ? "starting" : "downloading";
  }
}

/** Which actions a download in `state` offers. */
export function actionsFor(state) {
  if (state === "paused") return ["resume", "cancel"];
  if (state === "failed") return ["cancel"]; // deletes the partial file kept for a resume
  if (state === "starting" || state === "downloading") return ["pause", "cancel"];
  return [];
}

/**
 * Upload and download rates from the peer's counters (one sample a second):
 * `history` holds {t, served, received} samples (t in seconds), the newest last;
 * samples older than `windowSeconds` are dropped. Returns the rates as
 * [{t, up, down}] in bytes per second between consecutive samples.
 */
export function pushSample(history, sample, windowSeconds) {
  history.push(sample);
  while (history.length > 2 && sample.t - history[0].t > windowSeconds) history.shift();
  const rates = [];
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1];
    const b = history[i];
    const dt = b.t - a.t;
    if (dt <= 0) continue;
    rates.push({
      t: b.t,
      up: Math.max(0, (b.served - a.served) / dt),
      down: Math.max(0, (b.received - a.received) / dt),
    });
  }
  return rates;
}

/**
 * SVG polyline points ("x,y x,y ...") of `key` of `rates` in a width x height box:
 * time runs over the last `windowSeconds` up to `now`, the top is `top` bytes/s.
 */
export function graphPoints(rates, key, { now, windowSeconds, width, height, top }) {
  const max = top > 0 ? top : 1;
  return rates
    .map((r) => {
      const x = width - ((now - r.t) / windowSeconds) * width;
      const y = height - (Math.min(r[key], max) / max) * height;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(" ");
}

/** A round top for the graph's scale, at least the highest rate. */
export function graphTop(rates) {
  const peak = Math.max(0, ...rates.map((r) => Math.max(r.up, r.down)));
  if (peak <= 0) return 1024;
  let top = 1024;
  while (top < peak) top *= 2;
  return top;
}

/** Bytes per provider, most first: [[address, bytes], ...]. */
export function providerShares(delivered) {
  return Object.entries(delivered ?? {}).sort((a, b) => b[1] - a[1]);
}
