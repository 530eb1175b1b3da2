--- Bench: the cost of ferry.proc.run{argv={"true"}} next to a plain fork/exec/wait of true (C), same run.
if not package.path:find("spec/?.lua", 1, true) then package.path = "spec/?.lua;" .. package.path end
local ferry = require "ferry"
local core = require "ferry.core"
local stats = require "bench.stats"

local M = {}

local function ferry_ns_per_run(n)
  local t0 = core.now_ms()
  for _ = 1, n do ferry.proc.run { argv = { "true" } } end
  return (core.now_ms() - t0) * 1e6 / n
end

local function forkexec_ns_per_run(bin, n)
  local r = assert(ferry.proc.run { argv = { bin, tostring(n) } })
  return tonumber(r.stdout)
end

--- Run the bench; returns {ferry_us, forkexec_us, ratio, concurrent_ms}.
function M.run()
  local bin = os.tmpname()
  local r = assert(ferry.proc.run { argv = { "cc", "-O2", "-o", bin, "spec/bench/forkexec.c" } })
  assert(r.code == 0, "cannot build the fork/exec baseline: " .. r.stderr)
  local n = 500
  local ours, base = {}, {}
  for i = 1, 5 do -- interleaved, so both see the same machine load
    ours[i] = ferry_ns_per_run(n)
    base[i] = forkexec_ns_per_run(bin, n)
  end
  os.remove(bin)
  local t0 = core.now_ms()
  local tasks = {}
  for i = 1, 200 do tasks[i] = ferry.spawn(function() return ferry.proc.run { argv = { "true" } }.code end) end
  ferry.wait(tasks)
  local concurrent = core.now_ms() - t0
  local res = { ferry_us = stats.median(ours) / 1000, forkexec_us = stats.median(base) / 1000,
    concurrent_200_ms = concurrent }
  res.ratio = res.ferry_us / res.forkexec_us
  return res
end

--- Print the table rows for this bench.
function M.report(res)
  print(string.format("%-44s %10.1f us", "ferry.proc.run{argv={'true'}} (median of 5x500)", res.ferry_us))
  print(string.format("%-44s %10.1f us", "plain fork/exec/wait of true (C)", res.forkexec_us))
  print(string.format("%-44s %10.2f x", "ratio ferry / fork-exec", res.ratio))
  print(string.format("%-44s %10.1f ms", "200 concurrent runs of true, wall", res.concurrent_200_ms))
end

if arg and arg[0] and arg[0]:match("bench/proc%.lua$") then M.report(M.run()) end

return M
