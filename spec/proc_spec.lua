local ferry = require "ferry"
local core = require "ferry.core"

local run = ferry.proc.run

local fd_count = require("support.helpers").fd_count

-- A zombie (killed, not yet reaped by init) counts as dead.
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local stat = f:read("a")
  f:close()
  return stat:match("^%d+ %b() (%a)") ~= "Z"
end

describe("ferry.proc.run", function()
  it("returns code, stdout, stderr, pid, timing", function()
    local r = assert(run { argv = { "sh", "-c", "printf out; printf err >&2; exit 7" } })
    assert.equal(7, r.code)
    assert.equal("out", r.stdout)
    assert.equal("err", r.stderr)
    assert.is_false(r.timed_out)
    assert.is_false(r.truncated)
    assert.is_nil(r.signal)
    assert.is_true(r.pid > 0)
    assert.is_true(r.started_at > 1.6e12)
    assert.is_true(r.duration_ms >= 0)
  end)

  it("passes argv bytes exactly, without a shell", function()
    local weird = "a b'c\"d$e`f\\g\n\255"
    local r = assert(run { argv = { "printf", "%s", weird } })
    assert.equal(weird, r.stdout)
  end)

  it("reports a program that cannot start", function()
    local r, err, code = run { argv = { "/nonexistent/program-xyz" } }
    assert.is_nil(r)
    assert.equal("spawn /nonexistent/program-xyz: no such file or directory", err)
    assert.equal("ENOENT", code)
    local r2, err2, code2 = run { argv = { "true" }, cwd = "/nonexistent-dir-xyz" }
    assert.is_nil(r2)
    assert.equal("spawn true: cwd /nonexistent-dir-xyz: no such file or directory", err2)
    assert.equal("ENOENT", code2)
  end)

  it("raises on misuse, naming the field", function()
    assert.has_error(function() run {} end, "proc.run: opts.argv must be a non-empty list of strings")
    assert.has_error(function() run { argv = {} } end, "proc.run: opts.argv must be a non-empty list of strings")
    assert.has_error(function() run { argv = { "true", 3 } } end,
      "proc.run: opts.argv[2] must be a string, got number")
    assert.has_error(function() run { argv = { "true" }, timeout_ms = -1 } end,
      "proc.run: opts.timeout_ms must be a number >= 0")
    assert.has_error(function() run { argv = { "true" }, stdin = 5 } end,
      "proc.run: opts.stdin must be a string or a function, got number")
    assert.has_error(function() run { argv = { "true" }, env = "x" } end, "proc.run: opts.env must be a table")
    assert.has_error(function() run("true") end, "proc.run: expected an options table, got string")
  end)

  it("uses cwd and merges env over the current environment", function()
    local r = assert(run { argv = { "sh", "-c", "pwd; echo $FERRY_T; echo ${HOME:+home}" }, cwd = "/tmp",
      env = { FERRY_T = "v1" } })
    assert.equal("/tmp\nv1\nhome\n", r.stdout)
    local r2 = assert(run { argv = { "/usr/bin/env" }, clear_env = true, env = { ONLY = "1" } })
    assert.equal("ONLY=1\n", r2.stdout)
    local r3 = assert(run { argv = { "sh", "-c", "echo ${HOME:-none}" }, env = { HOME = false } })
    assert.equal("none\n", r3.stdout)
  end)

  it("feeds a string stdin", function()
    local data = string.rep("0123456789", 100000) .. "\0\255"
    local r = assert(run { argv = { "cat" }, stdin = data })
    assert.equal(#data, #r.stdout)
    assert.equal(data, r.stdout)
  end)

  it("streams a function stdin with backpressure", function()
    local chunk = string.rep("x", 65536)
    local sent, produced = 0, 0
    local r = assert(run { argv = { "wc", "-c" }, stdin = function()
      if produced >= 64 * 1024 * 1024 then return nil end
      produced = produced + #chunk
      sent = sent + #chunk
      return chunk
    end })
    assert.equal(tostring(64 * 1024 * 1024), r.stdout:match("%d+"))
    assert.equal(64 * 1024 * 1024, sent)
  end)

  it("stops feeding when the child closes its stdin", function()
    local calls = 0
    local r = assert(run { argv = { "head", "-c", "10" }, stdin = function()
      calls = calls + 1
      if calls > 100000 then return nil end
      return string.rep("y", 65536)
    end })
    assert.equal(string.rep("y", 10), r.stdout)
    assert.is_true(calls < 100000)
  end)

  it("drains a child that floods stderr while reading stdin", function()
    local input = string.rep("z", 4 * 1024 * 1024)
    local r = assert(run {
      argv = { "sh", "-c", "head -c 100000000 /dev/zero >&2; wc -c" },
      stdin = input, max_output = 1024,
    })
    assert.equal(tostring(#input), r.stdout:match("%d+"))
    assert.equal(1024, #r.stderr)
    assert.is_true(r.truncated)
  end)

  it("calls on_stdout/on_stderr with chunks and on_spawn with the pid", function()
    local out, err, spawned = {}, {}, nil
    local r = assert(run { argv = { "sh", "-c", "echo a; echo b >&2; echo c" },
      on_stdout = function(c) out[#out + 1] = c end,
      on_stderr = function(c) err[#err + 1] = c end,
      on_spawn = function(pid, started) spawned = { pid, started } end })
    assert.equal("a\nc\n", table.concat(out))
    assert.equal("b\n", table.concat(err))
    assert.equal(r.pid, spawned[1])
    assert.equal(r.started_at, spawned[2])
    assert.is_nil(r.stdout)
  end)

  it("kills the whole process tree on timeout, keeping the output so far", function()
    local pidfile = os.tmpname()
    local r = assert(run { argv = { "sh", "-c",
      "echo started; (trap '' TERM; sleep 30) & echo $! > " .. pidfile .. "; sleep 30" },
      timeout_ms = 300, kill_grace_ms = 200 })
    assert.is_true(r.timed_out)
    assert.equal("started\n", r.stdout)
    assert.is_true(r.duration_ms < 5000)
    local f = assert(io.open(pidfile))
    local grandchild = f:read("n")
    f:close()
    os.remove(pidfile)
    assert.is_false(alive(grandchild))
  end)

  it("checks every option before it spawns anything: a bad callback raises with no child started", function()
    local helpers = require "support.helpers"
    local dir = helpers.tmpdir()
    local marker = dir .. "/spawned"
    local argv = { "sh", "-c", "touch " .. marker }
    local fds, handles = fd_count(), core.handles()
    assert.has_error(function() core.proc_start({ argv = argv, on_stdout = "print" }, function() end) end,
      "proc.run: opts.on_stdout must be a function")
    assert.has_error(function() core.proc_start({ argv = argv, on_stderr = 42, stdin = true }, function() end) end,
      "proc.run: opts.on_stderr must be a function")
    assert.has_error(function() core.proc_start({ argv = argv, max_output = -1 }, function() end) end,
      "proc.run: opts.max_output must be a number >= 0")
    ferry.sleep(200) -- a child, had one started, would have made the file by now
    assert.is_nil(core.fs_lstat(marker))
    assert.equal(fds, fd_count())
    assert.equal(handles, core.handles())
    -- the same options with good callbacks do start it
    local done = false
    assert(core.proc_start({ argv = argv, on_stdout = function() end }, function() done = true end))
    while not done do core.run_once() end
    assert.truthy(core.fs_lstat(marker))
    helpers.rmtree(dir)
  end)

  it("reports a signal death", function()
    local r = assert(run { argv = { "sh", "-c", "kill -KILL $$" } })
    assert.equal("SIGKILL", r.signal)
    assert.equal(137, r.code)
  end)

  it("leaves the fd count and handle count unchanged after thousands of runs", function()
    run { argv = { "true" } }
    local fds, handles = fd_count(), core.handles()
    for _ = 1, 2000 do
      local r = run { argv = { "true" }, stdin = "x" }
      assert(r.code == 0)
    end
    for _ = 1, 200 do assert(not run { argv = { "/nonexistent" } }) end
    assert.equal(fds, fd_count())
    assert.equal(handles, core.handles())
  end)
end)

describe("ferry tasks", function()
  it("runs 200 processes at once from one loop", function()
    local tasks = {}
    local t0 = core.now_ms()
    for i = 1, 200 do
      tasks[i] = ferry.spawn(function()
        local r = assert(run { argv = { "sh", "-c", "sleep 0.5; echo " .. i } })
        return tonumber(r.stdout)
      end)
    end
    local results = ferry.wait(tasks)
    for i = 1, 200 do assert.equal(i, results[i]) end
    -- sequential would take 100 s; concurrent runs overlap
    assert.is_true(core.now_ms() - t0 < 20000)
  end)

  it("re-raises a task's error from wait, naming the task", function()
    local ok_task = ferry.spawn(function() return 1 end)
    local bad = ferry.spawn(function() ferry.sleep(10); error("boom") end)
    local ok, err = pcall(ferry.wait, { ok_task, bad })
    assert.is_false(ok)
    assert.matches("task 2 failed: .*boom", err)
  end)

  it("sleeps without blocking other tasks", function()
    local order = {}
    local a = ferry.spawn(function() ferry.sleep(100); order[#order + 1] = "a" end)
    local b = ferry.spawn(function() ferry.sleep(10); order[#order + 1] = "b" end)
    ferry.wait { a, b }
    assert.same({ "b", "a" }, order)
  end)

  it("lets a stdin function yield (streams one process into another)", function()
    local data = string.rep("abc\n", 200000)
    local r = assert(run { argv = { "cat" }, stdin = function()
      local produced = data
      data = nil
      if produced then ferry.sleep(5) end
      return produced
    end })
    assert.equal(800000, #r.stdout)
  end)
end)
