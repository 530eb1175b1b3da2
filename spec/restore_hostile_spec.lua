-- A hostile sandbox: a cmd: provider whose PATH puts a fake `tar` first. When asked to create an archive it
-- sends a crafted one (spec/support/evil_tar.py); restore must refuse each attack, write nothing outside
-- the workspace and leave the workspace exactly as it was.
local core = require "ferry.core"
local ferry = require "ferry"
local helpers = require "support.helpers"
local W = require "support.workspaces"

local EVIL_TAR = helpers.root .. "/spec/support/evil_tar.py"

local FAKE_TAR = [[#!/bin/sh
# tar -c sends the crafted archive (when there is one); everything else is the real tar.
if [ "$1" = "-c" ] && [ -f "$FERRY_EVIL" ]; then exec cat "$FERRY_EVIL"; fi
exec /bin/tar "$@"
]]

-- {case, expected entry named in the error, expected reason (plain text)}
local ATTACKS = {
  { "absolute", "@OUTSIDE@/pwned", "absolute path" },
  { "dotdot", "../pwned", "'..' path component" },
  { "dotdot-inner", "sub/../../pwned", "'..' path component" },
  { "symlink-then-file", "esc", "symlink to \"@OUTSIDE@\": absolute target outside the workspace" },
  { "relative-symlink-then-file", "esc", "target resolves outside the workspace" },
  { "symlink-to-etc", "etc", "symlink to \"/etc\": absolute target outside the workspace" },
  { "symlink-up", "deep/up", "symlink to \"../..\": target resolves outside the workspace" },
  { "symlink-chain", "a", "symlink to \"b/../escaped\": target resolves outside the workspace" },
  { "hardlink", "hl", "hard link" },
  { "hardlink-outside", "hl", "hard link" },
  { "fifo", "fifo", "fifo" },
  { "chardev", "null", "device" },
  { "blockdev", "disk", "device" },
  { "duplicate", "dup", "duplicate entry" },
  { "disk-symlink-parent", "outlink/pwned", "parent outlink is a symlink in the workspace" },
}

