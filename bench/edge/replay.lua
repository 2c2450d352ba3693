-- wrk script: sends the requests of a file written by legit_requests.py, each once, in order,
-- then stops (one pass: the worker sees the corpus as a stream, as real traffic comes).
--   wrk -t1 -c8 -d120s -s bench/edge/replay.lua URL -- REQUESTS_FILE [DONE_FILE]
-- Use one thread (-t1): each thread would send the whole file. DONE_FILE is created once every
-- request is answered.
local reqs = {}
local next_req = 0
local answered = 0
local done_file = nil
-- Answers by status (read by done() through the thread).
statuses = {}
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  done_file = args[2]
  local f = assert(io.open(args[1], "rb"), "cannot open " .. tostring(args[1]))
  local data = f:read("*a")
  f:close()
  local pos = 1
  while pos <= #data do
    local nl = data:find("\n", pos, true)
    if not nl then break end
    local len = tonumber(data:sub(pos, nl - 1))
    reqs[#reqs + 1] = data:sub(nl + 1, nl + len)
    pos = nl + 1 + len
  end
  assert(#reqs > 0, "no requests in " .. args[1])
end

function request()
  next_req = next_req + 1
  -- Past the end (while the last answers come back), send the last request again; the run
  -- stops at the corpus's length of answers.
  return reqs[math.min(next_req, #reqs)]
end

function response(status, headers, body)
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
  if answered == #reqs then
    wrk.thread:stop()
    -- wrk's main thread sleeps for the whole -d duration: the run script, seeing this file,
    -- ends that sleep with SIGINT, and wrk prints its results at once.
    if done_file then
      local f = io.open(done_file, "w")
      if f then f:close() end
    end
  end
end

-- Prints "statuses: 200=N 403=N ..." (the run script reads it).
function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do
      all[status] = (all[status] or 0) + n
    end
  end
  local keys = {}
  for status in pairs(all) do keys[#keys + 1] = status end
  table.sort(keys)
  local parts = {}
  for _, status in ipairs(keys) do parts[#parts + 1] = status .. "=" .. all[status] end
  io.write("statuses: " .. table.concat(parts, " ") .. "\n")
end
