-- wrk script: a non-streaming request for one of 1,000 end users (or TALLY_BENCH_USERS),
-- as a frontend sends it: a chat completion, or with TALLY_BENCH_ENDPOINT=responses /
-- embeddings a Responses or embeddings request. The bearer key comes from TALLY_BENCH_KEY
-- (empty for the direct run).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("TALLY_BENCH_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end

local endpoint = os.getenv("TALLY_BENCH_ENDPOINT") or "chat"
local payload = '"messages":[{"role":"user","content":"Say hello in five words."}]'
if endpoint == "responses" or endpoint == "embeddings" then
  payload = '"input":"Say hello in five words."'
end

local users = tonumber(os.getenv("TALLY_BENCH_USERS") or "") or 1000
local bodies = {}
for i = 1, users do
  bodies[i] = '{"model":"bench/mock","user":"user-' .. i .. '",' .. payload .. '}'
end
-- each wrk thread starts at its own place in the list (setup runs once per thread)
local threads = 0
function setup(thread)
  thread:set("start", threads * 7919)
  threads = threads + 1
end
local n = nil

request = function()
  n = n or (start or 0) % users
  n = n % users + 1
  return wrk.format(nil, nil, nil, bodies[n])
end
