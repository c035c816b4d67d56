-- wrk script: the example node's command define_course through
-- POST /v1/commands/define_course, each request on a course of its own, so
-- none conflicts or is rejected: the node projects (an empty model),
-- decides and appends under the condition every time, as
-- bench/http_append.lua appends on a fresh boundary. Counts non-200
-- answers and rejections as errors and prints them at the end.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  run = os.time()
  math.randomseed(run * 1000 + tid)
  errors = 0
  rejected = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local course = string.format("c%d-%d-%d-%d", run, tid, counter,
                               math.random(1e9))
  local body = string.format('{"course":"%s","capacity":1}', course)
  return wrk.format(nil, "/v1/commands/define_course", nil, body)
end

function response(status, headers, body)
  if status ~= 200 then
    errors = errors + 1
  elseif string.find(body, '"accepted":false', 1, true) then
    rejected = rejected + 1
  end
end

function done(summary, latency, requests)
  local e, r = 0, 0
  for _, t in ipairs(threads) do
    e = e + t:get("errors")
    r = r + t:get("rejected")
  end
  io.write(string.format("wrk_command errors=%d rejected=%d\n", e, r))
end
