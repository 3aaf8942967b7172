-- wrk script: a non-streaming chat completion with an end user, as a frontend sends it.
-- The bearer key comes from the environment (TALLY_BENCH_KEY); the direct run has none.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("TALLY_BENCH_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
wrk.body = '{"model":"bench/mock","user":"user-42",' ..
  '"messages":[{"role":"user","content":"Say hello in five words."}]}'
