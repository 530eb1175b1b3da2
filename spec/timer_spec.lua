-- core.timer: one-shot timers whose Lua value stays safe to use after the timer fired or was stopped (the
-- handle's memory belongs to libuv until its close callback), and what closing the engine does with timers and
-- children still pending. `make check` runs these under ASan, spec/support/valgrind_smoke.lua under valgrind.
local ferry = require "ferry"
local core = require "ferry.core"
local helpers = require "support.helpers"

-- Run the loop until pred() holds (at most 5 s).
local function run_until(pred)
  local deadline = core.now_ms() + 5000
  while not pred() do
    assert(core.now_ms() < deadline, "timed out waiting")
    core.run_once()
  end
end

-- Let pending close callbacks run (a closing handle is gone from core.handles() already).
local function settle()
  local done = false
  core.timer(0, function() done = true end)
  run_until(function() return done end)
end

describe("core.timer", function()
  it("calls its function once, not before the delay", function()
    local calls, t0, at = 0, core.now_ms(), nil
    core.timer(30, function()
      calls = calls + 1
      at = core.now_ms()
    end)
    run_until(function() return calls > 0 end)
    settle()
    assert.equal(1, calls)
    assert.is_true(at - t0 >= 29, at - t0)
  end)

  it("can be stopped after it fired, stopped twice, and then collected", function()
    settle()
    local handles = core.handles()
    local fired = 0
    local t = core.timer(1, function() fired = fired + 1 end)
    assert.equal(handles + 1, core.handles())
    run_until(function() return fired == 1 end)
    assert.equal(handles, core.handles())
    t:stop()
    settle() -- the close callback has freed the timer: stop must not touch it
    t:stop()
    t:stop()
    t = nil -- luacheck: ignore 311
    collectgarbage()
    collectgarbage()
    assert.equal(1, fired)
    assert.equal(handles, core.handles())
  end)

  it("never fires once stopped, and stop is safe again after the close completed", function()
    settle()
    local handles = core.handles()
    local fired = false
    local t = core.timer(20, function() fired = true end)
    t:stop()
    assert.equal(handles, core.handles())
    t:stop()
    ferry.sleep(60)
    t:stop()
    assert.is_false(fired)
  end)

  it("stops when a <close> variable goes out of scope", function()
    local fired = false
    do
      local t <close> = core.timer(20, function() fired = true end) -- luacheck: ignore 211
    end
    ferry.sleep(60)
    assert.is_false(fired)
  end)

  it("still fires when its Lua value was collected (ferry.sleep keeps none)", function()
    local fired = false
    core.timer(20, function() fired = true end)
    collectgarbage()
    collectgarbage()
    run_until(function() return fired end)
  end)

  it("raises on misuse, naming the argument", function()
    assert.has_error(function() core.timer(-1, function() end) end,
      "bad argument #1 to 'timer' (timer delay must be >= 0)")
    assert.has_error(function() core.timer(1) end, "bad argument #2 to 'timer' (function expected, got no value)")
  end)
end)

describe("closing an engine", function()
  it("kills a child still running and closes pending timers, then exits at once", function()
    local mark = "31.4" .. math.random(100000, 999999)
    local t0 = core.now_ms()
    local r = assert(ferry.proc.run { argv = { helpers.ferry_bin, "-e", [[
      local core = require "ferry.core"
      core.timer(60000, function() end)
      local h = assert(core.proc_start({ argv = { "sleep", "]] .. mark .. [[" } }, function() end))
      print(h.pid)
    ]] }, timeout_ms = 20000 })
    assert.equal(0, r.code, r.stderr)
    assert.is_true(core.now_ms() - t0 < 10000)
    assert.truthy(r.stdout:match("^%d+\n$"), r.stdout)
    ferry.sleep(100)
    assert.same({}, helpers.pids_with(mark))
  end)
end)
