-- Limits on what a sandbox can send (issue 8, item 4): paths too long, too deep, or with a component too
-- long are refused before anything is written, so no entry can leave the workspace with a path that later
-- prepares and restores cannot walk ("File name too long"); and the guard's cost is linear in the archive.
local core = require "ferry.core"
local ferry = require "ferry"
local guard = require "ferry.guard"
local helpers = require "support.helpers"
local W = require "support.workspaces"

local EVIL_TAR = helpers.root .. "/spec/support/evil_tar.py"

local FAKE_TAR = [[#!/bin/sh
if [ "$1" = "-c" ] && [ -f "$FERRY_EVIL" ]; then exec cat "$FERRY_EVIL"; fi
exec /bin/tar "$@"
]]

-- Run fn, raising once it has run for `ms` (checked every 10,000 VM instructions), so that a guard that is not
-- linear fails in seconds instead of running for hours.
local function within(ms, fn)
  local t0 = core.now_ms()
  debug.sethook(function()
    if core.now_ms() - t0 > ms then
      debug.sethook()
      error("over " .. ms .. " ms", 2)
    end
  end, "", 10000)
  local ok, result = pcall(fn)
  debug.sethook()
  assert(ok, result)
  return result, core.now_ms() - t0
end

describe("restore of names too long or too deep", function()
  local tmp, ws, evil, state, provider
  before_each(function()
    tmp = helpers.tmpdir()
    ws, evil, state = tmp .. "/ws", tmp .. "/evil.tar", tmp .. "/state.json"
    W.write(tmp, "bin/tar", FAKE_TAR, 493)
    W.write(ws, "a.txt", "original\n")
    provider = "cmd:env PATH=" .. tmp .. "/bin:/usr/bin:/bin FERRY_EVIL=" .. evil
    assert(ferry.prepare { provider = provider, workspace = ws, remote_dir = tmp .. "/remote", state = state })
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  local limit
  local CASES = {
    { "deep-10000", function() return string.rep("d/", 10000) .. "f" end,
      function() return "path longer than " .. limit .. " bytes" end },
    { "deep-300", function() return string.rep("d/", 257) end, -- a directory entry: its name ends with '/'
      function() return "path deeper than 256 components" end },
    { "long-component", function() return string.rep("c", 300) end,
      function() return "path component longer than 255 bytes" end },
    { "long-path", function() -- the first directory entry over the limit
        local parts = {}
        repeat parts[#parts + 1] = string.char(96 + #parts + 1):rep(250) until #table.concat(parts, "/") > limit
        return table.concat(parts, "/") .. "/"
      end, function() return "path longer than " .. limit .. " bytes" end },
    { "orphan", function() return "nodir/f" end, function() return "parent nodir is not in the archive" end },
  }

  for _, case in ipairs(CASES) do
    local name, first_entry, reason = case[1], case[2], case[3]
    it("refuses " .. name .. " quickly, writes nothing, and later prepares and restores still work", function()
      limit = 4095 - 64 - #ws - 1 -- guard.path_limit(ws)
      assert(os.execute("python3 " .. core.sh_quote(EVIL_TAR) .. " " .. name .. " " .. core.sh_quote(evil) .. " /x"))
      local before = W.full(ws)
      local state_before = helpers.read_file(state)
      local r, ms = within(10000, function() return { ferry.restore { state = state } } end)
      local ok, err, code, partial = r[1], r[2], r[3], r[4]
      assert.is_nil(ok)
      assert.equal("EPERM", code)
      assert.equal("restore refused: " .. first_entry() .. ": " .. reason(), err)
      assert.truthy(#partial.refused >= 1)
      assert.is_true(ms < 10000, "the restore took " .. ms .. " ms")
      assert.equal(limit, guard.path_limit(ws))
      assert.same({}, W.diff(before, W.full(ws)))
      assert.equal(state_before, helpers.read_file(state))
      -- not bricked: a prepare and a restore of the workspace work as before
      os.remove(evil)
      assert(ferry.prepare { provider = provider, workspace = ws, remote_dir = tmp .. "/remote", state = state })
      W.write(tmp, "remote/a.txt", "edited\n")
      local got = assert(ferry.restore { state = state })
      assert.same({ "a.txt" }, got.changed)
    end)
  end

  it("names a conflict copy within 255 bytes when the name is long", function()
    local long = string.rep("n", 250)
    W.write(ws, long, "base\n")
    assert(ferry.prepare { provider = provider, workspace = ws, remote_dir = tmp .. "/remote", state = state })
    W.write(ws, long, "host\n")
    W.write(tmp, "remote/" .. long, "agent\n")
    local got = assert(ferry.restore { state = state })
    local copy = string.rep("n", 255 - #".ferry-remote") .. ".ferry-remote"
    assert.equal(copy, got.conflict_copies[long])
    assert.equal("agent\n", W.read(ws, copy))
    assert.equal("host\n", W.read(ws, long))
  end)
end)

describe("the guard's cost", function()
  local ws = "/tmp/ferry-guard-cost-ws" -- nothing on disk: the disk checks find nothing

  it("is linear for a 10,000-deep archive", function()
    local entries, name = {}, "d"
    for i = 1, 10000 do
      entries[i] = { name = name, kind = "dir", mode = 493 }
      name = name .. "/d"
    end
    local checked, ms = within(10000, function() return guard.check(entries, { workspace = ws }) end)
    assert.equal(256, #checked.order) -- the first 256 levels pass, every deeper one is refused
    assert.equal(10000 - 256, #checked.refused)
    assert.equal("path deeper than 256 components", checked.refused[1].reason)
    assert.is_true(checked.steps <= 4 * #entries, "steps: " .. checked.steps)
    print(string.format("\nguard: 10,000-deep archive checked in %.0f ms, %d steps", ms, checked.steps))
  end)

  it("is linear for a 50,000-entry archive 200 directories deep", function()
    local entries, name = {}, "d"
    for i = 1, 200 do
      entries[i] = { name = name, kind = "dir", mode = 493 }
      if i < 200 then name = name .. "/d" end
    end
    for i = 1, 50000 do
      entries[#entries + 1] = { name = string.format("%s/f%05d", name, i), kind = "file", mode = 420, size = 0,
        sha256 = core.sha256("") }
    end
    entries[#entries + 1] = { name = name .. "/link", kind = "symlink", linkname = string.rep("../", 199) .. "d" }
    local checked, ms = within(10000, function() return guard.check(entries, { workspace = ws }) end)
    assert.same({}, checked.refused)
    assert.equal(#entries, #checked.order)
    assert.is_true(checked.steps <= 4 * #entries, "steps: " .. checked.steps)
    local snap = guard.snapshot(checked)
    assert.equal("dir", snap[name].kind)
    print(string.format("\nguard: 50,201 entries 200 deep checked in %.0f ms, %d steps", ms, checked.steps))
  end)
end)
