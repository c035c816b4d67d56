-- wrk script: conditional single-event appends through POST /append, each
-- request on a boundary of its own (a fresh tag), so none conflicts: the
-- node decides and commits every one. Counts non-200 answers and failed
-- conditions as errors and prints them at the end. An optional argument
-- (`wrk ... -s bench/http_append.lua URL -- <prefix>`) goes into every tag,
-- so that several wrk processes started in the same second (one per node
-- in the cluster benchmark) never share a boundary.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  -- Tags differ between runs on one node too (the 1-connection run follows
  -- the 100-connection one): the run's start second goes into each tag.
  run = os.time()
  prefix = args[1] or ""
  math.randomseed(run * 1000 + tid)
  errors = 0
  conflicts = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local tag = string.format("b:%s%d-%d-%d-%d", prefix, run, tid, counter,
                            math.random(1e9))
  local body = string.format(
    '{"events":[{"type":"Bench","tags":["%s"],"data":"x"}],' ..
    '"condition":{"failIfEventsMatch":{"items":[{"types":["Bench"],"tags":["%s"]}]}}}',
    tag, tag)
  return wrk.format(nil, "/append", nil, body)
end

function response(status, headers, body)
  if status ~= 200 then
    errors = errors + 1
  elseif string.find(body, '"appendConditionFailed":true', 1, true) then
    conflicts = conflicts + 1
  end
end

function done(summary, latency, requests)
  local e, c = 0, 0
  for _, t in ipairs(threads) do
    e = e + t:get("errors")
    c = c + t:get("conflicts")
  end
  io.write(string.format("wrk_append errors=%d conflicts=%d\n", e, c))
end
