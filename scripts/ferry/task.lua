--- Tasks: coroutines resumed by libuv callbacks, so that Lua code looks synchronous.
-- Each task is a coroutine. A blocking primitive calls `M.await(start)`: `start(wake)` begins the
-- operation and the task yields until `wake(...)` runs from a loop callback. Outside any task, a blocking
-- call runs the loop itself until its work is done (see `M.block`).
local core = require "ferry.core"

local M = {}

---@class ferry.Task
---@field co thread
---@field done boolean
---@field ok boolean|nil   true when the function returned, false when it raised
---@field values table|nil  what it returned (with n)
---@field err any           what it raised
---@field traceback string|nil where it raised
---@field waiters function[]

local Task = {}
Task.__index = Task

local by_co = setmetatable({}, { __mode = "k" })
local interrupted        -- the name of the signal that interrupted ferry (M.interrupt), or nil
local interrupts = 0     -- how many interrupts came: a blocking call compares it before and after
local sleepers = {}      -- wake functions of the tasks in M.sleep: an interrupt ends their sleep
local unfinished = 0
local unobserved_failures = {} -- failed tasks nobody waited for: drain() reports them

local function finish(task, ok, ...)
  task.done = true
  unfinished = unfinished - 1
  task.ok = ok
  if ok then
    task.values = table.pack(...)
  else
    local err = ...
    task.err = err
    task.traceback = debug.traceback(task.co, tostring(err))
    unobserved_failures[task] = true
  end
  local waiters = task.waiters
  task.waiters = {}
  for _, wake in ipairs(waiters) do wake() end
end

local function step(task, ...)
  local results = table.pack(coroutine.resume(task.co, ...))
  if coroutine.status(task.co) == "dead" then
    finish(task, table.unpack(results, 1, results.n))
  end
end

--- The task running now, or nil outside any task.
---@return ferry.Task|nil
function M.current()
  local co, main = coroutine.running()
  if main then return nil end
  return by_co[co]
end

--- Start `fn(...)` as a task; it runs at once until its first blocking call.
---@param fn function
---@return ferry.Task
function M.spawn(fn, ...)
  if type(fn) ~= "function" then error("ferry.spawn: expected a function, got " .. type(fn), 2) end
  local task = setmetatable({ done = false, waiters = {} }, Task)
  task.co = coroutine.create(fn)
  by_co[task.co] = task
  unfinished = unfinished + 1
  step(task, ...)
  return task
end

--- Inside a task: start an operation and yield until it calls `wake(...)`; returns wake's arguments.
-- Outside a task: runs the loop until `wake` is called.
---@param start fun(wake: function)
function M.await(start)
  local task = M.current()
  if not task then
    local result
    start(function(...) result = table.pack(...) end)
    while not result do
      if not core.run_once() and not result then
        error("ferry: nothing left to wait for, but the operation never completed", 2)
      end
    end
    return table.unpack(result, 1, result.n)
  end
  local woken, early = false, nil
  local yielded = false
  start(function(...)
    if woken then return end
    woken = true
    if yielded then
      step(task, ...)
    else
      early = table.pack(...)
    end
  end)
  if early then return table.unpack(early, 1, early.n) end
  yielded = true
  return coroutine.yield()
end

--- Run `fn` as a task and wait for it: from a task this is a plain call, outside one it runs the loop.
function M.block(fn, ...)
  if M.current() then return fn(...) end
  local task = M.spawn(fn, ...)
  return M.wait_one(task)
end

local function result_of(task)
  unobserved_failures[task] = nil
  if task.ok then return table.unpack(task.values, 1, task.values.n) end
  error(task.err, 0)
end

--- Wait for one task and return what it returned (its error is raised again).
---@param task ferry.Task
function M.wait_one(task)
  if not task.done then
    M.await(function(wake) task.waiters[#task.waiters + 1] = wake end)
  end
  return result_of(task)
end

--- Wait for every task of the list. Returns a list of each task's first return value; when some raised,
-- raises (after all have finished) the first error, naming the task's index.
---@param tasks ferry.Task[]
function M.wait(tasks)
  if getmetatable(tasks) == Task then return M.wait_one(tasks) end
  for _, task in ipairs(tasks) do
    if not task.done then
      M.await(function(wake) task.waiters[#task.waiters + 1] = wake end)
    end
  end
  local out = {}
  for _, task in ipairs(tasks) do unobserved_failures[task] = nil end
  for i, task in ipairs(tasks) do
    if not task.ok then error(string.format("task %d failed: %s", i, tostring(task.err)), 0) end
    out[i] = task.values[1]
  end
  return out
end

local INTERRUPT = {} -- what an interrupt wakes a sleeper with

--- The name of the signal ("SIGINT", "SIGTERM", ...) that interrupted this process, or nil. A signal that
--- arrived and was not handled yet by the loop counts (core.signal_pending).
---@return string|nil
function M.interrupted()
  return interrupted or (core.signal_pending and core.signal_pending()) or nil
end

--- The number of interrupts so far; a blocking call that sees it change was interrupted.
---@return integer
function M.interrupts()
  return interrupts
end

--- Raise "interrupted (<signal>)" when this process was interrupted.
function M.check_interrupted()
  local sig = M.interrupted()
  if sig then error("interrupted (" .. sig .. ")", 0) end
end

--- Interrupt this process (core.signals_install calls it on SIGINT/SIGTERM/SIGHUP, after telling every child
--- to stop): from now on M.interrupted() names the signal, sleeping tasks raise "interrupted (<signal>)",
--- and a process or sandbox command that was running raises the same once it has ended (ferry.proc, the
--- session), so that every task unwinds through its cleanup and no command is left running.
---@param signal string
function M.interrupt(signal)
  interrupted = signal
  interrupts = interrupts + 1
  local woken = sleepers
  sleepers = {}
  for wake in pairs(woken) do wake(INTERRUPT) end
end

--- Sleep `ms` milliseconds (yields the task); raises "interrupted (<signal>)" when an interrupt comes.
function M.sleep(ms)
  M.check_interrupted()
  local timer, waker
  local why = M.await(function(wake)
    waker = wake
    sleepers[wake] = true
    timer = core.timer(math.floor(ms), wake)
  end)
  sleepers[waker] = nil
  if why == INTERRUPT then
    timer:stop()
    M.check_interrupted()
  end
end

--- Run the loop until every task has finished (the binary does this after a script returns), then
-- raise the error of a task that failed without anyone waiting for it.
function M.drain()
  while unfinished > 0 do
    if not core.run_once() then break end
  end
  local failed = next(unobserved_failures)
  if failed then
    unobserved_failures = {}
    error(failed.traceback, 0)
  end
end

return M
