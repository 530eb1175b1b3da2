-- One workspace, one operation at a time (issue 8, item 1). A prepare runs in a child `ferry` process against a
-- sandbox whose `tar -x` waits before it extracts, so the remote dir stays cleared for a while; a restore of the
-- same workspace started meanwhile must not read that half-cleared sandbox (it would take the missing files as
-- deleted and remove them on the host): it waits for the lock, or gives up naming the holder's pid.
local core = require "ferry.core"
local ferry = require "ferry"
local helpers = require "support.helpers"
local W = require "support.workspaces"

local SLOW_TAR = [[#!/bin/sh
# tar -x waits while the file named by $FERRY_SLOW exists, and $FERRY_NAP seconds more; everything else is the
# real tar.
if [ "$1" = "-x" ] && [ -n "$FERRY_SLOW" ]; then
  while [ -f "$FERRY_SLOW" ]; do sleep 0.05; done
  [ -z "$FERRY_NAP" ] || sleep "$FERRY_NAP"
fi
exec /bin/tar "$@"
]]

local FILES = 60

describe("the workspace lock", function()
  local tmp, ws, remote, state, provider, slow

  before_each(function()
    tmp = helpers.tmpdir()
    ws, remote, state, slow = tmp .. "/ws", tmp .. "/remote", tmp .. "/state.json", tmp .. "/slow"
    for i = 1, FILES do W.write(ws, string.format("d%d/f%02d.txt", i % 4, i), "file " .. i .. "\n") end
    W.write(tmp, "bin/tar", SLOW_TAR, 493)
    W.mkdir(tmp, "remote")
    provider = "cmd:env PATH=" .. tmp .. "/bin:/usr/bin:/bin FERRY_SLOW=" .. slow
    assert(ferry.prepare { provider = provider, workspace = ws, remote_dir = remote, state = state })
  end)
  after_each(function()
    os.remove(slow)
    for _, pid in ipairs(helpers.pids_with(remote)) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    helpers.rmtree(tmp)
  end)

  -- Start `ferry prepare` of the workspace in the background; its sync waits while `slow` exists. Returns its pid
  -- once the remote dir has been cleared (the sandbox holds no user file).
  local function slow_prepare()
    helpers.write_file(slow, "")
    -- another state file: no earlier state to make a delta from, so a full sync clears the remote dir first
    local cmd = string.format("%s prepare -p %s -w %s -r %s --state %s >%s 2>&1 & echo $!",
      core.sh_quote(helpers.ferry_bin), core.sh_quote(provider), core.sh_quote(ws), core.sh_quote(remote),
      core.sh_quote(tmp .. "/second.json"), core.sh_quote(tmp .. "/prepare.log"))
    local p = assert(io.popen(cmd, "r"))
    local pid = tonumber(p:read("l"))
    p:close()
    local deadline = core.now_ms() + 20000
    while core.fs_lstat(remote .. "/d1") do
      assert(core.now_ms() < deadline, "the prepare never cleared the remote dir")
      ferry.sleep(20)
    end
    return pid
  end

  local function alive(pid)
    local stat = helpers.read_file("/proc/" .. pid .. "/stat")
    return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
  end

  local function finish(pid)
    os.remove(slow)
    local deadline = core.now_ms() + 20000
    while alive(pid) do
      assert(core.now_ms() < deadline, "the prepare did not finish")
      ferry.sleep(20)
    end
  end

  local function assert_all_files(root)
    for i = 1, FILES do
      assert.equal("file " .. i .. "\n", W.read(root, string.format("d%d/f%02d.txt", i % 4, i)), root)
    end
  end

  it("makes a restore started during a prepare wait for it: nothing is lost on either side", function()
    local before = W.full(ws)
    local pid = slow_prepare()
    ferry.spawn(function()
      ferry.sleep(1000)
      os.remove(slow) -- the prepare goes on only after the restore has been waiting a while
    end)
    local t0 = core.now_ms()
    local got, err = ferry.restore { state = state }
    local waited = core.now_ms() - t0
    finish(pid)
    assert.same({}, W.diff(before, W.full(ws))) -- without the lock: every file deleted on the host
    assert_all_files(ws)
    assert_all_files(remote)
    assert.truthy(got, err)
    assert.same({}, got.deleted)
    assert.same({}, got.changed)
    assert.is_true(waited >= 900, "the restore waited for the prepare")
  end)

  it("gives up after lock_wait_ms naming the holder's pid, and touches nothing", function()
    local before = W.full(ws)
    local pid = slow_prepare()
    local t0 = core.now_ms()
    local ok, err, code = ferry.restore { state = state, lock_wait_ms = 300 }
    assert.is_true(core.now_ms() - t0 >= 300)
    assert.is_nil(ok)
    assert.equal(ws .. ": another ferry prepare/restore is running (pid " .. pid .. ")", err)
    assert.equal("EBUSY", code)
    -- the same from the command line, for a restore and for a second prepare
    local out = io.popen(core.sh_quote(helpers.ferry_bin) .. " restore --state " .. core.sh_quote(state)
      .. " 2>&1; echo \"exit $?\"", "r")
    local text = out:read("a")
    out:close()
    assert.equal("ferry: restore: " .. ws .. ": another ferry prepare/restore is running (pid " .. pid .. ")\n"
      .. "exit 1\n", text)
    local ok2, err2, code2 = ferry.prepare { provider = provider, workspace = ws, remote_dir = remote,
      state = tmp .. "/other.json", lock_wait_ms = 0 }
    assert.is_nil(ok2)
    assert.equal(ws .. ": another ferry prepare/restore is running (pid " .. pid .. ")", err2)
    assert.equal("EBUSY", code2)
    finish(pid)
    assert.same({}, W.diff(before, W.full(ws)))
    assert_all_files(remote)
  end)

  it("is the same lock for every path to the workspace and every state file", function()
    W.symlink(tmp, "alias", ws)
    local held = assert(require("ferry.workspace_lock").acquire(ws, "prepare"))
    local ok, err, code = ferry.prepare { provider = provider, workspace = tmp .. "/alias/", remote_dir = remote,
      state = tmp .. "/via-alias.json", lock_wait_ms = 0 }
    held:release()
    assert.is_nil(ok)
    assert.equal(tmp .. "/alias: another ferry prepare/restore is running (pid " .. core.getpid() .. ")", err)
    assert.equal("EBUSY", code)
    assert(ferry.prepare { provider = provider, workspace = tmp .. "/alias", remote_dir = remote,
      state = tmp .. "/via-alias.json", lock_wait_ms = 0 })
  end)

  it("is released when a prepare is killed with -9; a restore then refuses the half-synced sandbox", function()
    local before = W.full(ws)
    local pid = slow_prepare()
    os.execute("kill -9 " .. pid)
    for _, child in ipairs(helpers.pids_with(remote)) do os.execute("kill -9 " .. child .. " 2>/dev/null") end
    os.remove(slow)
    local deadline = core.now_ms() + 5000
    while alive(pid) do
      assert(core.now_ms() < deadline)
      ferry.sleep(20)
    end
    -- the lock is free at once (no wait), but the sandbox holds part of the workspace at best
    local ok, err, code = ferry.restore { state = state, lock_wait_ms = 0 }
    assert.is_nil(ok)
    local mark = require("ferry.state").unfinished_path(provider, remote)
    assert.equal("restore: a prepare into " .. remote .. " did not finish, so the sandbox may hold part of the "
      .. "workspace (a restore would take the rest as deleted); prepare again, or remove " .. mark
      .. " to restore anyway", err)
    assert.equal("EAGAIN", code)
    assert.same({}, W.diff(before, W.full(ws)))
    assert(ferry.prepare { provider = provider, workspace = ws, remote_dir = remote, state = state,
      lock_wait_ms = 0 })
    assert.is_nil(core.fs_lstat(mark))
    local got = assert(ferry.restore { state = state, lock_wait_ms = 0 })
    assert.same({}, got.deleted)
    assert_all_files(ws)
    assert_all_files(remote)
  end)

  it("makes the --many items of one workspace take turns", function()
    local items = {}
    for i = 1, 2 do
      items[i] = string.format('{"provider": %q, "workspace": %q, "remote_dir": %q, "state": %q}',
        provider .. " FERRY_NAP=1", ws, remote, tmp .. "/many" .. i .. ".json")
    end
    helpers.write_file(tmp .. "/many.json", "[" .. table.concat(items, ",") .. "]")
    local p = assert(io.popen(core.sh_quote(helpers.ferry_bin) .. " prepare --many "
      .. core.sh_quote(tmp .. "/many.json") .. " --json 2>&1", "r"))
    local lines = {}
    for line in p:lines() do lines[#lines + 1] = require("cjson").decode(line) end
    p:close()
    local ms = {}
    for _, e in ipairs(lines) do
      if e.event == "sandbox" then
        assert.is_true(e.ok, e.error)
        ms[#ms + 1] = e.ms
      end
    end
    table.sort(ms)
    -- each sync naps 1 s; the item that waited for the other took both naps
    assert.equal(2, #ms)
    assert.is_true(ms[2] >= 2000, "the second item did not wait: " .. ms[1] .. " and " .. ms[2] .. " ms")
    assert_all_files(remote)
  end)
end)
