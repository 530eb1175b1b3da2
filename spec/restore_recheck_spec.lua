-- Re-check before every write (issue 8, item 8): a host file edited between restore's snapshot and its
-- write is never overwritten or removed. The window is made deterministic with restore's before_write hook,
-- which runs right before each removal and, inside core.tar_extract, right before each write's final check
-- and rename.
local core = require "ferry.core"
local ferry = require "ferry"
local helpers = require "support.helpers"
local W = require "support.workspaces"

describe("restore's check right before each write", function()
  local tmp, ws, remote, state
  before_each(function()
    tmp = helpers.tmpdir()
    ws, remote, state = tmp .. "/ws", tmp .. "/remote", tmp .. "/state.json"
    W.write(ws, "a.txt", "base a\n")
    W.write(ws, "b.txt", "base b\n")
    W.write(ws, "same.txt", "same size\n")
    W.write(ws, "keep.txt", "untouched\n")
    W.mkdir(tmp, "remote")
    assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = remote, state = state })
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  -- A before_write hook that runs `edit` once, when restore is about to touch `target` with `op`.
  local function once(target, op, edit)
    local done = false
    return function(path, what)
      if not done and path == target and what == op then
        done = true
        edit()
      end
    end
  end

  it("keeps a host edit made after the snapshot and saves the sandbox's version as a conflict", function()
    W.write(remote, "a.txt", "the agent's a\n")
    W.write(remote, "keep.txt", "the agent's keep\n")
    local got = assert(ferry.restore { state = state, before_write = once("a.txt", "write", function()
      W.write(ws, "a.txt", "the host's edit, during the restore\n")
    end) })
    assert.equal("the host's edit, during the restore\n", W.read(ws, "a.txt"))
    assert.equal("the agent's a\n", W.read(ws, "a.txt.ferry-remote"))
    assert.same({ "a.txt" }, got.conflicts)
    assert.equal("a.txt.ferry-remote", got.conflict_copies["a.txt"])
    assert.same({ "keep.txt" }, got.changed)
    assert.equal("the agent's keep\n", W.read(ws, "keep.txt"))
    assert.same({ "restore: a.txt: changed on the host during the restore; the sandbox's version is at "
      .. "a.txt.ferry-remote" }, got.warnings)
    -- the next restore sees the host's edit as the local change it is: nothing to do
    local again = assert(ferry.restore { state = state })
    assert.same({}, again.changed)
    assert.same({}, again.conflicts)
    assert.equal("the host's edit, during the restore\n", W.read(ws, "a.txt"))
  end)

  -- The soak's "host edit during restore lost" (seed 8802, bwrap cycles 98 and 264): the user wrote, in place,
  -- bytes equal to the baseline's ("\n" over "\n"). Before restore looks, that is no change: the sandbox's
  -- version lands, as for any file the host left as it was. After restore looked, the rewrite moved the
  -- file's key: the host's version stays and the sandbox's becomes a conflict copy.
  it("takes a host rewrite of the baseline's own bytes, made before it looks, for no change", function()
    W.write(remote, "a.txt", "the agent's a\n")
    W.write(remote, "b.txt", "the agent's b\n")
    assert(os.remove(remote .. "/b.txt"))
    local f = assert(io.open(ws .. "/a.txt", "wb")) -- in place, the same bytes
    f:write("base a\n")
    f:close()
    f = assert(io.open(ws .. "/b.txt", "wb"))
    f:write("base b\n")
    f:close()
    local got = assert(ferry.restore { state = state })
    assert.same({ "a.txt" }, got.changed)
    assert.same({ "b.txt" }, got.deleted)
    assert.same({}, got.conflicts)
    assert.equal("the agent's a\n", W.read(ws, "a.txt"))
    assert.is_nil(W.read(ws, "b.txt"))
  end)

  it("keeps a host rewrite of the baseline's own bytes made after it looked, as any edit", function()
    W.write(remote, "a.txt", "the agent's a\n")
    assert(os.remove(remote .. "/b.txt"))
    local function rewrite(rel, data)
      return function()
        os.execute("sleep 0.01") -- a later clock tick than the snapshot's
        local f = assert(io.open(ws .. "/" .. rel, "wb"))
        f:write(data)
        f:close()
      end
    end
    local a, b = rewrite("a.txt", "base a\n"), rewrite("b.txt", "base b\n")
    local got = assert(ferry.restore { state = state, before_write = function(path, op)
      if path == "a.txt" and op == "write" then a() end
      if path == "b.txt" and op == "remove" then b() end
    end })
    assert.equal("base a\n", W.read(ws, "a.txt"))
    assert.equal("the agent's a\n", W.read(ws, "a.txt.ferry-remote"))
    assert.same({ "a.txt" }, got.conflicts)
    assert.equal("base b\n", W.read(ws, "b.txt"))
    assert.same({ "b.txt" }, got.kept)
  end)

  it("notices an edit that keeps the size, inode and mtime, by the content hash", function()
    W.write(remote, "same.txt", "the agent!\n")
    local st = assert(core.fs_lstat(ws .. "/same.txt"))
    local got = assert(ferry.restore { state = state, before_write = once("same.txt", "write", function()
      local f = assert(io.open(ws .. "/same.txt", "r+b"))
      f:write("SAME SIZE\n") -- in place: same inode, same size
      f:close()
      local stamp = string.format("%d.%09d", math.floor(st.mtime), math.floor((st.mtime % 1) * 1e9 + 0.5))
      assert(os.execute("touch -m -d @" .. stamp .. " " .. core.sh_quote(ws .. "/same.txt")))
      local now = assert(core.fs_lstat(ws .. "/same.txt"))
      assert.same({ st.ino, st.size }, { now.ino, now.size })
    end) })
    assert.equal("SAME SIZE\n", W.read(ws, "same.txt"))
    assert.equal("the agent!\n", W.read(ws, "same.txt.ferry-remote"))
    assert.same({ "same.txt" }, got.conflicts)
  end)

  it("does not remove a file the host edited after the snapshot", function()
    os.remove(remote .. "/b.txt")
    local got = assert(ferry.restore { state = state,
      before_write = once("b.txt", "remove", function() W.write(ws, "b.txt", "the host's b\n") end) })
    assert.equal("the host's b\n", W.read(ws, "b.txt"))
    assert.same({}, got.deleted)
    assert.same({}, got.conflicts)
    assert.same({ "b.txt" }, got.kept)
  end)

  it("does not replace a file the host created where the sandbox adds one", function()
    W.write(remote, "new.txt", "the agent's new\n")
    local got = assert(ferry.restore { state = state,
      before_write = once("new.txt", "write", function() W.write(ws, "new.txt", "the host's new\n") end) })
    assert.equal("the host's new\n", W.read(ws, "new.txt"))
    assert.equal("the agent's new\n", W.read(ws, "new.txt.ferry-remote"))
    assert.same({ "new.txt" }, got.conflicts)
    assert.same({}, got.changed)
  end)

  it("moves on to the next copy name when the host takes the first one too", function()
    W.write(remote, "a.txt", "the agent's a\n")
    local got = assert(ferry.restore { state = state, before_write = function(path, op)
      if op ~= "write" then return end
      if path == "a.txt" and not core.fs_lstat(ws .. "/a.txt.ferry-remote") then
        W.write(ws, "a.txt", "host a\n")
      elseif path == "a.txt.ferry-remote" and not core.fs_lstat(ws .. "/a.txt.ferry-remote") then
        W.write(ws, "a.txt.ferry-remote", "the host's own file of that name\n")
      end
    end })
    assert.equal("host a\n", W.read(ws, "a.txt"))
    assert.equal("the host's own file of that name\n", W.read(ws, "a.txt.ferry-remote"))
    assert.equal("the agent's a\n", W.read(ws, "a.txt.ferry-remote-2"))
    assert.equal("a.txt.ferry-remote-2", got.conflict_copies["a.txt"])
  end)

  it("puts what the sandbox made inside a directory under its copy when the host put a file there", function()
    W.write(remote, "d/x.txt", "the agent's x\n")
    local got = assert(ferry.restore { state = state, before_write = once("d/x.txt", "write", function()
      assert(os.execute("rm -rf " .. core.sh_quote(ws .. "/d")))
      W.write(ws, "d", "the host's file d\n")
    end) })
    assert.equal("the host's file d\n", W.read(ws, "d"))
    assert.equal("the agent's x\n", W.read(ws, "d.ferry-remote/x.txt"))
    assert.same({ "d" }, got.conflicts)
  end)
