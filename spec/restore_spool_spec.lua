-- Restore's spool after a crash (issue 8, item 10). Restores run in child `ferry` processes with a private
-- TMPDIR against a sandbox whose `tar -c` sends part of the stream and then stalls while a file exists, so a
-- spool is on disk mid-receive. A restore killed with -9 leaves it; the next restore removes it, but never
-- the spool of a restore that is still running; SIGTERM and SIGINT remove the spool on the way out.
local core = require "ferry.core"
local ferry = require "ferry"
local helpers = require "support.helpers"
local W = require "support.workspaces"

-- tar -c sends its first 20 KiB, then waits while $FERRY_STALL exists, then sends the rest.
local STALLING_TAR = [[#!/bin/sh
case "$*" in *"-T /dev/null"*) exec /bin/tar "$@" ;; esac
if [ "$1" = "-c" ] && [ -n "$FERRY_STALL" ] && [ -f "$FERRY_STALL" ]; then
  /bin/tar "$@" | {
    dd bs=512 count=40 iflag=fullblock 2>/dev/null
    while [ -f "$FERRY_STALL" ]; do sleep 0.05; done
    cat
  }
  exit 0
fi
exec /bin/tar "$@"
]]

describe("restore's spool", function()
  local tmp, spools

  -- A workspace prepared into its own sandbox; returns its state file and its stall file.
  local function sandbox(name)
    local ws, remote = tmp .. "/" .. name, tmp .. "/" .. name .. "-remote"
    for i = 1, 20 do W.write(ws, string.format("f%02d.bin", i), string.rep(string.char(64 + i), 8192)) end
    W.mkdir(tmp, name .. "-remote")
    local stall = tmp .. "/" .. name .. ".stall"
    local provider = "cmd:env PATH=" .. tmp .. "/bin:/usr/bin:/bin FERRY_STALL=" .. stall
    local state = tmp .. "/" .. name .. ".json"
    assert(ferry.prepare { provider = provider, workspace = ws, remote_dir = remote, state = state })
    W.write(remote, "f01.bin", "the agent's\n")
    return state, stall, remote
  end

  before_each(function()
    tmp = helpers.tmpdir()
    spools = tmp .. "/spools"
    W.mkdir(tmp, "spools")
    W.write(tmp, "bin/tar", STALLING_TAR, 493)
  end)
  after_each(function()
    for _, pid in ipairs(helpers.pids_with(tmp)) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    helpers.rmtree(tmp)
  end)

  local function spool_dirs()
    local out = {}
    for _, name in ipairs(assert(core.fs_readdir(spools))) do
      if name:find("^ferry%-restore%-") then out[#out + 1] = name end
    end
    return out
  end

  -- `ferry restore --state STATE` in the background with TMPDIR=spools; its pid once its spool holds data.
  local function stalled_restore(state, stall)
    helpers.write_file(stall, "")
    local before = {}
    for _, name in ipairs(spool_dirs()) do before[name] = true end
    -- env --default-signal: a background job of a non-interactive shell starts with SIGINT ignored
    local p = assert(io.popen(string.format("TMPDIR=%s env --default-signal=INT %s restore --state %s "
      .. ">/dev/null 2>&1 & echo $!",
      core.sh_quote(spools), core.sh_quote(helpers.ferry_bin), core.sh_quote(state)), "r"))
    local pid = tonumber(p:read("l"))
    p:close()
    local deadline = core.now_ms() + 20000
    while true do
      for _, name in ipairs(spool_dirs()) do
        local st = not before[name] and core.fs_lstat(spools .. "/" .. name .. "/remote.tar")
        if st and st.size > 0 then return pid, name end
      end
      assert(core.now_ms() < deadline, "no spool appeared")
      ferry.sleep(20)
    end
  end

  local function wait_gone(pid)
    local deadline = core.now_ms() + 10000
    while true do
      local stat = helpers.read_file("/proc/" .. pid .. "/stat")
      if not stat or stat:match("^%d+ %b() (%a)") == "Z" then return end
      assert(core.now_ms() < deadline, "process " .. pid .. " did not end")
      ferry.sleep(20)
    end
  end

  local function restore_now(state)
    local p = assert(io.popen(string.format("TMPDIR=%s %s restore --state %s 2>&1; echo \"exit $?\"",
      core.sh_quote(spools), core.sh_quote(helpers.ferry_bin), core.sh_quote(state)), "r"))
    local out = p:read("a")
    p:close()
    return out
  end

  it("left by a restore killed with -9 is removed by the next one; a live restore's spool is not", function()
    local state_a, stall_a, remote_a = sandbox("a")
    local state_b, stall_b = sandbox("b")
    local killed, dead_spool = stalled_restore(state_a, stall_a)
    os.execute("kill -9 " .. killed)
    wait_gone(killed)
    for _, pid in ipairs(helpers.pids_with(remote_a)) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    os.remove(stall_a)
    assert.same({ dead_spool }, spool_dirs()) -- the kill left it
    local live, live_spool = stalled_restore(state_b, stall_b)
    local out = restore_now(state_a)
    assert.equal("exit 0", out:match("exit %d+"), out)
    assert.same({ live_spool }, spool_dirs()) -- the dead run's spool is gone, the live one's untouched
    assert.equal("the agent's\n", W.read(tmp, "a/f01.bin"))
    os.remove(stall_b)
    wait_gone(live)
    assert.same({}, spool_dirs())
    assert.equal("the agent's\n", W.read(tmp, "b/f01.bin"))
    assert.matches("^ferry%-restore%-" .. killed .. "%-%x+%-", dead_spool) -- named after its owner
  end)

  for _, signal in ipairs { "TERM", "INT" } do
    it("is removed when SIG" .. signal .. " ends the restore", function()
      local state, stall, remote = sandbox("a")
      local pid = stalled_restore(state, stall)
      os.execute("kill -" .. signal .. " " .. pid)
      wait_gone(pid)
      for _, child in ipairs(helpers.pids_with(remote)) do os.execute("kill -9 " .. child .. " 2>/dev/null") end
      assert.same({}, spool_dirs())
      assert.equal("file", core.fs_lstat(tmp .. "/a/f01.bin").kind)
    end)
  end

  it("of another user, or named like one without an owner's token, is never swept", function()
    local scratch = require "ferry.scratch"
    local alive = scratch.start_token(core.getpid())
    assert.matches("^%x+$", alive)
    assert.equal(12, #alive)
    assert.is_nil(scratch.start_token(999999999))
    -- "0": made where /proc could not say who owns it; a dead pid's real token: swept
    W.mkdir(spools, "ferry-restore-999999999-0-abcdef")
    W.mkdir(spools, "ferry-restore-999999999-0123456789ab-abcdef")
    W.mkdir(spools, "ferry-restore-" .. core.getpid() .. "-" .. alive .. "-abcdef")
    local others = {}
    W.mkdir(spools, "ferry-restore-999999998-0123456789ab-abcdef")
    if os.execute("chown nobody " .. core.sh_quote(spools .. "/ferry-restore-999999998-0123456789ab-abcdef")
        .. " 2>/dev/null") then
      others[1] = "ferry-restore-999999998-0123456789ab-abcdef" -- another user's: never ours to remove
    else
      os.remove(spools .. "/ferry-restore-999999998-0123456789ab-abcdef")
    end
    local p = assert(io.popen("TMPDIR=" .. core.sh_quote(spools) .. " " .. core.sh_quote(helpers.ferry_bin)
      .. " -e " .. core.sh_quote([[print(#require("ferry.scratch").sweep("restore"))]]), "r"))
    local swept = p:read("a")
    p:close()
    assert.equal("1\n", swept)
    local want = { "ferry-restore-" .. core.getpid() .. "-" .. alive .. "-abcdef", "ferry-restore-999999999-0-abcdef" }
    for _, name in ipairs(others) do want[#want + 1] = name end
    table.sort(want)
    assert.same(want, spool_dirs())
  end)
end)
