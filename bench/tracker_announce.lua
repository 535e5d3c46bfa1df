-- wrk script: BitTorrent announces to opentracker, the reference for the tracker load.
-- Arguments after "--": HASHES_FILE (one 40-hex info hash per line) [PEERS]
-- Each request announces one of PEERS peers (default 10000) on one of the info hashes.
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("thread_no", counter)
end

local hashes, peers = {}, 10000

local function escape(hex)
  return (hex:gsub("..", function(b) return "%" .. b end))
end

function init(args)
  math.randomseed(os.time() * 100 + (thread_no or 0))
  for line in io.lines(args[1]) do
    if #line == 40 then hashes[#hashes + 1] = escape(line) end
  end
  if args[2] then peers = tonumber(args[2]) end
end

function request()
  local p = math.random(peers)
  local h = hashes[(p % #hashes) + 1]
  local path = string.format(
    "/announce?info_hash=%s&peer_id=-BM0001-%012d&port=%d&uploaded=0&downloaded=0&left=0&compact=1",
    h, p, 10000 + p % 50000)
  return wrk.format("GET", path)
end
