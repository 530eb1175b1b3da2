-- ferry.delta without a sandbox, on trees: whether an earlier state can be a delta's base, the sandbox's tree
-- from the recorded one and a listing, what a delta sends and deletes, and whether the listing after a sync
-- shows the local tree.
local core = require "ferry.core"
local delta = require "ferry.delta"

local MTIME = 1700000000500000000

-- The trees in step after a sync, from a list of entries in walk order: {rel, data = file content} |
-- {rel, dir = true} | {rel, target = link target}, with an optional mode. Returns loc (the local tree),
-- base (the baseline: what was sent) and recorded (the sandbox's listing at the marker).
local function in_step(entries)
  local loc, recorded = core.tree_new(), core.tree_new()
  for i, e in ipairs(entries) do
    local rel = e[1]
    if e.dir then
      loc:add(rel, { kind = "dir", mode = e.mode or 493 })
      recorded:add(rel, { kind = "dir", mode = e.mode or 493, mtime_ns = MTIME, ino = 100 + i, dev = 1 })
    elseif e.target then
      loc:add(rel, { kind = "symlink", target = e.target })
      recorded:add(rel, { kind = "symlink", mode = 511, target = e.target, mtime_ns = MTIME, ino = 100 + i, dev = 1 })
    else
      loc:add(rel, { kind = "file", mode = e.mode or 420, size = #e.data, sha256 = core.sha256(e.data) })
      recorded:add(rel, { kind = "file", mode = e.mode or 420, size = #e.data, mtime_ns = MTIME, ino = 100 + i,
        dev = 1 })
    end
  end
  return loc, loc:copy(), recorded
end

local TREE = {
  { "a", dir = true },
  { "a/b", dir = true },
  { "a/b/deep.txt", data = "deep\n" },
  { "a/x.txt", data = "x\n" },
  { "link", target = "a/x.txt" },
  { "top.txt", data = "top\n" },
  { "run.sh", data = "#!/bin/sh\n", mode = 493 },
}

-- The fields of tree entry `e`, for an add.
local function fields(e, changes)
  local f = { kind = e.kind, mode = e.mode, size = e.size, mtime_ns = e.mtime_ns, ino = e.ino, dev = e.dev,
    sha256 = e.sha256, target = e.target, flags = e.flags }
  for k, v in pairs(changes or {}) do f[k] = v end
  return f
end

describe("delta.plan", function()
  local loc, base, recorded, listed, info

  before_each(function()
    loc, base, recorded = in_step(TREE)
    listed, info = core.tree_new(), { incremental = true, root_changed = false }
  end)

  -- What the sandbox did, as the incremental listing prints it: the entry changed (flags 1) with `changes`.
  local function changed(rel, changes)
    local was = recorded:get(rel)
    listed:add(rel, fields(was or {}, changes))
    listed:set_flags(rel, 1)
  end

  -- A directory the sandbox created or removed entries in: listed changed, with every entry it still holds.
  local function complete(dir, gone)
    changed(dir, {})
    for _, rel in ipairs(recorded:children(dir)) do
      if not (gone and gone[rel]) and not listed:get(rel) then listed:add(rel, fields(recorded:get(rel))) end
    end
  end

  local function plan()
    local now, unknown = delta.current(recorded, listed, info)
    local out = delta.plan { loc = loc, base = base, recorded = recorded, now = now, unknown = unknown,
      listed = listed }
    local send = {}
    for rel, flags in loc:iter(nil, "flags") do
      if flags & delta.SEND ~= 0 then send[#send + 1] = rel end
    end
    return { send = send, delete = out.delete, changed = out.changed }
  end

  it("sends and deletes nothing when both sides are as the last sync left them", function()
    assert.same({ send = {}, delete = {}, changed = 0 }, plan())
  end)

  it("sends a file changed locally, with its parent dirs, in path order", function()
    loc:set_sha256("a/b/deep.txt", core.sha256("DEEP\n"))
    assert.same({ send = { "a", "a/b", "a/b/deep.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("sends a file whose local mode changed", function()
    loc:add("top.txt", fields(loc:get("top.txt"), { mode = 384 }))
    assert.same({ send = { "top.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("sends a dir whose local mode changed, without deleting it", function()
    loc:add("a/b", { kind = "dir", mode = 448 })
    assert.same({ send = { "a", "a/b" }, delete = {}, changed = 1 }, plan())
  end)

  it("resends a file whose mode changed in the sandbox", function()
    changed("run.sh", { mode = 420, sha256 = core.sha256("#!/bin/sh\n") })
    assert.same({ send = { "run.sh" }, delete = {}, changed = 1 }, plan())
  end)

  it("resends a file changed in the sandbox that it could not hash", function()
    changed("top.txt", { size = 99 })
    assert.same({ send = { "top.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("keeps a file only touched in the sandbox: new mtime, same hash", function()
    changed("top.txt", { mtime_ns = MTIME + 100, sha256 = core.sha256("top\n") })
    assert.same({ send = {}, delete = {}, changed = 0 }, plan())
  end)

  it("resends a file changed in the sandbox: other hash, even with its size and mtime put back", function()
    changed("top.txt", { sha256 = core.sha256("TOP\n") })
    assert.same({ send = { "top.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("resends a file changed in the sandbox without a hash, even with the stat recorded", function()
    changed("top.txt", {})
    assert.same({ send = { "top.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("judges by hash when the local file changed and the sandbox holds the same bytes", function()
    local sum = core.sha256("the same on both sides\n")
    loc:set_sha256("top.txt", sum)
    changed("top.txt", { mtime_ns = MTIME + 100, sha256 = sum })
    assert.same({ send = {}, delete = {}, changed = 0 }, plan())
  end)

  it("trusts an unchanged file only when its lstat is the one recorded", function()
    complete("a") -- a/x.txt listed unchanged, but another inode: put there by a rename
    listed:add("a/x.txt", fields(recorded:get("a/x.txt"), { ino = 999 }))
    assert.same({ send = { "a", "a/x.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("sends a file the sandbox made with the same bytes (it has no record of its mode)", function()
    loc:add("new.txt", { kind = "file", mode = 420, size = 4, sha256 = core.sha256("new\n") })
    info.root_changed = true
    for _, rel in ipairs(recorded:children("")) do listed:add(rel, fields(recorded:get(rel))) end
    listed:add("new.txt", { kind = "file", mode = 420, size = 4, ino = 5, dev = 1, sha256 = core.sha256("new\n"),
      flags = 1 })
    assert.same({ send = { "new.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("sends a file the baseline does not hold", function()
    base:remove("top.txt")
    assert.same({ send = { "top.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("deletes then sends an entry whose kind changed", function()
    loc:remove("top.txt")
    loc:add("top.txt", { kind = "dir", mode = 493 })
    assert.same({ send = { "top.txt" }, delete = { "top.txt" }, changed = 1 }, plan())
  end)

  it("deletes a dir the sandbox holds where the workspace has a file, its contents covered by it", function()
    loc:prune("a/b")
    loc:add("a/b", { kind = "file", mode = 420, size = 2, sha256 = core.sha256("b\n") })
    assert.same({ send = { "a", "a/b" }, delete = { "a/b" }, changed = 1 }, plan())
  end)

  it("deletes then sends a symlink whose target changed", function()
    loc:add("link", { kind = "symlink", target = "top.txt" })
    assert.same({ send = { "link" }, delete = { "link" }, changed = 1 }, plan())
  end)

  it("sends what was deleted in the sandbox, without deleting anything", function()
    complete("a", { ["a/x.txt"] = true })
    assert.same({ send = { "a", "a/x.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("sends a whole dir deleted in the sandbox", function()
    complete("a", { ["a/b"] = true })
    assert.same({ send = { "a", "a/b", "a/b/deep.txt" }, delete = {}, changed = 2 }, plan())
  end)

  it("deletes what only the sandbox holds, nested deletes collapsed to the topmost, in path order", function()
    info.root_changed = true
    for _, rel in ipairs(recorded:children("")) do listed:add(rel, fields(recorded:get(rel))) end
    complete("a/b")
    listed:add("new", { kind = "dir", mode = 493, ino = 1, dev = 1, flags = 1 })
    listed:add("new/deeper", { kind = "dir", mode = 493, ino = 2, dev = 1, flags = 1 })
    listed:add("new/deeper/file", { kind = "file", mode = 420, size = 1, ino = 3, dev = 1, flags = 1 })
    listed:add("a/b/extra.txt", { kind = "file", mode = 420, size = 1, ino = 4, dev = 1, flags = 1 })
    listed:add("Z.txt", { kind = "file", mode = 420, size = 1, ino = 6, dev = 1, flags = 1 })
    assert.same({ send = {}, delete = { "Z.txt", "a/b/extra.txt", "new" }, changed = 0 }, plan())
  end)

  it("deletes a dir that became a file locally, its contents covered by it", function()
    loc:prune("a")
    loc:add("a", { kind = "file", mode = 420, size = 2, sha256 = core.sha256("a\n") })
    assert.same({ send = { "a" }, delete = { "a" }, changed = 1 }, plan())
  end)

  it("deletes and sends again a dir whose contents it cannot know (moved there from elsewhere)", function()
    complete("a")
    listed:add("a/b", fields(recorded:get("a/b"), { ino = 4242 })) -- unchanged, but not the dir recorded
    assert.same({ send = { "a", "a/b", "a/b/deep.txt" }, delete = { "a/b" }, changed = 2 }, plan())
  end)

  it("sends everything to an empty sandbox", function()
    info.root_changed = true
    local all = {}
    for rel in loc:iter(nil, "") do all[#all + 1] = rel end
    assert.same({ send = all, delete = {}, changed = #all }, plan())
  end)

  it("plans the same from a full listing as from an incremental one", function()
    changed("top.txt", { sha256 = core.sha256("TOP\n") })
    complete("a", { ["a/x.txt"] = true })
    local want = plan()
    for rel in loc:iter(nil, "") do loc:set_flags(rel, 0) end
    local full = recorded:copy()
    full:remove("a/x.txt")
    for rel, flags in listed:iter(nil, "flags") do full:add(rel, fields(listed:get(rel), { flags = flags })) end
    listed, info = full, { incremental = false, root_changed = false }
    assert.same(want, plan())
  end)
end)

describe("delta.current", function()
  it("is the recorded tree itself when nothing changed", function()
    local _, _, recorded = in_step(TREE)
    local now, unknown = delta.current(recorded, core.tree_new(), { incremental = true, root_changed = false })
    assert.equal(recorded, now)
    assert.same({}, unknown)
  end)

  it("drops what was below a directory replaced by something else", function()
    local _, _, recorded = in_step(TREE)
    local listed = core.tree_new()
    listed:add("a", { kind = "dir", mode = 493, ino = 101, dev = 1, flags = 1 })
    listed:add("a/b", { kind = "symlink", target = "..", ino = 7, dev = 1, flags = 1 })
    listed:add("a/x.txt", { kind = "file", mode = 420, size = 2, mtime_ns = MTIME, ino = 104, dev = 1 })
    local now = delta.current(recorded, listed, { incremental = true, root_changed = false })
    assert.is_nil(now:get("a/b/deep.txt"))
    assert.equal("symlink", now:get("a/b").kind)
    assert.equal("file", now:get("top.txt").kind)
  end)
end)

describe("delta.usable_base", function()
  local st, want

  before_each(function()
    st = { version = 2, provider = "bwrap:/tmp/box", remote_dir = "/sandbox/workspace",
      excludes = { "node_modules/", "*.log" }, preserve = { ".ferry-runtime" },
      trees = { baseline = ("a"):rep(64), remote = ("b"):rep(64) }, sync = { id = "0123456789abcdef" } }
    want = { provider = "bwrap:/tmp/box", remote_dir = "/sandbox/workspace", excludes = { "node_modules/", "*.log" },
      preserve = { ".ferry-runtime" } }
  end)

  it("takes the state of an earlier prepare of the same sandbox", function()
    assert.equal(st, delta.usable_base(st, want))
  end)

  it("says why another state cannot be a base", function()
    local function why() return select(2, delta.usable_base(st, want)) end
    want.provider = "local"
    assert.equal("the state is of provider bwrap:/tmp/box", why())
    want.provider, want.remote_dir = st.provider, "/elsewhere"
    assert.equal("the state is of remote dir /sandbox/workspace", why())
    want.remote_dir, want.excludes = st.remote_dir, { "*.log", "node_modules/" }
    assert.equal("the excludes changed", why())
    want.excludes, want.preserve = st.excludes, { ".ferry-runtime", ".venv" }
    assert.equal("the preserved names changed", why())
    want.preserve, st.trees.remote = st.preserve, nil
    assert.equal("the earlier sync did not list the sandbox (no GNU find)", why())
    st.version = 1
    assert.equal("the state was written by an older ferry", why())
  end)
end)

describe("delta.disagreement", function()
  local loc, after

  before_each(function()
    local _
    loc, _, after = in_step(TREE)
  end)

  it("is nil when the listing shows the local tree", function()
    assert.is_nil(delta.disagreement(after, loc))
  end)

  it("names a path whose kind, size or link target differ", function()
    after:add("a/x.txt", fields(after:get("a/x.txt"), { size = 3 }))
    assert.equal("a/x.txt", delta.disagreement(after, loc))
    after:add("a/x.txt", fields(after:get("a/x.txt"), { size = 2 }))
    after:add("link", fields(after:get("link"), { target = "elsewhere" }))
    assert.equal("link", delta.disagreement(after, loc))
  end)

  it("names a path on one side only, and never a mode", function()
    after:add("run.sh", fields(after:get("run.sh"), { mode = 420 }))
    assert.is_nil(delta.disagreement(after, loc))
    after:add("stray", { kind = "file", size = 1 })
    assert.equal("stray", delta.disagreement(after, loc))
    after:remove("stray")
    loc:add("only here", { kind = "dir", mode = 493 })
    assert.equal("only here", delta.disagreement(after, loc))
  end)
end)