describe("restore from a hostile sandbox", function()
  local tmp, ws, outside, evil, state, provider

  local function listing(dir)
    return assert(core.fs_readdir(dir))
  end

  before_each(function()
    tmp = helpers.tmpdir()
    ws, outside, evil, state = tmp .. "/ws", tmp .. "/outside", tmp .. "/evil.tar", tmp .. "/state.json"
    W.mkdir(tmp, "outside")
    W.write(tmp, "outside/target", "outside file\n")
    W.write(tmp, "bin/tar", FAKE_TAR, 493)
    W.write(ws, "a.txt", "original\n")
    W.write(ws, "sub/b.txt", "b\n")
    W.symlink(ws, "outlink", outside)   -- the user's own link out of the workspace
    W.symlink(ws, "victim", outside .. "/target")
    provider = "cmd:env PATH=" .. tmp .. "/bin:/usr/bin:/bin FERRY_EVIL=" .. evil
    assert(ferry.prepare { provider = provider, workspace = ws, remote_dir = tmp .. "/remote", state = state })
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  local function craft(case)
    assert(os.execute("python3 " .. core.sh_quote(EVIL_TAR) .. " " .. case .. " " .. core.sh_quote(evil) .. " "
      .. core.sh_quote(outside)))
  end

  for _, attack in ipairs(ATTACKS) do
    local case, entry, reason = attack[1], attack[2], attack[3]
    it("refuses " .. case .. " and writes nothing", function()
      craft(case)
      local before, temps_before = W.full(ws)
      local state_before = W.read(tmp, "state.json")
      local outside_before = listing(outside)
      local ok, err, code, partial = ferry.restore { state = state }
      entry = entry:gsub("@OUTSIDE@", outside)
      reason = reason:gsub("@OUTSIDE@", outside)
      assert.is_nil(ok)
      assert.equal("EPERM", code)
      local prefix = "restore refused: " .. entry .. ": "
      assert.equal(prefix, err:sub(1, #prefix))
      assert.truthy(err:find(reason, 1, true), err)
      assert.truthy(#partial.refused >= 1)
      assert.equal(err:sub(#"restore refused: " + 1), partial.refused[1])
      local after, temps_after = W.full(ws)
      assert.same({}, W.diff(before, after))
      assert.same(temps_before, temps_after)
      assert.equal("original\n", W.read(ws, "a.txt"))
      assert.same(outside_before, listing(outside))
      assert.equal("outside file\n", W.read(outside, "target"))
      assert.is_nil(core.fs_lstat(tmp .. "/pwned"))
      assert.equal(state_before, W.read(tmp, "state.json"))
    end)
  end

  it("lists every refused entry, not only the first", function()
    craft("symlink-then-file")
    local _, _, _, partial = ferry.restore { state = state }
    assert.equal(2, #partial.refused)
    assert.equal("esc/pwned: parent esc is a symlink in the archive", partial.refused[2])
  end)

  it("stops an archive over the size limit before writing", function()
    craft("bomb")
    local before = W.full(ws)
    local ok, err, code = ferry.restore { state = state, max_bytes = 1024 * 1024 }
    assert.is_nil(ok)
    assert.equal("EFBIG", code)
    assert.equal("restore refused: archive exceeds the 1048576 byte limit at bomb", err)
    assert.same({}, W.diff(before, W.full(ws)))
  end)

  it("stops a compressed bomb", function()
    craft("gzip-bomb")
    local before = W.full(ws)
    local ok, err, code = ferry.restore { state = state, max_bytes = 1024 * 1024 }
    assert.is_nil(ok)
    assert.truthy(code == "EFBIG" or code == "EINVAL", tostring(code))
    assert.matches("^restore", err)
    assert.same({}, W.diff(before, W.full(ws)))
  end)

  it("stops an endless stream at max_stream_bytes", function()
    W.write(tmp, "bin/tar", "#!/bin/sh\n[ \"$1\" = -c ] && exec head -c 5000000 /dev/zero\nexec /bin/tar \"$@\"\n", 493)
    local before = W.full(ws)
    local ok, err, code = ferry.restore { state = state, max_stream_bytes = 1024 * 1024 }
    assert.is_nil(ok)
    assert.equal("EFBIG", code)
    assert.equal("restore refused: the sandbox sent over 1048576 bytes", err)
    assert.same({}, W.diff(before, W.full(ws)))
  end)

  it("drops setuid, setgid and sticky bits", function()
    craft("setuid")
    local got = assert(ferry.restore { state = state })
    assert.same({}, got.refused)
    assert.equal(493, core.fs_lstat(ws .. "/suid").mode)
    assert.equal(493, core.fs_lstat(ws .. "/sgid").mode)
    assert.equal(511, core.fs_lstat(ws .. "/sticky").mode)
  end)

  it("ignores excluded names, the runtime dir and the self entry", function()
    craft("ignored")
    local got = assert(ferry.restore { state = state })
    assert.same({}, got.refused)
    assert.same({ "a.txt" }, got.changed)
    assert.is_nil(core.fs_lstat(ws .. "/node_modules"))
    assert.is_nil(core.fs_lstat(ws .. "/.ferry-runtime"))
    assert.is_nil(core.fs_lstat(ws .. "/._resource"))
  end)

  it("replaces a symlink leaf instead of writing through it", function()
    craft("leaf-symlink")
    local got = assert(ferry.restore { state = state })
    assert.same({ "a.txt", "victim" }, got.changed)
    assert.equal("file", core.fs_lstat(ws .. "/victim").kind)
    assert.equal("pwned\n", W.read(ws, "victim"))
    assert.equal("outside file\n", W.read(outside, "target"))
  end)

  it("lets symlinks out only when allowed", function()
    craft("symlink-to-etc")
    local got = assert(ferry.restore { state = state, allow_outside_symlinks = true })
    assert.equal("/etc", core.fs_readlink(ws .. "/etc"))
    assert.same({ "a.txt", "etc" }, got.changed)
  end)
end)
