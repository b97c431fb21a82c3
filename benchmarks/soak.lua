-- wrk script for benchmarks/soak.py: each request goes to a random session's IMDS path.
--
-- Arguments (after `--`): sessions, seed, post share (0..1), unknown share of the posts (0..1).
-- Most requests are GET polls; a share are POSTs of StartRequests, either with an EventId
-- that session has served (seen in an earlier answer: sessions carry their own name in
-- Resources, so an answer says whose it is) or with an unknown one (UNKNOWN prefix), which
-- IMDS answers with 400. done() prints one line "SOAK {json}" with the counts of all threads.

local UNKNOWN = "00000000-DEAD-4000-8000-"
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  sessions = tonumber(args[1]) or 100
  math.randomseed((tonumber(args[2]) or 1) * 1000 + thread_id)
  post_share = tonumber(args[3]) or 0.1
  unknown_share = tonumber(args[4]) or 0.3
  seen = {}  -- session name -> an EventId it served
  stats = {
    gets = 0, posts_known = 0, posts_unknown = 0,
    ok = 0, expected_400 = 0, unexpected = 0, ids_seen = 0,
  }
end

local function path_of(name)
  return "/s/" .. name .. "/metadata/scheduledevents?api-version=2020-07-01"
end

function request()
  local name = string.format("s%03d", math.random(sessions) - 1)
  if math.random() < post_share then
    local id = seen[name]
    if id == nil or math.random() < unknown_share then
      id = UNKNOWN .. string.format("%012d", math.random(0, 999999999))
      stats.posts_unknown = stats.posts_unknown + 1
    else
      stats.posts_known = stats.posts_known + 1
    end
    local body = '{"StartRequests":[{"EventId":"' .. id .. '"}]}'
    return wrk.format("POST", path_of(name), {
      ["Metadata"] = "true", ["Content-Type"] = "application/json",
    }, body)
  end
  stats.gets = stats.gets + 1
  return wrk.format("GET", path_of(name), { ["Metadata"] = "true" })
end

function response(status, headers, body)
  if status == 200 then
    stats.ok = stats.ok + 1
    if body ~= nil and #body > 0 then
      local id = string.match(body, '"EventId":"([^"]+)"')
      local owner = string.match(body, '"Resources":%["(s%d%d%d)"%]')
      if id ~= nil and owner ~= nil then
        if seen[owner] ~= id then stats.ids_seen = stats.ids_seen + 1 end
        seen[owner] = id
      end
    end
  elseif status == 400 and body ~= nil and string.find(body, "Unknown EventId: " .. UNKNOWN, 1, true) then
    stats.expected_400 = stats.expected_400 + 1
  else
    stats.unexpected = stats.unexpected + 1
    local key = "status_" .. status
    stats[key] = (stats[key] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for key, value in pairs(thread:get("stats")) do
      total[key] = (total[key] or 0) + value
    end
  end
  local e = summary.errors
  total.requests = summary.requests
  total.duration_us = summary.duration
  total.socket_errors = e.connect + e.read + e.write + e.timeout
  total.connect_errors, total.read_errors = e.connect, e.read
  total.write_errors, total.timeouts = e.write, e.timeout
  total.non_2xx_3xx = e.status
  total.p50_us, total.p99_us = latency:percentile(50), latency:percentile(99)
  total.p999_us, total.max_us = latency:percentile(99.9), latency.max
  local parts = {}
  for key, value in pairs(total) do
    table.insert(parts, string.format('"%s": %d', key, value))
  end
  io.write("SOAK {" .. table.concat(parts, ", ") .. "}\n")
end
