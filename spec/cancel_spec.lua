-- Timeouts and interrupts reach the sandbox (issue 8, item 11): a timed-out command, and every command of a
-- ferry that gets SIGINT, SIGTERM or even SIGKILL, is stopped inside the sandbox within the grace period, for
-- every provider (the sandboxes here run on this host, so /proc shows their processes; over ssh the remote
-- command belongs to the ssh test user). And the install lock: a lock left by a dead install is broken, and
-- "present" is said only when the detect probe passes.
local ferry = require "ferry"
local core = require "ferry.core"
local helpers = require "support.helpers"
local sandboxes = require "support.sandboxes"
local sshd = require "support.sshd"

local BWRAP_WORKS = require("support.sandboxes").BWRAP_WORKS

-- A `sleep` no other process runs: its command line finds it.
local function unique_sleep()
  return string.format("%d.%06d", math.random(300, 900), math.random(1, 999999))
end

local function eventually(pred, ms)
  local deadline = core.now_ms() + (ms or 5000)
  while core.now_ms() < deadline do
    if pred() then return true end
    ferry.sleep(50)
  end
  return pred()
end

-- Whether `sleep ARG` runs. Commands are given to ferry as `sh -c "sleep ARG"`: only the sleep process itself
-- has "sleep" and ARG as two words of its command line (ferry's own is "sh -c", "sleep ARG").
local function sleeping(arg) return #helpers.pids_with("sleep\0" .. arg) > 0 end

local function signal(pid, name)
  assert(ferry.proc.run { argv = { "kill", "-s", name, tostring(pid) } })
end

-- Start `build/ferry ARGS...` in a task; returns the task and a function giving the pid once it started.
local function start_ferry(args, env)
  local pid
  local argv = { helpers.ferry_bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local t = ferry.spawn(function()
    return assert(ferry.proc.run { argv = argv, env = env, timeout_ms = 60000,
      on_spawn = function(p) pid = p end })
  end)
  return t, function() return pid end
end

local server
local PROVIDERS = {
  { name = "local", spec = function() return "local" end },
  { name = "bwrap", skip = not BWRAP_WORKS, spec = function(tmp) return "bwrap:" .. tmp .. "/box" end },
  { name = "cmd", spec = function() return "cmd:env FERRY_SPEC=1" end },
  { name = "busybox", spec = function() return "cmd:env PATH=" .. sandboxes.busybox_path() end },
  { name = "ssh", spec = function() return server:url() end },
}

describe("stopping sandbox commands", function()
  lazy_setup(function() server = sshd.start() end)
  lazy_teardown(function() if server then server:stop() end end)

  for _, pv in ipairs(PROVIDERS) do
    local it_or_skip = pv.skip and pending or it
    describe("on " .. pv.name, function()
      local tmp, P
      before_each(function()
        tmp = helpers.tmpdir()
        P = pv.spec(tmp)
      end)
      after_each(function() helpers.rmtree(tmp) end)

      it_or_skip("exec --timeout 2 returns in ~2 s + grace with 124, and the command is gone", function()
        local arg = unique_sleep()
        local t0 = core.now_ms()
        local res = ferry.wait((start_ferry { "exec", "-p", P, "--timeout", "2", "--", "sh", "-c", "sleep " .. arg }))
        local took = core.now_ms() - t0
        assert.equal(124, res.code, res.stderr)
        assert.equal("ferry: exec: sh: timed out after 2 s\n", res.stderr)
        assert.is_true(took < 4500, "took " .. took .. " ms")
        assert.is_true(eventually(function() return not sleeping(arg) end, 1000), "sleep " .. arg .. " still runs")
      end)

      it_or_skip("sb:exec's timeout KILLs a command that ignores TERM after the grace, in the sandbox", function()
        local arg = unique_sleep()
        local sb = assert(ferry.open(P))
        local res = assert(sb:exec("trap '' TERM; sleep " .. arg .. "; echo never", { timeout_ms = 500,
          kill_grace_ms = 500 }))
        assert.is_true(res.timed_out)
        assert.is_nil(res.stdout:find("never", 1, true))
        assert.is_true(res.duration_ms < 3000, "took " .. res.duration_ms .. " ms")
        assert.is_true(eventually(function() return not sleeping(arg) end, 1000), "sleep " .. arg .. " still runs")
        sb:close()
      end)

      for _, sig in ipairs { { "INT", 130, "SIGINT" }, { "TERM", 143, "SIGTERM" } } do
        it_or_skip("SIG" .. sig[1] .. " to ferry stops the command in the sandbox, then exits " .. sig[2], function()
          local arg = unique_sleep()
          local t, pid = start_ferry { "exec", "-p", P, "--", "sh", "-c", "sleep " .. arg .. "; echo never" }
          assert.is_true(eventually(function() return sleeping(arg) end), "the command did not start")
          local t0 = core.now_ms()
          signal(pid(), sig[1])
          local res = ferry.wait(t)
          assert.equal(sig[2], res.code, res.stderr)
          assert.equal("ferry: exec: interrupted (" .. sig[3] .. ")\n", res.stderr)
          assert.equal("", res.stdout)
          assert.is_true(core.now_ms() - t0 < 4000)
          assert.is_false(sleeping(arg), "sleep " .. arg .. " outlived ferry")
        end)
      end

      it_or_skip("SIGKILL of ferry: the command sees its channel close and is stopped", function()
        local arg = unique_sleep()
        local t, pid = start_ferry { "exec", "-p", P, "--", "sh", "-c", "sleep " .. arg }
        assert.is_true(eventually(function() return sleeping(arg) end), "the command did not start")
        signal(pid(), "KILL")
        ferry.wait(t)
        assert.is_true(eventually(function() return not sleeping(arg) end, 3000), "sleep " .. arg .. " still runs")
      end)
    end)
  end

  it("a session's running command is stopped when ferry gets SIGINT, over ssh", function()
    local tmp = helpers.tmpdir()
    local arg = unique_sleep()
    local script = tmp .. "/session.lua"
    helpers.write_file(script, string.format([[
      local sb = assert(require("ferry").open(%q, { session = true }))
      sb:exec("sleep %s")
    ]], server:url(), arg))
    local t, pid = start_ferry { "run", script }
    assert.is_true(eventually(function() return sleeping(arg) end), "the command did not start")
    signal(pid(), "INT")
    ferry.wait(t)
    assert.is_true(eventually(function() return not sleeping(arg) end, 3000), "sleep " .. arg .. " still runs")
    helpers.rmtree(tmp)
  end)

  it("an interrupted sb:exec raises once its command has stopped, and later calls raise at once", function()
    local tmp = helpers.tmpdir()
    local arg = unique_sleep()
    local script = tmp .. "/interrupt.lua"
    helpers.write_file(script, string.format([[
      local ferry = require("ferry")
      local sb = assert(ferry.open("local"))
      local ok, err = pcall(sb.exec, sb, "sleep %s")
      io.stdout:write(tostring(ok), " ", tostring(err), "\n")
      ok, err = pcall(sb.exec, sb, "true")
      io.stdout:write(tostring(ok), " ", tostring(err), "\n")
      ok, err = pcall(ferry.sleep, 10)
      io.stdout:write(tostring(ok), " ", tostring(err), "\n")
    ]], arg))
    -- core.signals_install is what the verbs call; a script opts in the same way
    helpers.write_file(tmp .. "/main.lua", "require('ferry.core').signals_install(require('ferry.task').interrupt)\n"
      .. "dofile(" .. string.format("%q", script) .. ")\n")
    local t, pid = start_ferry { "run", tmp .. "/main.lua" }
    assert.is_true(eventually(function() return sleeping(arg) end), "the command did not start")
    signal(pid(), "INT")
    local res = ferry.wait(t)
    assert.equal("false interrupted (SIGINT)\nfalse interrupted (SIGINT)\nfalse interrupted (SIGINT)\n", res.stdout)
    assert.is_false(sleeping(arg))
    helpers.rmtree(tmp)
  end)
end)

describe("the install lock", function()
  local tmp, ws, policy_dir

  -- An adapter `spectool` in a FERRY_PATH dir: detect looks for tmp/bin/spectool, install runs `install`.
  local function adapter(install)
    helpers.write_file(policy_dir .. "/adapters/spectool.lua", string.format(
      "return { name = 'spectool', detect = %q, install = %q }\n", tmp .. "/bin/spectool", install))
  end

  local MAKE_TOOL
  before_each(function()
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    policy_dir = tmp .. "/policy"
    helpers.sh("mkdir -p " .. ws .. " " .. policy_dir .. "/adapters " .. tmp .. "/remote")
    helpers.write_file(ws .. "/a.txt", "a\n")
    MAKE_TOOL = "mkdir -p " .. tmp .. "/bin && printf '#!/bin/sh\\n' > " .. tmp .. "/bin/spectool && chmod +x "
      .. tmp .. "/bin/spectool"
  end)
  after_each(function() helpers.rmtree(tmp) end)

  local function prepare(provider, wait)
    local argv = { helpers.ferry_bin, "prepare", "-p", provider, "-a", "spectool", "-w", ws, "-r",
      tmp .. "/remote", "--state", tmp .. "/state.json", "--json" }
    local t = ferry.spawn(function()
      return assert(ferry.proc.run { argv = argv, env = { FERRY_PATH = policy_dir }, timeout_ms = 60000 })
    end)
    if wait == false then return t end
    local res = ferry.wait(t)
    local last
    for line in res.stdout:gmatch("[^\n]+") do last = line end
    return res, last and require("cjson").decode(last)
  end

  for _, pv in ipairs { { "local (flock)", "local" },
    { "busybox (no flock: the heartbeat dir)", "cmd:env PATH=" .. sandboxes.busybox_path() } } do
    it("an install killed mid-way leaves nothing that stops the next prepare: " .. pv[1], function()
      local arg = unique_sleep()
      adapter("sleep " .. arg .. "; " .. MAKE_TOOL)
      local argv = { "prepare", "-p", pv[2], "-a", "spectool", "-w", ws, "-r", tmp .. "/remote",
        "--state", tmp .. "/state.json" }
      local t, pid = start_ferry(argv, { FERRY_PATH = policy_dir })
      assert.is_true(eventually(function() return sleeping(arg) end), "the install did not start")
      signal(pid(), "INT")
      local res = ferry.wait(t)
      assert.equal(130, res.code, res.stderr)
      assert.is_false(sleeping(arg), "the install outlived ferry")
      adapter(MAKE_TOOL)
      local t0 = core.now_ms()
      local again, obj = prepare(pv[2])
      assert.equal(0, again.code, again.stderr)
      assert.equal("installed", obj.install_status)
      assert.is_true(core.now_ms() - t0 < 10000)
      local _, third = prepare(pv[2])
      assert.equal("present", third.install_status)
    end)
  end

  it("breaks a heartbeat lock whose beat is stale (no flock in the sandbox), at once", function()
    local busybox = "cmd:env PATH=" .. sandboxes.busybox_path()
    adapter(MAKE_TOOL)
    helpers.sh("mkdir -p " .. tmp .. "/remote/.ferry-runtime/install.lock && echo $(( $(date +%s) - 3600 )) > "
      .. tmp .. "/remote/.ferry-runtime/install.lock/beat")
    local t0 = core.now_ms()
    local res, obj = prepare(busybox)
    assert.equal(0, res.code, res.stderr)
    assert.equal("installed", obj.install_status)
    assert.is_true(core.now_ms() - t0 < 5000, "waited for a dead holder")
  end)

  it("waits for a live heartbeat lock (no flock in the sandbox)", function()
    local busybox = "cmd:env PATH=" .. sandboxes.busybox_path()
    adapter(MAKE_TOOL)
    local lock = tmp .. "/remote/.ferry-runtime/install.lock"
    helpers.sh("mkdir -p " .. lock .. " && date +%s > " .. lock .. "/beat")
    local pending_prepare = prepare(busybox, false)
    ferry.sleep(2500)
    assert.is_false(pending_prepare.done, "the prepare did not wait for the lock")
    helpers.sh("rm -rf " .. lock) -- the holder finishes
    local res = ferry.wait(pending_prepare)
    assert.equal(0, res.code, res.stderr)
    assert.truthy(res.stdout:find('"install_status":"installed"', 1, true))
  end)

  it('says "present" only when the detect probe passes, never from the marker alone', function()
    adapter(MAKE_TOOL)
    local _, first = prepare("local")
    assert.equal("installed", first.install_status)
    os.remove(tmp .. "/bin/spectool") -- the command went away; the marker of the install stays
    assert.truthy(helpers.read_file(tmp .. "/remote/.ferry-runtime/spectool.installed"))
    local _, second = prepare("local")
    assert.equal("installed", second.install_status)
    adapter("true") -- an install that exits 0 without installing anything
    os.remove(tmp .. "/bin/spectool")
    local _, third = prepare("local")
    assert.equal("failed", third.install_status)
    assert.equal("install exited 0 but " .. tmp .. "/bin/spectool is still not in the sandbox",
      third.install_warning)
  end)
end)