end)

describe("core.tar_extract's expectations", function()
  local tmp, ws, tarfile
  before_each(function()
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    W.write(tmp, "src/f", "from the archive\n")
    W.write(ws, "f", "on the host\n")
    tarfile = tmp .. "/a.tar"
    local w = assert(core.tar_writer(tmp .. "/src", { "f" }))
    local f = assert(io.open(tarfile, "wb"))
    for chunk in function() return w:read() end do f:write(chunk) end
    f:close()
    w:close()
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  local function key(rel)
    return require("ferry.snapshot").expect_key(assert(core.fs_lstat(ws .. "/" .. rel)))
  end

  it("writes when the key still holds, and reports the dest as moved when it does not", function()
    assert.same({ 1, {} }, { core.tar_extract(tarfile, ws, { f = { dest = "f", expect = key("f") } }) })
    assert.equal("from the archive\n", W.read(ws, "f"))
    local stale = key("f")
    W.write(ws, "f", "edited\n")
    assert.same({ 0, { "f" } }, { core.tar_extract(tarfile, ws, { f = { dest = "f", expect = stale } }) })
    assert.equal("edited\n", W.read(ws, "f"))
    assert.same({ 0, { "f" } }, { core.tar_extract(tarfile, ws, { f = { dest = "f", expect = "" } }) })
    assert.same({ 1, {} }, { core.tar_extract(tarfile, ws, { f = { dest = "g", expect = "" } }) })
    assert.same({}, select(2, W.full(ws)))
    assert.has_error(function() core.tar_extract(tarfile, ws, { f = { dest = "f", expect = 1 } }) end,
      'tar_extract: plan[\'f\'].expect must be a quick key or ""')
    assert.has_error(function() core.tar_extract(tarfile, ws, { f = { dest = "f", expect_sha256 = "x" } }) end,
      "tar_extract: plan['f'].expect_sha256 must be 64 hex digits")
  end)

  it("removes only what still has its key", function()
    local stale = key("f")
    W.write(ws, "f", "edited\n")
    assert.same({ nil, "remove " .. ws .. "/f: changed since the snapshot", "ESTALE" },
      { core.fs_safe_remove(ws, "f", stale) })
    assert.equal("edited\n", W.read(ws, "f"))
    assert.is_true(core.fs_safe_remove(ws, "f", key("f")))
    assert.is_true(core.fs_safe_remove(ws, "f", stale)) -- gone already: what was wanted
  end)
end)
