-- ferry.delta without a sandbox: whether an earlier state can be a delta's base, what a delta sends and
-- deletes, and whether the listing after a sync shows the local tree.
local core = require "ferry.core"
local delta = require "ferry.delta"

local MTIME = "1700000000.5000000000"

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = type(v) == "table" and copy(v) or v end
  return out
end

-- A workspace and the sandbox in step after a sync, from a list of entries in walk order:
-- {rel, data = file content} | {rel, dir = true} | {rel, target = link target}, with an optional mode.
-- Returns snap (the local snapshot), names, listed (what the sandbox's listing shows) and base (the
-- earlier state: the records of that listing and the baseline, the snapshot that was sent).
local function in_step(entries)
  local snap, names, listed = {}, {}, {}
  for _, e in ipairs(entries) do
    local rel = e[1]
    names[#names + 1] = rel
    if e.dir then
      snap[rel] = { kind = "dir", mode = e.mode or 493 }
      listed[rel] = { kind = "dir", mode = string.format("%o", e.mode or 493), size = "4096", mtime = MTIME,
        target = "" }
    elseif e.target then
      snap[rel] = { kind = "symlink", target = e.target }
      listed[rel] = { kind = "symlink", mode = "777", size = tostring(#e.target), mtime = MTIME, target = e.target }
    else
      snap[rel] = { kind = "file", mode = e.mode or 420, size = #e.data, sha256 = core.sha256(e.data) }
      listed[rel] = { kind = "file", mode = string.format("%o", e.mode or 420), size = tostring(#e.data),
        mtime = MTIME, target = "" }
    end
  end
  return snap, names, listed, { remote_stat = delta.recorded_stats(listed), baseline = copy(snap) }
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

describe("delta.plan", function()
  local snap, names, listed, base

  before_each(function()
    snap, names, listed, base = in_step(TREE)
  end)

  local function plan()
    return delta.plan(listed, snap, names, base)
  end

  it("sends and deletes nothing when both sides are as the last sync left them", function()
    assert.same({ send = {}, delete = {}, changed = 0 }, plan())
  end)

  it("sends a file changed locally, with its parent dirs, in walk order", function()
    snap["a/b/deep.txt"].sha256 = core.sha256("DEEP\n")
    assert.same({ send = { "a", "a/b", "a/b/deep.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("sends a file whose local mode changed", function()
    snap["top.txt"].mode = 384
    assert.same({ send = { "top.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("sends a dir whose local mode changed, without deleting it", function()
    snap["a/b"].mode = 448
    assert.same({ send = { "a", "a/b" }, delete = {}, changed = 1 }, plan())
  end)

  it("resends a file whose mode changed in the sandbox", function()
    listed["run.sh"].mode = "644"
    assert.same({ send = { "run.sh" }, delete = {}, changed = 1 }, plan())
  end)

  it("resends a file whose size changed in the sandbox and that has no hash", function()
    listed["top.txt"].size = "99"
    assert.same({ send = { "top.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("keeps a file only touched in the sandbox: new mtime, same hash", function()
    listed["top.txt"].mtime = "1700000100.0000000000"
    listed["top.txt"].sha256 = core.sha256("top\n")
    assert.same({ send = {}, delete = {}, changed = 0 }, plan())
  end)

  it("resends a file changed in the sandbox: new mtime, other hash", function()
    listed["top.txt"].mtime = "1700000100.0000000000"
    listed["top.txt"].sha256 = core.sha256("edited in the sandbox\n")
    assert.same({ send = { "top.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("resends a file with a new mtime and no hash (the sandbox could not hash it)", function()
    listed["top.txt"].mtime = "1700000100.0000000000"
    assert.same({ send = { "top.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("judges by hash when the local file changed and the sandbox holds the same bytes", function()
    local sum = core.sha256("the same on both sides\n")
    snap["top.txt"].sha256, listed["top.txt"].sha256 = sum, sum
    listed["top.txt"].mtime = "1700000100.0000000000"
    assert.same({ send = {}, delete = {}, changed = 0 }, plan())
  end)

  it("sends a file the earlier state has no record of, even with a matching hash", function()
    base.remote_stat["top.txt"] = nil
    listed["top.txt"].sha256 = snap["top.txt"].sha256
    assert.same({ send = { "top.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("sends a file the baseline does not hold", function()
    base.baseline["top.txt"] = nil
    assert.same({ send = { "top.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("deletes then sends an entry whose kind changed", function()
    snap["top.txt"] = { kind = "dir", mode = 493 }
    assert.same({ send = { "top.txt" }, delete = { "top.txt" }, changed = 1 }, plan())
  end)

  it("deletes a dir the sandbox holds where the workspace has a file, its contents covered by it", function()
    snap["a/b"] = { kind = "file", mode = 420, size = 2, sha256 = core.sha256("b\n") }
    snap["a/b/deep.txt"] = nil
    names = { "a", "a/b", "a/x.txt", "link", "top.txt", "run.sh" }
    assert.same({ send = { "a", "a/b" }, delete = { "a/b" }, changed = 1 }, plan())
  end)

  it("deletes then sends a symlink whose target changed", function()
    snap["link"] = { kind = "symlink", target = "top.txt" }
    assert.same({ send = { "link" }, delete = { "link" }, changed = 1 }, plan())
  end)

  it("sends what was deleted in the sandbox, without deleting anything", function()
    listed["a/x.txt"] = nil
    assert.same({ send = { "a", "a/x.txt" }, delete = {}, changed = 1 }, plan())
  end)

  it("sends a whole dir deleted in the sandbox", function()
    listed["a/b"], listed["a/b/deep.txt"] = nil, nil
    assert.same({ send = { "a", "a/b", "a/b/deep.txt" }, delete = {}, changed = 2 }, plan())
  end)

  it("deletes what only the sandbox holds, nested deletes collapsed to the topmost, sorted", function()
    listed["new"] = { kind = "dir", mode = "755", size = "4096", mtime = MTIME, target = "" }
    listed["new/deeper"] = { kind = "dir", mode = "755", size = "4096", mtime = MTIME, target = "" }
    listed["new/deeper/file"] = { kind = "file", mode = "644", size = "1", mtime = MTIME, target = "" }
    listed["a/b/extra.txt"] = { kind = "file", mode = "644", size = "1", mtime = MTIME, target = "" }
    listed["Z.txt"] = { kind = "file", mode = "644", size = "1", mtime = MTIME, target = "" }
    assert.same({ send = {}, delete = { "Z.txt", "a/b/extra.txt", "new" }, changed = 0 }, plan())
  end)

  it("deletes a dir that became a file locally once, its contents covered by it", function()
    snap["a"] = { kind = "file", mode = 420, size = 2, sha256 = core.sha256("a\n") }
    snap["a/b"], snap["a/b/deep.txt"], snap["a/x.txt"] = nil, nil, nil
    names = { "a", "link", "top.txt", "run.sh" }
    assert.same({ send = { "a" }, delete = { "a" }, changed = 1 }, plan())
  end)

  it("sends everything to an empty sandbox", function()
    listed = {}
    assert.same({ send = names, delete = {}, changed = #names }, plan())
  end)
end)

describe("delta.usable_base", function()
  local st, want

  before_each(function()
    st = { provider = "bwrap:/tmp/box", remote_dir = "/sandbox/workspace", excludes = { "node_modules/", "*.log" },
      preserve = { ".ferry-runtime" }, remote_stat = {} }
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
    want.preserve, st.remote_stat = st.preserve, nil
    assert.equal("the earlier sync did not list the sandbox (no GNU find)", why())
  end)
end)

describe("delta.recorded_stats", function()
  it("records a file's mode, size and mtime and a dir's mode, nothing of a symlink", function()
    local _, _, listed = in_step(TREE)
    local rec = delta.recorded_stats(listed)
    assert.equal("f 644 4 " .. MTIME, rec["top.txt"])
    assert.equal("f 755 10 " .. MTIME, rec["run.sh"])
    assert.equal("d 755", rec["a/b"])
    assert.is_nil(rec["link"])
  end)
end)

describe("delta.disagreement", function()
  local snap, listed

  before_each(function()
    local s, _, l = in_step(TREE)
    snap, listed = s, l
  end)

  it("is nil when the listing shows the local tree", function()
    assert.is_nil(delta.disagreement(listed, snap))
  end)

  it("names a path whose kind, size or link target differ", function()
    listed["a/x.txt"].size = "3"
    assert.equal("a/x.txt", delta.disagreement(listed, snap))
    listed["a/x.txt"].size = "2"
    listed["link"].target = "elsewhere"
    assert.equal("link", delta.disagreement(listed, snap))
    listed["link"] = { kind = "file", mode = "644", size = "7", mtime = MTIME, target = "" }
    assert.equal("link", delta.disagreement(listed, snap))
  end)

  it("names a path on one side only", function()
    listed["extra"] = { kind = "file", mode = "644", size = "0", mtime = MTIME, target = "" }
    assert.equal("extra", delta.disagreement(listed, snap))
    listed["extra"], listed["top.txt"] = nil, nil
    assert.equal("top.txt", delta.disagreement(listed, snap))
  end)
end)
