-- core.tree_walk: the local walk in C. It must describe exactly what ferry.snapshot.take describes (same
-- paths in the same order, kinds, modes, sizes, digests, targets, counters, skipped and temp names), trust
-- an earlier tree's digest only for a file whose quick key is unchanged and not racy, tolerate what
-- vanishes under it, and hold few descriptors however deep the tree goes.
local core = require "ferry.core"
local excludes = require "ferry.excludes"
local snapshot = require "ferry.snapshot"
local helpers = require "support.helpers"
local trees = require "support.trees"
local W = require "support.workspaces"

local q = core.sh_quote

-- The walk and snapshot.take side by side: every entry and every counter the same.
local function assert_same_as_snapshot(root, opts)
  local snap, names, info = assert(snapshot.take(root, { matcher = opts.exclude, hash = opts.hash,
    follow_symlinks = opts.follow_symlinks, temp_tokens = opts.temp_tokens }))
  local t, tinfo = assert(core.tree_walk(root, opts))
  local i = 0
  for rel, kind, mode, size, sha, target in t:iter(nil, "kind mode size sha256 target") do
    i = i + 1
    assert.equal(names[i], rel)
    local e = snap[rel]
    assert.equal(e.kind, kind, rel)
    if e.mode then assert.equal(e.mode, mode & 511, rel) end
    assert.equal(e.size or 0, size, rel)
    assert.equal(e.sha256, sha, rel)
    assert.equal(e.target, target, rel)
  end
  assert.equal(#names, i)
  for _, k in ipairs { "files", "dirs", "symlinks", "bytes", "hashed" } do assert.equal(info[k], tinfo[k], k) end
  assert.same(info.skipped, tinfo.skipped)
  assert.same(info.temps, tinfo.temps)
  return t, tinfo
end

describe("core.tree_walk", function()
  local tmp
  before_each(function()
    tmp = helpers.tmpdir()
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  it("describes a workspace as snapshot.take does: awkward names, symlinks, excludes, specials, temps", function()
    local ws = tmp .. "/ws"
    W.fill(ws)
    W.write(ws, "deep/a/b/c/d.txt", "deep\n", 384)
    local dead, other = string.rep("a", 16), string.rep("b", 16)
    W.write(ws, core.TEMP_PREFIX .. dead .. "-0123456789abcdef", "a write that was killed")
    W.symlink(ws, "deep/" .. core.TEMP_PREFIX .. dead .. "-00000000000000ff", "x")
    W.write(ws, core.TEMP_PREFIX .. other .. "-0123456789abcdef", "a look-alike of a run not recorded")
    W.write(ws, core.TEMP_PREFIX .. "0123abcd", "an old-style name: the user's")
    helpers.sh("mkfifo " .. q(ws .. "/a fifo") .. " " .. q(ws .. "/deep/pipe"))
    local _, info = assert_same_as_snapshot(ws, { hash = true, temp_tokens = { [dead] = true } })
    assert.same({ "a fifo", "deep/pipe" }, info.skipped)
    assert.same({ core.TEMP_PREFIX .. dead .. "-0123456789abcdef",
      "deep/" .. core.TEMP_PREFIX .. dead .. "-00000000000000ff" }, info.temps)
    _, info = assert_same_as_snapshot(ws, { hash = true })
    assert.same({}, info.temps)
    assert_same_as_snapshot(ws, { hash = false, exclude = excludes.compile(excludes.DEFAULT) })
    assert_same_as_snapshot(ws, { hash = true, follow_symlinks = true, exclude = excludes.compile { "*.bin" } })
  end)

  it("describes real trees as snapshot.take does", function()
    for _, dir in ipairs { helpers.root .. "/scripts", helpers.root .. "/spec", "/usr/share/doc/bash" } do
      if core.fs_stat(dir) then assert_same_as_snapshot(dir, { hash = true }) end
    end
  end)

  it("follows a root that is a symlink to a directory, and nothing below it", function()
    W.write(tmp, "real/f", "x")
    W.symlink(tmp, "real/inner", "/usr")
    W.symlink(tmp, "root", "real")
    local t = assert(core.tree_walk(tmp .. "/root", {}))
    assert.equal("symlink", t:get("inner").kind)
    assert.equal(2, t:count())
  end)

  it("with follow_symlinks enters linked dirs, keeps a dangling link, and stops at a loop", function()
    W.write(tmp, "ws/d/f", "x")
    W.symlink(tmp, "ws/to_d", "d")
    W.symlink(tmp, "ws/dangling", "nowhere")
    local t = assert(core.tree_walk(tmp .. "/ws", { follow_symlinks = true, hash = true }))
    assert.equal("dir", t:get("to_d").kind)
    assert.equal(core.sha256("x"), t:get("to_d/f").sha256)
    assert.equal("symlink", t:get("dangling").kind)
    W.symlink(tmp, "ws/d/up", "..")
    local ok, err, code = core.tree_walk(tmp .. "/ws", { follow_symlinks = true })
    assert.is_nil(ok)
    assert.equal(tmp .. "/ws/d/up: symlink loop", err)
    assert.equal("ELOOP", code)
  end)

  it("asks exclude once per entry, never enters an excluded dir, and stops on its error", function()
    W.write(tmp, "ws/keep/f", "1")
    W.write(tmp, "ws/skip/g", "2")
    W.write(tmp, "ws/h", "3")
    local asked = {}
    local t = assert(core.tree_walk(tmp .. "/ws", { exclude = function(rel, is_dir)
      asked[#asked + 1] = rel .. (is_dir and "/" or "")
      return rel == "skip"
    end }))
    assert.same({ "h", "keep/", "keep/f", "skip/" }, asked)
    assert.is_nil(t:get("skip"))
    local fds = helpers.fd_count()
    assert.has_error(function()
      core.tree_walk(tmp .. "/ws", { exclude = function(rel) if rel == "keep/f" then error("boom", 0) end end })
    end, "boom")
    assert.equal(fds, helpers.fd_count())
  end)

  it("leaves out what vanishes while it walks", function()
    W.write(tmp, "ws/a", "1")
    W.write(tmp, "ws/b/x", "2")
    W.write(tmp, "ws/c", "3")
    W.write(tmp, "ws/d/y", "4")
    local t, info = assert(core.tree_walk(tmp .. "/ws", { hash = true, exclude = function(rel)
      if rel == "a" then helpers.sh("rm -rf " .. q(tmp .. "/ws/c") .. " " .. q(tmp .. "/ws/b")) end
      if rel == "d" then helpers.sh("rm -rf " .. q(tmp .. "/ws/d")) end
      return false
    end }))
    assert.same({ "a", "d" }, trees.paths(t))
    assert.equal(1, info.files)
  end)

  it("walks below 4096 bytes of path and 64 open directories, holding no descriptor after", function()
    local depth, comp = 120, ("d"):rep(40)
    for i = 1, depth do W.write(tmp, "ws/" .. (comp .. "/"):rep(i - 1) .. "f" .. i, i .. "\n") end
    W.write(tmp, "ws/" .. (comp .. "/"):rep(depth) .. "last", "bottom\n")
    local fds = helpers.fd_count()
    local t, info = assert(core.tree_walk(tmp .. "/ws", { hash = true }))
    assert.equal(fds, helpers.fd_count())
    assert.equal(depth, info.dirs)
    assert.equal(depth + 1, info.files)
    local rel = (comp .. "/"):rep(depth) .. "last"
    assert.is_true(#rel > 4096)
    assert.equal(core.sha256("bottom\n"), t:get(rel).sha256)
    for _, i in ipairs { 1, 10, 60, 120 } do -- directories closed on the way down are reopened for these
      assert.equal(core.sha256(i .. "\n"), t:get((comp .. "/"):rep(i - 1) .. "f" .. i).sha256, i)
    end
  end)

  it("walks an empty root: no entry, every count zero", function()
    local t, info = assert(core.tree_walk(tmp, { hash = true, exclude = function() error("nothing to ask") end }))
    assert.equal(0, t:count())
    assert.same({ files = 0, dirs = 0, symlinks = 0, bytes = 0, hashed = 0, skipped = {}, temps = {} }, info)
  end)

  it("records when it started", function()
    local before = os.time()
    local t = assert(core.tree_walk(tmp, {}))
    assert.is_true(t:taken_at() >= before - 1 and t:taken_at() <= os.time() + 1)
  end)

  it("fails clearly on a missing root, a root that is no directory, and misuse", function()
    assert.same({ nil, "stat " .. tmp .. "/none: No such file or directory", "ENOENT" },
      { core.tree_walk(tmp .. "/none", {}) })
    W.write(tmp, "file", "x")
    assert.same({ nil, "tree_walk " .. tmp .. "/file: not a directory", "ENOTDIR" }, { core.tree_walk(tmp .. "/file") })
    assert.has_error(function() core.tree_walk(tmp, { exclude = "x" }) end,
      "tree_walk: opts.exclude must be a function or an exclude matcher, got string")
    assert.has_error(function() core.tree_walk(tmp, { known = {} }) end,
      "tree_walk: opts.known must be a tree, got table")
    assert.has_error(function() core.tree_walk(tmp, 1) end, "tree_walk: opts must be a table, got number")
    assert.has_error(function() core.tree_walk("") end, "tree_walk: root is empty")
  end)
end)

describe("core.tree_walk with known", function()
  local tmp, ws
  before_each(function()
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    for i = 1, 5 do W.write(ws, "f" .. i, ("content %d\n"):format(i)) end
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  local function age(rel, seconds)
    helpers.sh("touch -h -d @" .. (os.time() - seconds) .. " " .. q(ws .. "/" .. rel))
  end

  it("reads nothing when nothing changed since an earlier walk", function()
    for i = 1, 5 do age("f" .. i, 3600) end
    local t1, i1 = assert(core.tree_walk(ws, { hash = true }))
    assert.equal(5, i1.hashed)
    local t2, i2 = assert(core.tree_walk(ws, { hash = true, known = t1 }))
    assert.equal(0, i2.hashed)
    assert.same({}, (core.tree_diff(t1, t2)))
  end)

  it("reads again what changed: size, mode, inode, mtime", function()
    for i = 1, 5 do age("f" .. i, 3600) end
    local t1 = assert(core.tree_walk(ws, { hash = true }))
    W.write(ws, "f1", "longer content 1\n")                                  -- size, inode
    helpers.sh("chmod 600 " .. q(ws .. "/f2"))                                 -- mode
    helpers.sh("cp -p " .. q(ws .. "/f3") .. " " .. q(tmp .. "/x") .. " && mv " .. q(tmp .. "/x") .. " "
      .. q(ws .. "/f3"))                                                       -- inode, same mtime
    age("f4", 1800)                                                            -- mtime
    local t2, i2 = assert(core.tree_walk(ws, { hash = true, known = t1 }))
    assert.equal(4, i2.hashed)
    assert.same({ "f1", "f2" }, (core.tree_diff(t1, t2)))
    assert.equal(core.sha256("longer content 1\n"), t2:get("f1").sha256)
  end)

  it("reads again a file rewritten within the same second as the walk that recorded it", function()
    local t1 = assert(core.tree_walk(ws, { hash = true }))
    local st = assert(core.fs_lstat(ws .. "/f1"))
    local f = assert(io.open(ws .. "/f1", "r+b")) -- same inode, same size
    f:write("CONTENT")
    f:close()
    helpers.sh("touch -d @" .. string.format("%.9f", st.mtime) .. " " .. q(ws .. "/f1"))
    local st2 = assert(core.fs_lstat(ws .. "/f1"))
    assert.equal(snapshot.quick_key(st), snapshot.quick_key(st2))
    local t2, i2 = assert(core.tree_walk(ws, { hash = true, known = t1 }))
    assert.equal(5, i2.hashed) -- every file is within 2 s of t1's start
    assert.equal(core.sha256("CONTENT 1\n"), t2:get("f1").sha256)
    -- once the earlier walk is older than the files by 2 s, they are trusted
    t1:taken_at(st.mtime + 2.5)
    local _, i3 = assert(core.tree_walk(ws, { hash = true, known = t1 }))
    assert.equal(1, i3.hashed)
  end)

  it("trusts nothing from a tree that does not say when it was taken", function()
    for i = 1, 5 do age("f" .. i, 3600) end
    local t1 = assert(core.tree_walk(ws, { hash = true }))
    local copy = core.tree_new()
    for rel, kind, mode, size, mtime_ns, ino, sha in t1:iter(nil, "kind mode size mtime_ns ino sha256") do
      copy:add(rel, { kind = kind, mode = mode, size = size, mtime_ns = mtime_ns, ino = ino, sha256 = sha })
    end
    local _, info = assert(core.tree_walk(ws, { hash = true, known = copy }))
    assert.equal(5, info.hashed)
    copy:taken_at(t1:taken_at())
    _, info = assert(core.tree_walk(ws, { hash = true, known = copy }))
    assert.equal(0, info.hashed)
  end)
end)
