-- A host-side failure during prepare or restore (a core call: the tar writer, a walk, a lock) is reported with
-- its own message, and prepare reports it before any command changes the sandbox.
local ferry = require "ferry"
local helpers = require "support.helpers"
local W = require "support.workspaces"

describe("prepare with a host-side failure", function()
  local tmp, ws, remote, state, scripts

  before_each(function()
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    W.write(ws, "a.txt", "a\n")
    W.write(ws, "sub/b.txt", "b\n")
    remote = tmp .. "/remote"
    W.write(remote, "stale.txt", "from an earlier run\n")
    state = tmp .. "/state.json"
    scripts = {}
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  local function prepare(adapter, extra)
    local opts = { provider = "local", workspace = ws, remote_dir = remote, state = state, adapter = adapter,
      on_exec = function(_, script) scripts[#scripts + 1] = script end }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return ferry.prepare(opts)
  end

  -- The sandbox was left as it was: no command but the reachability probe ran (diagnosing the failure),
  -- the remote dir was not cleared, no state was written.
  local function sandbox_untouched()
    for _, script in ipairs(scripts) do assert.equal("echo ferry-probe-ok", script) end
    assert.equal("from an earlier run\n", W.read(remote, "stale.txt"))
    assert.is_nil(W.read(remote, "a.txt"))
    assert.is_nil(W.read(tmp, "state.json"))
  end

  it("names the tar writer's failure when the workspace cannot be opened for the stream", function()
    -- the workspace is gone between the walk and the stream (moved away by the before_sync hook), so
    -- core.tar_writer cannot open it: the sync command must not run with an empty stream
    local adapter = { name = "test", hooks = { before_sync = function(ctx)
      assert(os.rename(ctx.workspace, ctx.workspace .. ".moved"))
    end } }
    local ok, err, code = prepare(adapter)
    assert.is_nil(ok)
    assert.equal("prepare: cannot read the workspace: tar_writer " .. ws .. ": No such file or directory", err)
    assert.equal("ENOENT", code)
    sandbox_untouched()
  end)

  it("names a workspace replaced by a file before the stream", function()
    local adapter = { name = "test", hooks = { before_sync = function(ctx)
      assert(os.rename(ctx.workspace, ctx.workspace .. ".moved"))
      W.write(tmp, "ws", "now a file\n")
    end } }
    local ok, err, code = prepare(adapter)
    assert.is_nil(ok)
    assert.equal("prepare: cannot read the workspace: tar_writer " .. ws .. ": Not a directory", err)
    assert.equal("ENOTDIR", code)
    sandbox_untouched()
  end)

  it("walks the assets before the sync: an asset that cannot be walked fails first", function()
    local home = tmp .. "/home"
    W.write(home, "config.json", "{}\n")
    W.symlink(home, "loop", ".") -- followed (follow_symlinks), it enters itself
    local adapter = { name = "test", assets = function()
      return { home = { dir = home, follow_symlinks = true } }
    end }
    local ok, err, code = prepare(adapter)
    assert.is_nil(ok)
    assert.equal("prepare: asset home: snapshot " .. home .. ": " .. home .. "/loop: symlink loop", err)
    assert.equal("EIO", code)
    sandbox_untouched()
  end)

  it("refuses the root directory as an asset before the sync", function()
    local ok, err, code = prepare({ name = "test" }, { assets = { everything = "/" } })
    assert.is_nil(ok)
    assert.equal("prepare: asset everything: the root directory cannot be an asset", err)
    assert.equal("EINVAL", code)
    sandbox_untouched()
  end)
end)

describe("restore with a host-side failure", function()
  local tmp, ws, state

  before_each(function()
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    W.write(ws, "a.txt", "a\n")
    state = tmp .. "/state.json"
    assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = tmp .. "/remote", state = state })
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  it("reports a lock that cannot be taken as what it is, not as another operation running", function()
    local st = assert(require("ferry.core").fs_stat(ws))
    local lock_path = string.format("%s/%d-%d.lock", require("ferry.workspace_lock").dir(), st.dev, st.ino)
    os.remove(lock_path)
    assert(os.execute("mkdir -p " .. require("ferry.core").sh_quote(lock_path))) -- a directory where it goes
    local ok, err, code = ferry.restore { state = state }
    os.remove(lock_path)
    assert.is_nil(ok)
    assert.equal("restore: lock " .. lock_path .. ": Is a directory", err)
    assert.equal("EISDIR", code)
  end)

  it("still reports a lock held by another operation as EBUSY", function()
    local held = assert(require("ferry.workspace_lock").acquire(ws, "restore"))
    local ok, err, code = ferry.restore { state = state, lock_wait_ms = 0 }
    held:release()
    assert.is_nil(ok)
    assert.equal(ws .. ": another ferry prepare/restore is running (pid " .. require("ferry.core").getpid() .. ")",
      err)
    assert.equal("EBUSY", code)
  end)
end)
