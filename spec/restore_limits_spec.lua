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
  local tmp, ws
  before_each(function()
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws" -- nothing on disk: the disk checks find nothing
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  -- Python's tarfile writes the archive `body` (statements on `tar`, `dir(name)` and `reg(name)` defined).
  local function archive(body)
    local path = tmp .. "/a.tar"
    helpers.write_file(tmp .. "/make.py", "import tarfile, io\n"
      .. "def dir(name):\n  i = tarfile.TarInfo(name); i.type = tarfile.DIRTYPE; i.mode = 0o755; tar.addfile(i)\n"
      .. "def reg(name):\n  i = tarfile.TarInfo(name); i.size = 0; tar.addfile(i, io.BytesIO(b''))\n"
      .. "def link(name, target):\n  i = tarfile.TarInfo(name); i.type = tarfile.SYMTYPE; i.linkname = target; "
      .. "tar.addfile(i)\n"
      .. "with tarfile.open(" .. string.format("%q", path) .. ", 'w', format=tarfile.GNU_FORMAT) as tar:\n" .. body)
    helpers.sh("python3 " .. core.sh_quote(tmp .. "/make.py"))
    return path
  end

  -- The scan and the check of an archive, as restore runs them.
  local function check(path)
    local t, info = assert(core.tar_scan_tree(path, guard.scan_options(ws, guard.ignore_matcher({}, {}))))
    return guard.check(t, info, { workspace = ws }), t
  end

  it("is linear for a 10,000-deep archive", function()
    local path = archive("  n = 'd'\n  for i in range(10000):\n    dir(n)\n    n = n + '/d'\n")
    local checked, ms = within(10000, function() return check(path) end)
    assert.equal(10000 - 256, #checked.refused) -- the first 256 levels pass, every deeper one is refused
    assert.equal("path deeper than 256 components", checked.refused[1].reason)
    assert.is_true(checked.steps <= 4 * 10000, "steps: " .. checked.steps)
    print(string.format("\nguard: 10,000-deep archive scanned and checked in %.0f ms, %d steps", ms, checked.steps))
  end)

  it("is linear for a 50,000-entry archive 200 directories deep", function()
    local path = archive("  n = 'd'\n  for i in range(200):\n    dir(n)\n    n = n + ('/d' if i < 199 else '')\n"
      .. "  for i in range(50000):\n    reg('%s/f%05d' % (n, i))\n"
      .. "  link(n + '/link', '../' * 199 + 'd')\n")
    local checked, ms, t
    checked, ms = within(10000, function()
      local c
      c, t = check(path)
      return c
    end)
    assert.same({}, checked.refused)
    assert.equal(50201, t:count())
    assert.is_true(checked.steps <= 4 * 50201, "steps: " .. checked.steps)
    assert.equal("dir", t:get(("d/"):rep(199) .. "d").kind)
    print(string.format("\nguard: 50,201 entries 200 deep scanned and checked in %.0f ms, %d steps", ms, checked.steps))
  end)
end)
