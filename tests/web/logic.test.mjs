// The web page's logic (src/p2pshare/peer/api/web/logic.js) without a browser.
// Run by tests/web/test_logic_js.py: `node --test` with P2PSHARE_LOGIC naming a copy
// of logic.js as an .mjs file (Node 20 reads a .js file outside a package as CommonJS).
import assert from "node:assert/strict";
import { test } from "node:test";
import { pathToFileURL } from "node:url";

const L = await import(pathToFileURL(process.env.P2PSHARE_LOGIC).href);

test("sizes read as people read them", () => {
  assert.equal(L.formatSize(0), "0 B");
  assert.equal(L.formatSize(1023), "1023 B");
  assert.equal(L.formatSize(1536), "1.50 KiB");
  assert.equal(L.formatSize(3 << 20), "3.00 MiB");
  assert.equal(L.formatSize(150 * 2 ** 30), "150 GiB");
  assert.equal(L.formatSize(-1), "?");
  assert.equal(L.formatSize(NaN), "?");
});

test("rates and ETA say '-' when nothing moves", () => {
  assert.equal(L.formatRate(0), "-");
  assert.equal(L.formatRate(2 << 20), "2.00 MiB/s");
  assert.equal(L.formatEta(10 << 20, 0), "-");
  assert.equal(L.formatEta(0, 0), "0 s");
  assert.equal(L.formatEta(10 << 20, 1 << 20), "10 s");
  assert.equal(L.formatEta(200, 1), "3 min 20 s");
  assert.equal(L.formatDuration(7500), "2 h 05 min");
  assert.equal(L.formatDuration(400 * 3600), "400 h");
});

test("percent never says 100 before the last byte", () => {
  assert.equal(L.percent(0, 100), 0);
  assert.equal(L.percent(999, 1000), 99);
  assert.equal(L.percent(1000, 1000), 100);
  assert.equal(L.percent(0, 0), 0);
});

test("the event-stream parser takes chunks cut anywhere and skips comments", () => {
  const got = [];
  const feed = L.sseParser((type, data) => got.push([type, data]));
  const text = ': hello\n\nevent: hits\ndata: {"a":1}\n\r\nevent: done\r\ndata: {}\n\ndata: x\ndata: y\n\n';
  for (const ch of text) feed(ch);
  assert.deepEqual(got, [["hits", '{"a":1}'], ["done", "{}"], ["message", "x\ny"]]);
});

test("hits merge by content id, each provider once, most provided first", () => {
  const p = (address) => ({ peer_id: address, address });
  let hits = L.mergeHits([], [{ content_id: "a", name: "a", size: 1, providers: [p("x")] }]);
  hits = L.mergeHits(hits, [
    { content_id: "b", name: "b", size: 2, providers: [p("x"), p("y")] },
    { content_id: "a", name: "a", size: 1, providers: [p("x")] },
  ]);
  assert.deepEqual(hits.map((h) => [h.content_id, h.providers.length]), [["b", 2], ["a", 1]]);
  hits = L.mergeHits(hits, [{ content_id: "a", name: "a", size: 1, providers: [p("z"), p("w")] }]);
  assert.deepEqual(hits.map((h) => [h.content_id, h.providers.length]), [["a", 3], ["b", 2]]);
});

test("a download event older than the one held is ignored", () => {
  const downloads = new Map();
  assert.ok(L.applyDownload(downloads, { content_id: "c", version: 5, state: "downloading" }));
  assert.ok(!L.applyDownload(downloads, { content_id: "c", version: 3, state: "downloading" }));
  assert.equal(downloads.get("c").version, 5);
  assert.ok(L.applyDownload(downloads, { content_id: "c", version: 6, state: "complete" }));
  // a resumed download restarts nothing: its version keeps growing
  assert.equal(downloads.get("c").state, "complete");
});

test("the pieces strip shows verified, in flight, partial and missing", () => {
  // 10 pieces: 0-3 verified (0xf0), 4 in flight
  const have = Buffer.from([0xf0, 0x00]).toString("base64");
  assert.deepEqual(L.piecesStrip(have, 10, [4], 10), [
    "verified", "verified", "verified", "verified", "flight",
    "missing", "missing", "missing", "missing", "missing",
  ]);
  // two pieces per cell
  assert.deepEqual(L.piecesStrip(have, 10, [], 5), [
    "verified", "verified", "missing", "missing", "missing",
  ]);
  assert.deepEqual(L.piecesStrip(Buffer.from([0x40]).toString("base64"), 2, [], 1), ["partial"]);
  assert.deepEqual(L.piecesStrip("", 0, [], 120), []);
  assert.equal(L.piecesStrip(Buffer.alloc(125, 0xff).toString("base64"), 1000, [], 120).length, 120);
});

test("why a download waits, in words; which actions each state offers", () => {
  assert.equal(L.whyText({ state: "downloading", why_stalled: "providers are not answering; retrying" }),
    "providers are not answering; retrying");
  assert.equal(L.whyText({ state: "downloading", why_stalled: null }), "downloading");
  assert.match(L.whyText({ state: "paused" }), /^paused/);
  assert.equal(L.whyText({ state: "failed", error: "disk full" }), "failed: disk full");
  assert.deepEqual(L.actionsFor("downloading"), ["pause", "cancel"]);
  assert.deepEqual(L.actionsFor("paused"), ["resume", "cancel"]);
  assert.deepEqual(L.actionsFor("complete"), []);
});

test("rates come from the counters, the window slides, the graph fits its box", () => {
  const history = [];
  L.pushSample(history, { t: 0, served: 0, received: 0 }, 300);
  let rates = L.pushSample(history, { t: 1, served: 1024, received: 4096 }, 300);
  assert.deepEqual(rates, [{ t: 1, up: 1024, down: 4096 }]);
  for (let t = 2; t <= 400; t++) rates = L.pushSample(history, { t, served: 0, received: 0 }, 300);
  assert.ok(history.length <= 302 && history[0].t >= 99);
  const top = L.graphTop([{ t: 1, up: 1500, down: 3000 }]);
  assert.equal(top, 4096);
  const points = L.graphPoints([{ t: 10, up: 0, down: 4096 }, { t: 5, up: 0, down: 2048 }], "down",
    { now: 10, windowSeconds: 10, width: 100, height: 50, top: 4096 });
  assert.equal(points, "100.0,0.0 50.0,25.0");
  assert.deepEqual(L.providerShares({ a: 1, b: 5 }), [["b", 5], ["a", 1]]);
});
