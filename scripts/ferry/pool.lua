--- A bounded pool of ferry tasks: run one function over many items, at most N at a time, on the one libuv loop.
-- Used by `ferry prepare --many` / `ferry restore --many`; works from inside a task or outside any.
-- ferry.prepare{...} and ferry.restore{...} block only their own task, so from Lua several sandboxes go at once
-- with plain tasks (`local t = ferry.spawn(function() return ferry.prepare{...} end)`, then `ferry.wait{t1, t2}`)
-- or bounded: `pool.run(list, 4, function(opts) return ferry.prepare(opts) end)` (see spec/many_spec.lua).
local task = require "ferry.task"
local core = require "ferry.core"

local M = {}

--- Run `fn(item, index)` for every item, at most `jobs` calls running at once (each call is a ferry task, so
--- a call that blocks on a process lets the others run). A call that raises does not stop the others.
--- `on_done(index, value, err)`, when given, runs as each call finishes (in finishing order).
---@param items any[]
---@param jobs integer  >= 1
---@param fn fun(item: any, index: integer): any
---@param on_done fun(index: integer, value: any, err: any)|nil
---@return table results  results[i] = fn's first return value (nil when it raised)
---@return table errors   errors[i] = what fn raised for item i (absent when it returned)
---@return table stats    {max_running = the most calls that ran at the same time, ms = wall time}
function M.run(items, jobs, fn, on_done)
  if type(items) ~= "table" then error("pool.run: items must be a list", 2) end
  if math.type(jobs) ~= "integer" or jobs < 1 then error("pool.run: jobs must be an integer >= 1", 2) end
  if type(fn) ~= "function" then error("pool.run: fn must be a function", 2) end
  local results, errors = {}, {}
  local stats = { max_running = 0, ms = 0 }
  local started = core.now_ms()
  local next_index, running = 1, 0

  -- A worker takes the next item until none is left: `jobs` workers make the semaphore.
  local function worker()
    while next_index <= #items and not task.interrupted() do -- after SIGINT/SIGTERM no item starts
      local i = next_index
      next_index = i + 1
      running = running + 1
      if running > stats.max_running then stats.max_running = running end
      local ok, value = xpcall(fn, debug.traceback, items[i], i)
      running = running - 1
      if ok then results[i] = value else errors[i] = value end
      if on_done then on_done(i, results[i], errors[i]) end
    end
  end

  local workers = {}
  for w = 1, math.min(jobs, #items) do workers[w] = task.spawn(worker) end
  task.wait(workers)
  stats.ms = core.now_ms() - started
  return results, errors, stats
end

return M
