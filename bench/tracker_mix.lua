-- wrk script: the tracker's load mix. 80% heartbeats (each peer's own Bearer token),
-- 20% searches for one or two random words that occur in indexed names.
-- Arguments after "--": PEERS_FILE WORDS_FILE [SEARCH_PERCENT] [RATE_PER_THREAD]
-- PEERS_FILE: "peer_id token" per line; WORDS_FILE: one word per line.
-- With P2P_FIXED_RATE=1 in the environment and RATE_PER_THREAD > 0, each thread sends at that fixed rate (requests/s): every
-- request takes the next slot of a schedule and waits for it (wrk's delay(), in ms).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } p2p_timespec;
int clock_gettime(int clk, p2p_timespec *tp);
]]
local ts = ffi.new("p2p_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("thread_no", counter)
end

local ids, tokens, words = {}, {}, {}
local search_percent, interval, next_slot = 20, 0, nil

function init(args)
  math.randomseed(os.time() * 100 + (thread_no or 0))
  for line in io.lines(args[1]) do
    local id, tok = line:match("^(%S+)%s+(%S+)$")
    if id then
      ids[#ids + 1] = id
      tokens[#tokens + 1] = "Bearer " .. tok
    end
  end
  for line in io.lines(args[2]) do
    if #line > 0 then words[#words + 1] = line end
  end
  if args[3] then search_percent = tonumber(args[3]) end
  local rate = tonumber(args[4] or "0")
  if rate > 0 then interval = 1000 / rate end
end

function request()
  if math.random(100) <= search_percent then
    local q = words[math.random(#words)]
    if math.random(2) == 1 then q = q .. "+" .. words[math.random(#words)] end
    return wrk.format("GET", "/v1/search?q=" .. q)
  end
  local i = math.random(#ids)
  return wrk.format("POST", "/v1/peers/" .. ids[i] .. "/heartbeat",
    { ["Authorization"] = tokens[i], ["Content-Length"] = "0" })
end

-- wrk looks for delay() before init() runs, so the rate mode is switched on by the
-- environment (P2P_FIXED_RATE=1) and delay() exists only then: a delay of 0 still
-- costs wrk a timer event per request
if os.getenv("P2P_FIXED_RATE") == "1" then function delay()
  if interval == 0 then return 0 end
  local now = now_ms()
  if next_slot == nil then next_slot = now end
  local slot = next_slot
  next_slot = next_slot + interval
  if slot <= now then return 0 end
  return math.floor(slot - now)
end end
