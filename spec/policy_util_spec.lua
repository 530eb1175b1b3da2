-- The helpers policy authors use: ferry.adapter_util (bounded host reads, symlinks, copy-back of a file under
-- a lock, timestamps) and ferry.provider_util (the prefix-command provider template, word splitting).
local core = require "ferry.core"
local schema = require "ferry.schema"
local adapter_util = require "ferry.adapter_util"
local provider_util = require "ferry.provider_util"
local helpers = require "support.helpers"

local function mkdirs(path)
  assert(os.execute("mkdir -p '" .. path .. "'"))
end

describe("adapter_util", function()
  local root

  before_each(function() root = helpers.tmpdir() end)
  after_each(function() helpers.rmtree(root) end)

  it("read_file reads a bounded host file, with a clear error otherwise", function()
    helpers.write_file(root .. "/f", "12345")
    assert.are.equal("12345", adapter_util.read_file(root .. "/f", 5))
    assert.are.same({ nil, "read " .. root .. "/f: over the 4 byte limit", "EFBIG" },
      { adapter_util.read_file(root .. "/f", 4) })
    assert.are.same({ nil, "read " .. root .. "/none: No such file or directory", "ENOENT" },
      { adapter_util.read_file(root .. "/none", 4) })
    assert.are.same({ nil, "read " .. root .. ": is a directory", "EISDIR" }, { adapter_util.read_file(root, 4) })
  end)

  it("link_target follows a file's own symlinks; realpath resolves every one", function()
    mkdirs(root .. "/real")
    helpers.write_file(root .. "/real/f", "x")
    assert(core.fs_safe_symlink(root, "b", "real/f"))
    assert(core.fs_safe_symlink(root, "a", root .. "/b"))
    assert(core.fs_safe_symlink(root, "dir", "real"))
    assert.are.equal(root .. "/real/f", adapter_util.link_target(root .. "/a"))
    assert.are.equal(root .. "/dir/f", adapter_util.link_target(root .. "/dir/f")) -- parents stay
    assert.are.equal(root .. "/none", adapter_util.link_target(root .. "/none"))
    assert(core.fs_safe_symlink(root, "loop", "loop"))
    assert.are.same({ nil, root .. "/loop: more than 16 symlinks in a row", "ELOOP" },
      { adapter_util.link_target(root .. "/loop") })
    local real = assert(adapter_util.realpath(root .. "/dir/f"))
    assert.are.equal("/real/f", real:sub(-7))
    assert.is_nil(real:find("/dir/", 1, true))
  end)

  it("copy_back writes under a lock, deciding again once it holds it", function()
    helpers.write_file(root .. "/cred", "old")
    local seen = {}
    local function allow(host) seen[#seen + 1] = host end
    assert.are.same({ "kept", "not newer" },
      { adapter_util.copy_back(root .. "/cred", "new", { refuse = function() return "not newer" end }) })
    assert.are.same({ "cred" }, core.fs_readdir(root)) -- refused before any lock file is made
    assert.are.same({ "copied", root .. "/cred" },
      { adapter_util.copy_back(root .. "/cred", "new", { refuse = allow }) })
    assert.are.same({ "old", "old" }, seen)
    assert.are.equal("new", helpers.read_file(root .. "/cred"))
    assert.are.equal(tonumber("600", 8), core.fs_lstat(root .. "/cred").mode & 511)
    -- changed its mind under the lock: nothing written
    local calls = 0
    local status, reason = adapter_util.copy_back(root .. "/cred", "newer", { refuse = function()
      calls = calls + 1
      return calls == 2 and "changed meanwhile" or nil
    end })
    assert.are.same({ "kept", "changed meanwhile", "new" }, { status, reason, helpers.read_file(root .. "/cred") })
  end)

  it("copy_back updates a symlink's target, and gives up on a lock held too long", function()
    mkdirs(root .. "/shared")
    helpers.write_file(root .. "/shared/cred", "old")
    assert(core.fs_safe_symlink(root, "cred", "shared/cred"))
    assert.are.same({ "copied", root .. "/shared/cred" },
      { adapter_util.copy_back(root .. "/cred", "new", { refuse = function() end, mode = tonumber("640", 8) }) })
    assert.are.equal("symlink", core.fs_lstat(root .. "/cred").kind)
    assert.are.equal("new", helpers.read_file(root .. "/shared/cred"))
    assert.are.equal(tonumber("640", 8), core.fs_lstat(root .. "/shared/cred").mode & 511)
    local lock = assert(core.fs_lock(root .. "/shared/.cred.ferry-lock"))
    local status, err, code = adapter_util.copy_back(root .. "/cred", "newer",
      { refuse = function() end, lock_wait_ms = 100 })
    lock:unlock()
    assert.are.same({ nil, "lock " .. root .. "/shared/.cred.ferry-lock: held by another process", "EBUSY" },
      { status, err, code })
    assert.are.equal("new", helpers.read_file(root .. "/shared/cred"))
  end)

  it("copy_back reports a failed write", function()
    mkdirs(root .. "/cred/inside")
    assert.are.same({ nil, "write " .. root .. "/cred: Is a directory", "EISDIR" },
      { adapter_util.copy_back(root .. "/cred", "new", { refuse = function() end }) })
    assert.are.equal("dir", core.fs_lstat(root .. "/cred").kind)
  end)

  it("parse_time keeps nanoseconds and offsets; time_after compares instants", function()
    local a = adapter_util.parse_time("2025-03-01T11:00:00+02:00")
    local b = adapter_util.parse_time("2025-03-01T10:30:00Z")
    assert.is_true(adapter_util.time_after(b, a))
    assert.are.same({ 1740787200, 123456789 }, adapter_util.parse_time("2025-03-01T00:00:00.123456789Z"))
    assert.is_nil(adapter_util.parse_time("yesterday"))
  end)
end)

describe("provider_util.prefix_provider", function()
  local function provider(prefix, extra)
    local def = { scheme = "t", usage = "t:X", help = "a test", sandbox = "box",
      target = function(arg)
        if arg == "bad" then return nil, "not a target" end
        return { prefix = prefix, target = arg }
      end }
    for k, v in pairs(extra or {}) do def[k] = v end
    return provider_util.prefix_provider(def)
  end

  it("builds a provider that runs PREFIX sh -c SCRIPT and passes the provider schema", function()
    local mod = provider({ "env", "FERRY_T=1" })
    assert.are.same({}, schema.validate(schema.PROVIDER_MODULE, mod))
    local p = assert(mod.open("x"))
    assert.are.same({}, schema.validate(schema.PROVIDER, p))
    assert.are.same({ "t:x", "x", { stdin = true, binary = true }, "/tmp" },
      { p.name, p.target, p.caps, p.scratch_dir })
    assert.are.same({ "env", "FERRY_T=1", "sh", "-c", "echo $FERRY_T" }, p:command("echo $FERRY_T"))
    assert.are.same({ nil, "t:bad: not a target", "EINVAL" }, { mod.open("bad") })
  end)

  it("says why the probe failed, in the sandbox's word", function()
    local _, err, code = provider({ "ferry-no-such-program" }).open("x")
    assert.are.same({ "t:x: ferry-no-such-program is not installed or not on PATH", "ENOENT" }, { err, code })
    _, err, code = provider({ "sh", "-c", "echo refused >&2; exit 3", "sh" }).open("x")
    assert.are.same({ "t:x: cannot run a command in the box: refused", "EHOSTUNREACH" }, { err, code })
    _, err, code = provider({ "sh", "-c", "sleep 5", "sh" }).open("x", { probe_timeout_ms = 1000 })
    assert.are.same({ "t:x: the box did not answer within 1 s", "ETIMEDOUT" }, { err, code })
    _, err = provider({ "sh", "-c", "exit 3", "sh" }, { explain = { unreachable = function(p, res)
      return "exit " .. res.code .. " from " .. p.target end } }).open("x")
    assert.are.equal("t:x: exit 3 from x", err)
    assert.is_table(provider({ "ferry-no-such-program" }).open("x", { probe = false }))
  end)

  it("split_words splits a command line as a shell does", function()
    assert.are.same({ "a b", "c" }, provider_util.split_words([['a b' c]]))
  end)
end)
