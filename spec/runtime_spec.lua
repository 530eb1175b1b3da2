-- prepare and restore (ferry.prepare, ferry.restore) end to end against the local, bwrap, cmd and busybox
-- sandboxes.
local core = require "ferry.core"
local ferry = require "ferry"
local helpers = require "support.helpers"
local sandboxes = require "support.sandboxes"
local W = require "support.workspaces"

local function urandom(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local data = f:read(n)
  f:close()
  return data
end

local function is_empty(t)
  return next(t) == nil
end

-- The remote workspace as a snapshot, without the runtime dir.
local function remote_snapshot(box)
  local excludes = require "ferry.excludes"
  local snapshot = require "ferry.snapshot"
  return assert(snapshot.take(box.host_root, { matcher = excludes.compile { "/.ferry-runtime" } }))
end

local function shell_adapter(fields)
  local a = { name = "test", excludes = {}, preserve = {}, hooks = {} }
  for k, v in pairs(fields or {}) do a[k] = v end
  return a
end

for _, label in ipairs { "local", "bwrap", "cmd", "busybox" } do
  describe("runtime on " .. label, function()
    local box, ws, tmp, state

    before_each(function()
      box = sandboxes.make(label)
      tmp = helpers.tmpdir()
      ws = tmp .. "/ws"
      W.mkdir(tmp, "ws")
      state = tmp .. "/state/state.json"
    end)
    after_each(function()
      box:cleanup()
      helpers.rmtree(tmp)
    end)

    local function prepare(extra)
      local opts = { provider = box.provider, workspace = ws, remote_dir = box.root, state = state }
      for k, v in pairs(extra or {}) do opts[k] = v end
      return ferry.prepare(opts)
    end

    it("copies awkward names, binary files, symlinks and empty dirs in, and brings edits back", function()
      W.fill(ws)
      local res = assert(prepare())
      assert.equal(box.root, res.remote_dir)
      assert.equal(box.root .. "/.ferry-runtime", res.runtime_dir)
      assert.equal(state, res.state)
      local expected = W.moved(ws)
      assert.same({}, W.diff(expected, remote_snapshot(box)))
      assert.is_nil(remote_snapshot(box)["node_modules"])
      assert.is_nil(remote_snapshot(box)["._apple"])

      -- the agent edits, adds and deletes in the sandbox
      local r = box.host_root
      W.write(r, "new\nline", "edited remotely\n")
      W.write(r, "dir with space/-leading-dash", W.ALL_BYTES:reverse())
      W.write(r, "added dir/ünïcödé ✓ new", "new file\n", 493)
      assert(os.remove(r .. "/it's \"quoted\""))
      W.mkdir(r, "new empty")
      local got = assert(ferry.restore { state = state })
      assert.same({}, got.conflicts)
      assert.same({}, got.refused)
      assert.same({ "added dir", "added dir/ünïcödé ✓ new", "dir with space/-leading-dash", "new\nline",
        "new empty" }, got.changed)
      assert.same({ "it's \"quoted\"" }, got.deleted)
      assert.equal("edited remotely\n", W.read(ws, "new\nline"))
      assert.equal(W.ALL_BYTES:reverse(), W.read(ws, "dir with space/-leading-dash"))
      assert.equal(493, core.fs_lstat(ws .. "/added dir/ünïcödé ✓ new").mode)
      assert.is_nil(core.fs_lstat(ws .. "/it's \"quoted\""))
      assert.equal("dir", core.fs_lstat(ws .. "/new empty").kind)
      -- untouched: excluded content, symlinks
      assert.equal("module.exports = 1\n", W.read(ws, "node_modules/pkg/index.js"))
      assert.equal("plain.txt", core.fs_readlink(ws .. "/link to plain"))
      assert.same({}, W.diff(W.moved(ws), remote_snapshot(box)))

      -- a rerun has nothing to do
      local again = assert(ferry.restore { state = state })
      assert.same({}, again.changed)
      assert.same({}, again.deleted)
      assert.same({}, again.conflicts)
    end)

    it("prepares and restores an empty workspace", function()
      local res = assert(prepare())
      assert.equal(0, res.files)
      assert.same({}, remote_snapshot(box))
      local got = assert(ferry.restore { state = state })
      assert.same({}, got.changed)
      W.write(box.host_root, "hello", "from the sandbox\n")
      got = assert(ferry.restore { state = state })
      assert.same({ "hello" }, got.changed)
      assert.equal("from the sandbox\n", W.read(ws, "hello"))
    end)

    it("clears the remote dir except the runtime dir and preserved names", function()
      W.write(ws, "a", "a\n")
      W.write(box.host_root, "stale", "old\n")
      W.write(box.host_root, ".keepme/state", "kept\n")
      W.write(box.host_root, ".ferry-runtime/marker", "kept\n")
      W.write(box.host_root, "-rf", "dash\n")
      assert(prepare { adapter = shell_adapter { preserve = { ".keepme" } } })
      assert.is_nil(W.read(box.host_root, "stale"))
      assert.is_nil(W.read(box.host_root, "-rf"))
      assert.equal("kept\n", W.read(box.host_root, ".keepme/state"))
      assert.equal("kept\n", W.read(box.host_root, ".ferry-runtime/marker"))
      -- preserved names stay in the sandbox: restore neither brings them back nor deletes them locally
      local got = assert(ferry.restore { state = state })
      assert.same({}, got.changed)
      assert.is_nil(W.read(ws, ".keepme/state"))
    end)

    it("leaves excluded dirs in the sandbox, but brings back files named like them", function()
      W.write(ws, "keep.txt", "k\n")
      assert(prepare())
      local r = box.host_root
      local heavy = ("x"):rep(4 * 1024 * 1024)
      W.write(r, "node_modules/big.js", heavy)
      W.write(r, "web/node_modules/big.js", heavy)
      W.write(r, "web/.cache/big", heavy)
      W.write(r, "build", "#!/bin/sh\necho a script named build\n")
      W.write(r, "web/out", "a file named out\n")
      W.write(r, "._fork", "AppleDouble\n")
      local got = assert(ferry.restore { state = state })
      assert.same({ "build", "web", "web/out" }, got.changed)
      assert.equal("a file named out\n", W.read(ws, "web/out"))
      assert.is_nil(core.fs_lstat(ws .. "/node_modules"))
      assert.is_nil(core.fs_lstat(ws .. "/._fork"))
      if label ~= "busybox" then -- busybox's tar cannot take a name list: nested excludes travel, then are ignored
        assert.is_true(got.bytes_received < 1024 * 1024, "received " .. got.bytes_received)
      end
    end)

    if label ~= "busybox" then
      it("brings hard-linked files back as plain files", function()
        W.write(ws, "a", "a\n")
        assert(prepare())
        W.write(box.host_root, "shared", "same inode\n")
        assert(os.execute("ln " .. core.sh_quote(box.host_root .. "/shared") .. " "
          .. core.sh_quote(box.host_root .. "/linked")))
        local got = assert(ferry.restore { state = state })
        assert.same({ "linked", "shared" }, got.changed)
        assert.equal("same inode\n", W.read(ws, "linked"))
        assert.equal(1, core.fs_lstat(ws .. "/linked").nlink)
      end)
    end

    it("moves a 20 MB file both ways", function()
      local big = urandom(20 * 1024 * 1024)
      W.write(ws, "big.bin", big)
      local res = assert(prepare())
      assert.is_true(res.bytes_sent > #big)
      assert.equal(core.sha256(big), core.sha256_file(box.host_root .. "/big.bin"))
      local edited = big:sub(1, 1024) .. "changed" .. big:sub(1032)
      W.write(box.host_root, "big.bin", edited)
      local got = assert(ferry.restore { state = state })
      assert.same({ "big.bin" }, got.changed)
      assert.is_true(got.bytes_received > #big)
      assert.equal(core.sha256(edited), core.sha256_file(ws .. "/big.bin"))
    end)
  end)
end

describe("runtime 3-way merge end to end", function()
  local box, ws, tmp, state
  before_each(function()
    box = sandboxes.make("cmd")
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    state = tmp .. "/state.json"
    W.mkdir(tmp, "ws")
  end)
  after_each(function()
    box:cleanup()
    helpers.rmtree(tmp)
  end)

  it("takes, keeps, deletes and reports conflicts, then converges", function()
    for _, name in ipairs { "take.txt", "keep.txt", "both.txt", "same.txt", "rdel.txt", "rdel-lchg.txt",
      "ldel-rchg.txt", "mode.sh" } do
      W.write(ws, name, name .. " v0\n")
    end
    W.symlink(ws, "lnk", "take.txt")
    W.write(ws, "node_modules/local-only.js", "local\n")
    assert(ferry.prepare { provider = box.provider, workspace = ws, remote_dir = box.root, state = state })
    local r = box.host_root
    -- sandbox side
    W.write(r, "take.txt", "remote\n")
    W.write(r, "both.txt", "remote both\n")
    W.write(r, "same.txt", "same edit\n")
    assert(os.remove(r .. "/rdel.txt"))
    assert(os.remove(r .. "/rdel-lchg.txt"))
    W.write(r, "ldel-rchg.txt", "remote edit\n")
    assert(core.fs_safe_chmod(r, "mode.sh", 493))
    W.write(r, "rdir/radd.txt", "remote added\n")
    assert(os.remove(r .. "/lnk"))
    W.symlink(r, "lnk", "keep.txt")
    W.write(r, "node_modules/remote-only.js", "remote\n")
    -- host side, meanwhile
    W.write(ws, "keep.txt", "local\n")
    W.write(ws, "both.txt", "local both\n")
    W.write(ws, "same.txt", "same edit\n")
    W.write(ws, "rdel-lchg.txt", "local edit\n")
    assert(os.remove(ws .. "/ldel-rchg.txt"))
    W.write(ws, "ladd.txt", "local added\n")

    local got = assert(ferry.restore { state = state })
    assert.same({ "both.txt", "ldel-rchg.txt" }, got.conflicts)
    assert.equal("both.txt.ferry-remote", got.conflict_copies["both.txt"])
    assert.same({ "lnk", "mode.sh", "rdir", "rdir/radd.txt", "take.txt" }, got.changed)
    assert.same({ "rdel.txt" }, got.deleted)
    assert.equal("remote\n", W.read(ws, "take.txt"))
    assert.equal("local\n", W.read(ws, "keep.txt"))
    assert.equal("local both\n", W.read(ws, "both.txt"))
    assert.equal("remote both\n", W.read(ws, "both.txt.ferry-remote"))
    assert.equal("same edit\n", W.read(ws, "same.txt"))
    assert.is_nil(W.read(ws, "rdel.txt"))
    assert.equal("local edit\n", W.read(ws, "rdel-lchg.txt"))
    assert.is_nil(W.read(ws, "ldel-rchg.txt"))
    assert.equal("remote edit\n", W.read(ws, "ldel-rchg.txt.ferry-remote"))
    assert.equal(493, core.fs_lstat(ws .. "/mode.sh").mode)
    assert.equal("remote added\n", W.read(ws, "rdir/radd.txt"))
    assert.equal("local added\n", W.read(ws, "ladd.txt"))
    assert.equal("keep.txt", core.fs_readlink(ws .. "/lnk"))
    assert.equal("local\n", W.read(ws, "node_modules/local-only.js"))
    assert.is_nil(W.read(ws, "node_modules/remote-only.js"))

    local again = assert(ferry.restore { state = state })
    assert.same({}, again.changed)
    assert.same({}, again.deleted)
    assert.same({}, again.conflicts)
    assert.equal("local both\n", W.read(ws, "both.txt"))
  end)

  it("replaces a directory by a file and a file by a directory", function()
    W.write(ws, "d/x", "x\n")
    W.write(ws, "f", "f\n")
    assert(ferry.prepare { provider = box.provider, workspace = ws, remote_dir = box.root, state = state })
    local r = box.host_root
    assert(os.execute("rm -rf '" .. r .. "/d' '" .. r .. "/f'"))
    W.write(r, "d", "now a file\n")
    W.write(r, "f/inner", "now a dir\n")
    local got = assert(ferry.restore { state = state })
    assert.same({}, got.conflicts)
    assert.equal("now a file\n", W.read(ws, "d"))
    assert.equal("now a dir\n", W.read(ws, "f/inner"))
  end)
end)

describe("runtime command counts", function()
  it("prepares 2,000 files in 2 commands (sync with the detect probe, assets) and restores them in 1", function()
    for _, label in ipairs { "cmd", "busybox" } do
      local box = sandboxes.counting(label)
      local tmp = helpers.tmpdir()
      local ws = tmp .. "/ws"
      for i = 1, 2000 do
        W.write(ws, string.format("d%02d/sub %d/file-%04d.txt", i % 40, i % 7, i), ("line %d\n"):format(i):rep(20))
      end
      local t0 = core.now_ms and core.now_ms() or os.clock() * 1000
      local res = assert(ferry.prepare { provider = box.provider, workspace = ws, remote_dir = box.root,
        state = tmp .. "/state.json", adapter = { name = "probe", detect = "sh", install = "true", hooks = {},
          assets = function() return { conf = { dir = ws .. "/d01" }, other = { dir = ws .. "/d02" } } end } })
      local t1 = core.now_ms and core.now_ms() or os.clock() * 1000
      assert.equal(2000, res.files)
      assert.equal("present", res.install_status)
      local prepare_count = box:count()
      assert.equal(prepare_count, res.commands)
      assert.is_true(prepare_count <= 2, "prepare used " .. prepare_count .. " commands")
      for i = 1, 2000, 10 do
        W.write(box.host_root, string.format("d%02d/sub %d/file-%04d.txt", i % 40, i % 7, i), "changed\n")
      end
      box:reset()
      local got = assert(ferry.restore { state = tmp .. "/state.json" })
      local t2 = core.now_ms and core.now_ms() or os.clock() * 1000
      assert.equal(200, #got.changed)
      local restore_count = box:count()
      assert.equal(restore_count, got.commands)
      assert.is_true(restore_count <= 1, "restore used " .. restore_count .. " commands")
      print(string.format("\n%s: prepare of 2,000 files: %d commands, %.0f ms; restore: %d commands, %.0f ms",
        label, prepare_count, t1 - t0, restore_count, t2 - t1))
      box:cleanup()
      helpers.rmtree(tmp)
    end
  end)
end)

describe("runtime install", function()
  local box, ws, tmp
  before_each(function()
    box = sandboxes.make("local")
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    W.mkdir(tmp, "ws")
  end)
  after_each(function()
    box:cleanup()
    helpers.rmtree(tmp)
  end)

  local function prepare(adapter, extra)
    local opts = { provider = "local", workspace = ws, remote_dir = box.root, state = tmp .. "/state.json",
      adapter = adapter }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return ferry.prepare(opts)
  end

  it("skips the install when the detect probe finds the command", function()
    local res = assert(prepare(shell_adapter { detect = "sh", install = "echo ran >> " .. tmp .. "/ran" }))
    assert.equal("present", res.install_status)
    assert.is_nil(res.installed)
    assert.is_nil(W.read(tmp, "ran"))
    assert.equal(1, res.commands) -- the detect probe runs inside the sync command
  end)

  it("installs when the command is missing, once (a marker records it)", function()
    local adapter = shell_adapter { install = "echo ran >> " .. tmp .. "/ran" }
    local res = assert(prepare(adapter))
    assert.is_true(res.installed)
    assert.equal("installed", res.install_status)
    assert.equal(2, res.commands) -- the sync finds no marker, then the install
    res = assert(prepare(adapter))
    assert.equal("present", res.install_status)
    assert.equal(1, res.commands) -- the delta's listing, which finds the marker, and nothing to send
    assert.equal("ran\n", W.read(tmp, "ran"))
  end)

  it("turns a failed install into a warning with the last 3 non-empty lines", function()
    local res = assert(prepare(shell_adapter { detect = "ferry-no-such-command",
      install = "echo one; echo; echo two; echo three >&2; echo four; exit 7" }))
    assert.is_false(res.installed)
    assert.equal("failed", res.install_status)
    assert.equal("install exited with code 7: two | three | four", res.install_warning)
    assert.equal(box.root, res.remote_dir)
  end)

  it("cuts the warning at 480 characters", function()
    local res = assert(prepare(shell_adapter { detect = "ferry-no-such-command",
      install = "printf '%0600d\\n' 0; exit 1" }))
    assert.equal(480, #res.install_warning:match("^install exited with code 1: (0+)$"))
  end)

  it("turns a timed-out install into a warning", function()
    local res = assert(prepare(shell_adapter { detect = "ferry-no-such-command",
      install = "echo starting; sleep 30" }, { install_timeout_ms = 1500 }))
    assert.is_false(res.installed)
    assert.matches("^install timed out after 1 s: starting", res.install_warning)
  end)

  -- An install that makes the command its detect probe looks for (an absolute path: `command -v` finds it).
  local function installing(extra)
    local tool = tmp .. "/bin/tool"
    return "mkdir -p " .. tmp .. "/bin && " .. (extra or "true") .. " && printf '#!/bin/sh\\n' > " .. tool
      .. " && chmod +x " .. tool, tool
  end

  it("installs once when two prepares race on one sandbox", function()
    local install, tool = installing("echo ran >> " .. tmp .. "/ran; sleep 1")
    local adapter = shell_adapter { detect = tool, install = install }
    W.mkdir(tmp, "ws2") -- two workspaces: prepares of one workspace take turns (the workspace lock)
    local results = ferry.wait {
      ferry.spawn(function() return assert(prepare(adapter, { state = tmp .. "/s1.json" })) end),
      ferry.spawn(function()
        return assert(prepare(adapter, { state = tmp .. "/s2.json", workspace = tmp .. "/ws2" }))
      end),
    }
    assert.equal("ran\n", W.read(tmp, "ran"))
    local statuses = { results[1].install_status, results[2].install_status }
    table.sort(statuses)
    assert.same({ "installed", "present" }, statuses)
  end)

  it("breaks a lock left by a prepare that died", function()
    W.write(box.root, ".ferry-runtime/install.lock/pid", "999999\n")
    local install, tool = installing()
    local res = assert(prepare(shell_adapter { detect = tool, install = install }))
    assert.equal("installed", res.install_status)
  end)
end)

describe("runtime assets", function()
  local box, ws, tmp
  before_each(function()
    box = sandboxes.make("cmd")
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    W.mkdir(tmp, "ws")
  end)
  after_each(function()
    box:cleanup()
    helpers.rmtree(tmp)
  end)

  it("copies each asset to <runtime>/<adapter>/<key>, with excludes and symlinks as asked", function()
    W.write(tmp, "home/config.toml", "a = 1\n")
    W.write(tmp, "home/tmp/scratch", "junk\n")
    W.write(tmp, "home/sessions/s1", "private\n")
    W.symlink(tmp, "home/link", "config.toml")
    W.write(tmp, "real-skill/SKILL.md", "# skill\n")
    W.mkdir(tmp, "skills")
    W.symlink(tmp, "skills/one", tmp .. "/real-skill")
    W.write(tmp, "extra/x", "x\n")
    local adapter = shell_adapter { name = "agent", assets = function(ctx)
      assert.equal(ws, ctx.workspace)
      return {
        home = { dir = tmp .. "/home", exclude = { "/tmp", "/sessions" } },
        skills = { dir = tmp .. "/skills", follow_symlinks = true },
      }
    end }
    local res = assert(ferry.prepare { provider = box.provider, workspace = ws, remote_dir = box.root,
      state = tmp .. "/state.json", adapter = adapter, assets = { extra = tmp .. "/extra", gone = tmp .. "/nope" } })
    local rt = box.root .. "/.ferry-runtime/agent"
    assert.same({ home = rt .. "/home", skills = rt .. "/skills", extra = rt .. "/extra", gone = rt .. "/gone" },
      res.asset_dirs)
    local h = box.host_root .. "/.ferry-runtime/agent"
    assert.equal("a = 1\n", W.read(h, "home/config.toml"))
    assert.equal("config.toml", core.fs_readlink(h .. "/home/link"))
    assert.is_nil(core.fs_lstat(h .. "/home/tmp"))
    assert.is_nil(core.fs_lstat(h .. "/home/sessions"))
    assert.equal("dir", core.fs_lstat(h .. "/skills/one").kind)
    assert.equal("# skill\n", W.read(h, "skills/one/SKILL.md"))
    assert.equal("x\n", W.read(h, "extra/x"))
    assert.equal("dir", core.fs_lstat(h .. "/gone").kind)
    assert.matches("asset gone", table.concat(res.warnings, "\n"))
    -- no staging leftovers, and the assets never come back as workspace content
    assert.same({ "extra", "gone", "home", "skills" }, core.fs_readdir(h))
    local got = assert(ferry.restore { state = tmp .. "/state.json" })
    assert.same({}, got.changed)
  end)
end)

describe("runtime hooks", function()
  local box, ws, tmp
  before_each(function()
    box = sandboxes.make("local")
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    W.write(ws, "a.txt", "a\n")
  end)
  after_each(function()
    box:cleanup()
    helpers.rmtree(tmp)
  end)

  it("runs before_sync, after_sync, before_restore and after_restore with the context", function()
    local calls = {}
    local adapter = shell_adapter { hooks = {
      before_sync = function(ctx)
        calls[#calls + 1] = "before_sync"
        assert.equal(ws, ctx.workspace)
        assert.equal(box.root, ctx.remote_dir)
        assert.equal(os.getenv("HOME"), ctx.env("HOME"))
      end,
      after_sync = function(ctx)
        calls[#calls + 1] = "after_sync"
        assert.equal("a\n", W.read(ctx.remote_dir, "a.txt"))
        assert(ctx.sb:write(ctx.runtime_dir .. "/hook.txt", "from the hook\n"))
        ctx.asset_dirs.extra = ctx.runtime_dir .. "/hook.txt"
      end,
      before_restore = function(ctx)
        calls[#calls + 1] = "before_restore"
        assert.equal(box.root .. "/.ferry-runtime", ctx.runtime_dir)
      end,
      after_restore = function(ctx)
        calls[#calls + 1] = "after_restore"
        assert.equal("changed\n", W.read(ctx.workspace, "a.txt"))
        error("a failing after_restore hook is a warning")
      end,
    } }
    local res = assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = box.root,
      state = tmp .. "/state.json", adapter = adapter })
    assert.equal(box.root .. "/.ferry-runtime/hook.txt", res.asset_dirs.extra)
    assert.equal("from the hook\n", W.read(box.root, ".ferry-runtime/hook.txt"))
    W.write(box.root, "a.txt", "changed\n")
    local got = assert(ferry.restore { state = res.state, adapter = adapter })
    assert.same({ "before_sync", "after_sync", "before_restore", "after_restore" }, calls)
    assert.matches("adapter test after_restore hook failed: .*a failing after_restore hook", got.warnings[1])
  end)

  it("stops a prepare whose before_sync hook fails", function()
    local ok, err, code = ferry.prepare { provider = "local", workspace = ws, remote_dir = box.root,
      state = tmp .. "/state.json",
      adapter = shell_adapter { hooks = { before_sync = function() error("boom", 0) end } } }
    assert.is_nil(ok)
    assert.equal("prepare: adapter test before_sync hook failed: boom", err)
    assert.equal("EHOOK", code)
    assert.is_nil(W.read(box.root, "a.txt"))
  end)

  it("restores without the adapter's hooks when the adapter is gone", function()
    local res = assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = box.root,
      state = tmp .. "/state.json", adapter = shell_adapter { name = "vanished" } })
    W.write(box.root, "a.txt", "changed\n")
    local got = assert(ferry.restore { state = res.state })
    assert.same({ "a.txt" }, got.changed)
    assert.matches("no adapter named 'vanished'.*without its hooks", got.warnings[1])
  end)
end)

describe("runtime state and errors", function()
  local box, ws, tmp
  before_each(function()
    box = sandboxes.make("local")
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    W.write(ws, "a.txt", "a\n")
  end)
  after_each(function()
    box:cleanup()
    helpers.rmtree(tmp)
  end)

  it("writes a 0600 JSON state file, the provider string redacted and paths verbatim", function()
    local secret = "hunter2-very-secret-value"
    W.symlink(ws, "link", "x-" .. secret)
    local res = assert(ferry.prepare { provider = "cmd:env FERRY_SPEC_TOKEN=" .. secret, workspace = ws,
      remote_dir = box.root, state = tmp .. "/st/state.json", secrets = { secret } })
    assert.equal(384, core.fs_lstat(res.state).mode)
    local text = W.read(tmp, "st/state.json")
    assert.is_nil(text:find(secret, 1, true)) -- the JSON holds no path: the trees beside it do
    local st = require("cjson").decode(text)
    assert.equal(2, st.version)
    assert.equal("cmd:env FERRY_SPEC_TOKEN=***", st.provider)
    assert.equal(box.root, st.remote_dir)
    assert.equal("shell", st.adapter)
    assert.equal(ws, st.workspace)
    local tree_file = require("ferry.state").tree_path(res.state, "baseline", st.trees.baseline)
    assert.equal(384, core.fs_lstat(tree_file).mode)
    assert.truthy(helpers.read_file(tree_file):find("x-" .. secret, 1, true))
    local baseline = helpers.baseline(res.state)
    assert.equal("file", baseline["a.txt"].kind)
    assert.equal(core.sha256("a\n"), baseline["a.txt"].sha256)
    assert.equal("x-" .. secret, baseline.link.target) -- data: it must come back as it went
  end)

  it("keeps digests and names intact when a secret's text occurs in them", function()
    local digest = core.sha256("a\n")
    local secret = digest:sub(9, 24)
    W.write(ws, "named " .. digest, "named\n")
    assert(os.execute("touch -d @" .. (os.time() - 100) .. " " .. core.sh_quote(ws .. "/a.txt")))
    assert(os.execute("touch -d @" .. (os.time() - 100) .. " " .. core.sh_quote(ws .. "/named " .. digest)))
    local res = assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = box.root,
      state = tmp .. "/state.json", secrets = { secret } })
    local baseline = helpers.baseline(res.state)
    assert.equal(digest, baseline["a.txt"].sha256)
    assert.equal("file", baseline["named " .. digest].kind)
    local again = assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = box.root,
      state = tmp .. "/state.json", secrets = { secret } })
    assert.is_true(again.delta, again.delta_fallback)
    assert.equal(0, again.hashed_files) -- both files' records are trusted
  end)

  it("records in the baseline the hash of what it sent, for a file changed or removed after the walk", function()
    W.write(ws, "moving.txt", "as walked\n")
    W.write(ws, "going.txt", "here at the walk\n")
    local adapter = shell_adapter { hooks = { before_sync = function() -- after the walk, before the stream
      W.write(ws, "moving.txt", "as sent, longer than before\n")
      os.remove(ws .. "/going.txt")
    end } }
    local res = assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = box.root,
      state = tmp .. "/state.json", adapter = adapter })
    assert.same({ "going.txt: vanished before it was archived" }, res.warnings)
    assert.equal("as sent, longer than before\n", W.read(box.root, "moving.txt"))
    local baseline = helpers.baseline(res.state)
    assert.equal(core.sha256("as sent, longer than before\n"), baseline["moving.txt"].sha256)
    assert.is_nil(baseline["going.txt"])
    assert.equal(core.sha256("a\n"), baseline["a.txt"].sha256)
    -- the baseline matches both sides: a restore changes nothing, and a file made again locally stays
    W.write(ws, "going.txt", "made again\n")
    local got = assert(ferry.restore { state = res.state })
    assert.same({}, got.changed)
    assert.same({}, got.deleted)
    assert.equal("made again\n", W.read(ws, "going.txt"))
  end)

  it("defaults the state path under XDG_STATE_HOME, keyed by provider and remote dir", function()
    local state = require "ferry.state"
    local p = state.default_path("local", box.root)
    assert.matches("/ferry/%x+%.json$", p)
    assert.are_not.equal(p, state.default_path("local", box.root .. "x"))
    assert.are_not.equal(p, state.default_path("cmd:sh", box.root))
  end)

  it("refuses a restore while another holds the workspace lock, naming its pid", function()
    local res = assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = box.root,
      state = tmp .. "/state.json" })
    local lock = assert(require("ferry.workspace_lock").acquire(ws, "prepare"))
    local t0 = core.now_ms()
    local ok, err, code = ferry.restore { state = res.state, lock_wait_ms = 300 }
    assert.is_true(core.now_ms() - t0 >= 300, "it waited")
    assert.is_nil(ok)
    assert.equal(ws .. ": another ferry prepare/restore is running (pid " .. core.getpid() .. ")", err)
    assert.equal("EBUSY", code)
    lock:release()
    assert(ferry.restore { state = res.state })
  end)

  it("names what is wrong", function()
    local function err_of(opts)
      local ok, err, code = ferry.prepare(opts)
      assert.is_nil(ok)
      return err, code
    end
    local err, code = err_of { provider = "local", workspace = ws }
    assert.equal("prepare: no remote dir: provider local has no default; pass remote_dir (-r REMOTE_DIR)", err)
    assert.equal("EINVAL", code)
    err = err_of { provider = "local", workspace = ws, remote_dir = "relative/dir" }
    assert.equal("prepare: the remote dir must be an absolute path, got relative/dir", err)
    err = err_of { provider = "local", workspace = ws, remote_dir = "/" }
    assert.matches("refusing remote dir /", err, 1, true)
    err, code = err_of { provider = "local", workspace = tmp .. "/missing", remote_dir = box.root }
    assert.matches("^prepare: workspace .*/missing: ", err)
    assert.equal("ENOENT", code)
    err = err_of { provider = "local", workspace = ws, remote_dir = box.root, adapter = "no-such-adapter" }
    assert.matches("no adapter named 'no-such-adapter'", err, 1, true)
    err = err_of { provider = "nope:x", workspace = ws, remote_dir = box.root }
    assert.matches("^prepare: unknown provider 'nope'", err)
    err, code = err_of { provider = "local", workspace = ws, remote_dir = box.root, excludes = { "a//b" } }
    assert.matches("^prepare: exclude pattern", err)
    assert.equal("EINVAL", code)
    local ok, rerr, rcode = ferry.restore { state = tmp .. "/no-state.json" }
    assert.is_nil(ok)
    assert.matches("^restore: state: cannot read .*no%-state%.json", rerr)
    assert.equal("ENOENT", rcode)
  end)

  it("says an unreachable sandbox is unreachable, as the provider's probe puts it", function()
    local commands = 0
    local ok, err, code = ferry.prepare { provider = "cmd:ferry-no-such-program", workspace = ws,
      remote_dir = box.root, state = tmp .. "/state.json", on_exec = function() commands = commands + 1 end }
    assert.is_nil(ok)
    assert.matches("^prepare: cmd:ferry%-no%-such%-program: cannot run 'ferry%-no%-such%-program': ", err)
    assert.equal("ENOENT", code)
    assert.equal(2, commands) -- the sync, then the probe that explains its failure
    ok, err, code = ferry.prepare { provider = "cmd:sh -c 'echo gone >&2; exit 255' x", workspace = ws,
      remote_dir = box.root, state = tmp .. "/state.json" }
    assert.is_nil(ok)
    assert.matches("the sandbox is unreachable: a probe exited with code 255 (gone)", err, 1, true)
    assert.equal("EHOSTUNREACH", code)
    assert.is_nil(core.fs_stat(tmp .. "/state.json"))
    local res = assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = box.root,
      state = tmp .. "/state.json" })
    local text = W.read(tmp, "state.json"):gsub('"provider":"local"', '"provider":"cmd:ferry-no-such-program"')
    W.write(tmp, "state.json", text)
    -- the failed prepare into that sandbox left its mark (it cannot know how far its command got)
    local mark = require("ferry.state").unfinished_path("cmd:ferry-no-such-program", box.root)
    assert.truthy(core.fs_lstat(mark))
    os.remove(mark)
    ok, err, code = ferry.restore { state = res.state }
    assert.is_nil(ok)
    assert.matches("^restore: cmd:ferry%-no%-such%-program: cannot run 'ferry%-no%-such%-program': ", err)
    assert.equal("ENOENT", code)
  end)

  it("fails a restore when the remote dir is gone, without touching the workspace", function()
    local res = assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = box.root,
      state = tmp .. "/state.json" })
    helpers.rmtree(box.root)
    local ok, err, code = ferry.restore { state = res.state }
    assert.is_nil(ok)
    assert.equal("restore: " .. box.root .. " does not exist in the sandbox; nothing restored", err)
    assert.equal("ENOENT", code)
    assert.equal("a\n", W.read(ws, "a.txt"))
  end)

  it("reports byte progress for every phase, redacting secrets", function()
    local progress = require "ferry.progress"
    local cjson = require "cjson"
    local lines = {}
    local sink = { write = function(self, ...)
      for _, s in ipairs { ... } do lines[#lines + 1] = s end
      return self
    end }
    W.write(ws, "big.bin", urandom(300000))
    W.write(tmp, "asset/x", "x\n")
    local secret = "sk-this-is-a-secret-value-123456"
    local p = progress.new { json = true, out = sink, err = sink, redact = require("ferry.redact").new { secret } }
    assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = box.root, state = tmp .. "/state.json",
      progress = p, secrets = { secret }, assets = { a = tmp .. "/asset" },
      adapter = shell_adapter { detect = "ferry-no-such-command", install = "echo " .. secret .. "; exit 3" } })
    W.write(box.root, "big.bin", urandom(200000))
    assert(ferry.restore { state = tmp .. "/state.json", progress = p })
    p:finish({})
    local text = table.concat(lines)
    assert.is_nil(text:find(secret, 1, true))
    local phases, done, warned = {}, {}, false
    for line in text:gmatch("[^\n]+") do
      local e = cjson.decode(line)
      if e.event == "phase" then phases[#phases + 1] = e.phase end
      if e.event == "progress" and e.done then done[e.phase] = e.bytes end
      if e.event == "message" and e.level == "warn" then
        warned = true
        assert.equal("install exited with code 3: ***", e.message)
      end
    end
    assert.same({ "sync", "install", "assets", "finalize", "restore", "finalize" }, phases)
    assert.is_true(warned)
    assert.is_true(done.sync > 300000)
    assert.is_true(done.assets > 0)
    assert.is_true(done.restore > 200000)
  end)

  it("works with an opened sandbox in every transfer mode", function()
    for _, caps in ipairs { {}, { binary = false }, { stdin = false } } do
      local sb = ferry.open("local", { caps = caps })
      W.write(ws, "bin", W.ALL_BYTES)
      local res = assert(ferry.prepare { provider = sb, workspace = ws, remote_dir = box.root,
        state = tmp .. "/state.json" })
      assert.equal(W.ALL_BYTES, W.read(box.root, "bin"))
      W.write(box.root, "bin", W.ALL_BYTES:rep(2))
      local got = assert(ferry.restore { state = res.state, sb = sb })
      assert.same({ "bin" }, got.changed)
      assert.equal(W.ALL_BYTES:rep(2), W.read(ws, "bin"))
      assert.is_true(is_empty(got.conflicts))
      sb:close()
    end
  end)
end)
