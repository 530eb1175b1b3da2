-- The compact tree (core.tree_new and its methods): entries in path order ('/' before every other byte),
-- every field kept exactly, lookups, iteration, flags and digests, removal, the subtree count, and the
-- misuse errors.
local core = require "ferry.core"
local trees = require "support.trees"

local SUM = ("0123456789abcdef"):rep(4)
local SUM2 = ("fedcba9876543210"):rep(4)

local paths = trees.paths

local function tree_of(list)
  local t = core.tree_new()
  for _, rel in ipairs(list) do t:add(rel, { kind = "file" }) end
  return t
end

describe("core.tree_new", function()
  it("starts empty", function()
    local t = core.tree_new()
    assert.equal(0, t:count())
    assert.equal(0, #t)
    assert.is_nil(t:get("a"))
    assert.same({}, paths(t))
    assert.equal(0, t:under(""))
    assert.is_nil(t:taken_at())
    assert.equal("tree (0 entries)", tostring(t))
  end)

  it("keeps every field exactly", function()
    local t = core.tree_new()
    t:add("d", { kind = "dir", mode = 493, mtime_ns = 1700000000123456789, ino = 7, dev = 2049 })
    t:add("d/f", { kind = "file", mode = 4095, size = 1 << 40, mtime = 1700000000.5, ino = 1 << 50, dev = 2049,
      sha256 = SUM:upper(), flags = 255 })
    t:add("d/l", { kind = "symlink", mode = 511, target = "../x y\n" })
    t:add("o", { kind = "other", mode = 420, mtime_ns = -1500000000 })
    assert.same({ kind = "dir", mode = 493, size = 0, mtime = 1700000000 + 123456789 / 1e9,
      mtime_ns = 1700000000123456789, ino = 7, dev = 2049, flags = 0 }, t:get("d"))
    assert.same({ kind = "file", mode = 4095, size = 1 << 40, mtime = 1700000000.5, mtime_ns = 1700000000500000000,
      ino = 1 << 50, dev = 2049, sha256 = SUM, flags = 255 }, t:get("d/f"))
    assert.same({ kind = "symlink", mode = 511, size = 0, mtime = 0, mtime_ns = 0, ino = 0, dev = 0, flags = 0,
      target = "../x y\n" }, t:get("d/l"))
    assert.equal(-1500000000, t:get("o").mtime_ns)
    assert.equal(-1.5, t:get("o").mtime)
    assert.equal(4, t:count())
  end)

  it("sorts in path order whatever the order of the adds: '/' before every other byte", function()
    local t = tree_of { "a b", "a/x", "b", "a", "a/x/y", "a.txt", "a-", "A", "\xff", "a/\x01" }
    assert.same({ "A", "a", "a/\x01", "a/x", "a/x/y", "a b", "a-", "a.txt", "b", "\xff" }, paths(t))
    local list = { "a b", "a/x", "b", "a", "a.txt", "a/x/y" }
    table.sort(list, core.tree_path_less)
    assert.same({ "a", "a/x", "a/x/y", "a b", "a.txt", "b" }, list)
    assert.is_false(core.tree_path_less("a", "a"))
    assert.is_true(core.tree_path_less("a", "a/"))
  end)

  it("replaces a path added again (the last add wins)", function()
    local t = core.tree_new()
    t:add("x", { kind = "file", size = 1 })
    t:add("y", { kind = "file" })
    t:add("x", { kind = "dir", mode = 448 })
    assert.equal(2, t:count())
    assert.equal("dir", t:get("x").kind)
    assert.equal(448, t:get("x").mode)
  end)

  it("holds awkward names: newlines, binary bytes, unicode, 4096-byte and 65535-byte paths", function()
    local long = ("d123456789/"):rep(372) .. "leaf"
    assert.equal(4096, #long)
    local longest = ("x"):rep(65535)
    local names = { "new\nline", "bin\1\2\127\128\255", "ünïcödé ✓", "tab\there", long, longest }
    local t = core.tree_new()
    for i, n in ipairs(names) do t:add(n, { kind = "symlink", target = n:sub(1, 4096) .. i }) end
    for i, n in ipairs(names) do
      assert.equal(n:sub(1, 4096) .. i, t:get(n).target)
    end
    assert.equal(#names, t:count())
    assert.has_error(function() t:add(longest .. "x", { kind = "file" }) end,
      "tree: add: rel is longer than 65535 bytes")
  end)

  it("reports the memory it holds, about 72 bytes an entry plus the paths", function()
    local t, path_bytes = core.tree_new(), 0
    for i = 1, 20000 do
      local rel = string.format("dir%03d/file%05d.txt", i % 100, i)
      t:add(rel, { kind = "file", sha256 = SUM })
      path_bytes = path_bytes + #rel
    end
    assert.equal(20000, t:count())
    local loaded = assert(core.tree_load(t:dump())) -- holds exactly what it needs
    local per_entry = (loaded:bytes() - path_bytes) / 20000
    assert.is_true(per_entry >= 72 and per_entry < 73, "bytes per entry besides its path: " .. per_entry)
    assert.is_true(t:bytes() >= loaded:bytes())
  end)
end)

describe("tree:iter", function()
  local t
  before_each(function()
    t = core.tree_new()
    t:add("b", { kind = "dir", mode = 493 })
    t:add("b/f", { kind = "file", size = 3, sha256 = SUM, flags = 2 })
    t:add("a", { kind = "file", size = 1 })
    t:add("c", { kind = "symlink", target = "b" })
  end)

  it("returns the path and, by default, kind, size and sha256", function()
    local rows = {}
    for rel, kind, size, sha in t:iter() do rows[#rows + 1] = { rel, kind, size, sha or false } end
    assert.same({ { "a", "file", 1, false }, { "b", "dir", 0, false }, { "b/f", "file", 3, SUM },
      { "c", "symlink", 0, false } }, rows)
  end)

  it("returns the fields asked for, in that order, from a given path on", function()
    local rows = {}
    for rel, target, flags, mode in t:iter("b/", "target,flags mode") do
      rows[#rows + 1] = { rel, target or false, flags, mode }
    end
    assert.same({ { "b/f", false, 2, 0 }, { "c", "b", 0, 0 } }, rows)
    assert.same({}, paths(t, "d"))
    assert.same({ "a", "b", "b/f", "c" }, paths(t, ""))
  end)

  it("refuses an unknown field", function()
    assert.has_error(function() t:iter(nil, "kind colour") end, "tree: iter: unknown field 'colour'")
  end)

  it("raises when an add out of order moves the entries during the iteration; removals are fine", function()
    local seen = {}
    for rel in t:iter(nil, "") do
      seen[#seen + 1] = rel
      if rel == "a" then t:remove("b/f") end
    end
    assert.same({ "a", "b", "c" }, seen)
    assert.has_error(function()
      for rel in t:iter(nil, "") do
        if rel == "a" then t:add("0", { kind = "file" }) end
        t:count() -- any call settles the tree
      end
    end, "tree: iter: the tree changed order during the iteration (an add out of order)")
  end)
end)

describe("tree updates", function()
  it("set_sha256 sets and clears a file's digest, and refuses other kinds and unknown paths", function()
    local t = core.tree_new()
    t:add("f", { kind = "file" })
    t:add("d", { kind = "dir" })
    assert.is_true(t:set_sha256("f", SUM2:upper()))
    assert.equal(SUM2, t:get("f").sha256)
    assert.is_true(t:set_sha256("f", nil))
    assert.is_nil(t:get("f").sha256)
    assert.same({ nil, "tree: no entry 'g'", "ENOENT" }, { t:set_sha256("g", SUM) })
    assert.same({ nil, "tree: 'd' is a dir, not a file", "EINVAL" }, { t:set_sha256("d", SUM) })
    assert.has_error(function() t:set_sha256("f", "abc") end, "tree: set_sha256: sha256 must be 64 hex digits or nil")
  end)

  it("set_flags returns the previous flags", function()
    local t = tree_of { "a" }
    assert.equal(0, t:set_flags("a", 5))
    assert.equal(5, t:set_flags("a", 1))
    assert.equal(1, t:get("a").flags)
    assert.same({ nil, "tree: no entry 'b'", "ENOENT" }, { t:set_flags("b", 1) })
    assert.has_error(function() t:set_flags("a", 256) end, "tree: set_flags: flags must be an integer in 0..255")
  end)

  it("remove drops an entry; adding it again brings it back", function()
    local t = tree_of { "a", "b", "c" }
    assert.is_true(t:remove("b"))
    assert.is_false(t:remove("b"))
    assert.is_false(t:remove("zz"))
    assert.equal(2, t:count())
    assert.is_nil(t:get("b"))
    assert.same({ "a", "c" }, paths(t))
    t:add("b", { kind = "dir" })
    assert.same({ "a", "b", "c" }, paths(t))
    assert.equal("dir", t:get("b").kind)
    assert.equal(3, t:count())
  end)

  it("under counts the entries below a path (its subtree is contiguous)", function()
    local t = tree_of { "a", "a/b", "a/b/c", "a/d", "a b", "a.x", "ab", "b" }
    assert.equal(3, t:under("a"))
    assert.equal(1, t:under("a/b"))
    assert.equal(0, t:under("a b"))
    assert.equal(0, t:under("nope"))
    assert.equal(8, t:under(""))
    t:remove("a/d")
    assert.equal(2, t:under("a"))
    assert.equal(7, t:under(""))
  end)

  it("taken_at keeps when the walk that made the tree started", function()
    local t = core.tree_new()
    assert.equal(1700000000.25, t:taken_at(1700000000.25))
    assert.equal(1700000000.25, t:taken_at())
    assert.has_error(function() t:taken_at("x") end, "tree: taken_at: seconds must be a number")
  end)
end)

describe("tree misuse", function()
  local t = core.tree_new()
  local cases = {
    { function() t:add("/abs", { kind = "file" }) end,
      "tree: add: rel must be a relative path without empty, '.' or '..' components, got '/abs'" },
    { function() t:add("a//b", { kind = "file" }) end,
      "tree: add: rel must be a relative path without empty, '.' or '..' components, got 'a//b'" },
    { function() t:add("a/../b", { kind = "file" }) end,
      "tree: add: rel must be a relative path without empty, '.' or '..' components, got 'a/../b'" },
    { function() t:add("", { kind = "file" }) end,
      "tree: add: rel must be a relative path without empty, '.' or '..' components, got ''" },
    { function() t:add(1, { kind = "file" }) end, "tree: add: rel must be a string, got number" },
    { function() t:add("a") end, "tree: add: fields must be a table, got no value" },
    { function() t:add("a", { kind = "fifo" }) end,
      'tree: add: fields.kind must be "file", "dir", "symlink" or "other", got fifo' },
    { function() t:add("a", {}) end, 'tree: add: fields.kind must be "file", "dir", "symlink" or "other", got nil' },
    { function() t:add("a", { kind = "file", mode = 4096 }) end,
      "tree: add: fields.mode must be an integer in 0..4095" },
    { function() t:add("a", { kind = "file", size = -1 }) end,
      "tree: add: fields.size must be an integer in 0..9223372036854775807" },
    { function() t:add("a", { kind = "file", sha256 = SUM:sub(2) }) end,
      "tree: add: fields.sha256 must be 64 hex digits" },
    { function() t:add("a", { kind = "file", target = "x" }) end, "tree: add: fields.target is only for a symlink" },
    { function() t:add("a", { kind = "file", mtime = 0 / 0 }) end,
      "tree: add: fields.mtime must be a number of seconds" },
    { function() t:add("a", { kind = "file", mtime_ns = 1.5 }) end, "tree: add: fields.mtime_ns must be an integer" },
    { function() t.get(42, "a") end, "tree: self must be a tree, got number" },
    { function() core.tree_diff(t, {}) end, "tree_diff: b must be a tree, got table" },
  }
  for i, c in ipairs(cases) do
    it("raises a clear error (" .. i .. ")", function()
      assert.has_error(c[1], c[2])
    end)
  end

  it("raises past a tree's limits", function()
    local u = core.tree_new()
    assert.has_error(function() u:add("l", { kind = "symlink", target = ("t"):rep(32768) }) end,
      "tree: add: fields.target is longer than 32767 bytes")
    for i = 1, 255 do u:add("d" .. i, { kind = "dir", dev = i }) end
    assert.has_error(function() u:add("d256", { kind = "dir", dev = 256 }) end, "tree: more than 255 devices")
  end)
end)

describe("tree edits by subtree (what a delta and a merge look at)", function()
  -- a tree whose paths ending in '/' are dirs
  local function made(list)
    local u = core.tree_new()
    for _, p in ipairs(list) do
      local dir = p:sub(-1) == "/"
      u:add(dir and p:sub(1, -2) or p, { kind = dir and "dir" or "file", mode = dir and 493 or 420 })
    end
    return u
  end
  local t
  before_each(function()
    t = made { "a/", "a/b/", "a/b/c", "a/b.txt", "a/x", "ab", "z" }
    t:add("a/b/c", { kind = "file", mode = 420, size = 3, sha256 = SUM, mtime_ns = 7, ino = 9, dev = 4 })
    t:taken_at(1700000000.5)
  end)

  it("copies every entry and when it was taken; the copy is a tree of its own", function()
    local c = t:copy()
    assert.same(paths(t), paths(c))
    assert.same(t:get("a/b/c"), c:get("a/b/c"))
    assert.equal(t:taken_at(), c:taken_at())
    c:remove("z")
    assert.is_not_nil(t:get("z"))
    assert.equal(0, core.tree_new():copy():count())
  end)

  -- a copy, a load and a walk trim their blocks to what they hold (exactly, under the sanitizers' malloc): a
  -- tree of one entry (a one-byte path) grows again from there
  it("grows a copied or loaded tree of one entry again", function()
    local one = made { "a" }
    for _, u in ipairs { one:copy(), assert(core.tree_load(one:dump())), core.tree_new():copy() } do
      for i = 1, 100 do u:add(string.format("b%03d", i), { kind = "file", mode = 420 }) end
      assert.equal(100 + (u:get("a") and 1 or 0), u:count())
      assert.equal("b100", paths(u)[u:count()])
    end
  end)

  it("prunes a path and everything below it, not its neighbours that share a prefix", function()
    assert.equal(3, t:prune("a/b") + t:prune("a/b.txt"))
    assert.same({ "a", "a/x", "ab", "z" }, paths(t))
    assert.equal(0, t:prune("nothing/here"))
    assert.has_error(function() t:prune("") end, "tree: prune: rel must not be empty")
  end)

  it("lists the children of a path in path order, the top level for \"\"", function()
    assert.same({ "a", "ab", "z" }, t:children(""))
    assert.same({ "a/b", "a/b.txt", "a/x" }, t:children("a"))
    assert.same({ "a/b/c" }, t:children("a/b"))
    assert.same({}, t:children("a/x"))
    assert.same({}, t:children("absent"))
    t:remove("a/b.txt")
    assert.same({ "a/b", "a/x" }, t:children("a"))
  end)

  it("iterates only the kinds asked for", function()
    local u = made { "a/", "a/f" }
    u:add("l", { kind = "symlink", target = "a" })
    local dirs, links = {}, {}
    for rel in u:iter(nil, "", "dir") do dirs[#dirs + 1] = rel end
    for rel, target in u:iter(nil, "target", "symlink") do links[#links + 1] = rel .. " -> " .. target end
    assert.same({ "a" }, dirs)
    assert.same({ "l -> a" }, links)
    assert.has_error(function() u:iter(nil, "", "fifo") end, "tree: iter: unknown kind 'fifo'")
  end)

  it("finds an entry whose parent is not a directory of the tree", function()
    assert.is_nil(t:orphan())
    local u = made { "a/" }
    u:add("a/b/c", { kind = "file" })
    assert.equal("a/b/c", u:orphan())
    u:add("a/b", { kind = "file" })
    assert.equal("a/b/c", u:orphan())
    u:add("a/b", { kind = "dir" })
    assert.is_nil(u:orphan())
    u:add("z/y", { kind = "dir" })
    assert.equal("z/y", u:orphan())
  end)

  it("takes the lstat of the entries another tree holds alike, and clears the others'", function()
    local remote = made { "a/", "a/b/" }
    remote:add("f", { kind = "file", mode = 420, size = 3, sha256 = SUM, mtime_ns = 1, ino = 100 })
    remote:add("g", { kind = "file", mode = 420, size = 3, sha256 = SUM, mtime_ns = 1, ino = 101 })
    remote:add("l", { kind = "symlink", target = "f", mtime_ns = 1, ino = 102 })
    local loc = made { "a/", "a/b/" }
    loc:add("f", { kind = "file", mode = 33188 & 4095, size = 3, sha256 = SUM, mtime_ns = 5000000000, ino = 7,
      dev = 2049 })
    loc:add("g", { kind = "file", mode = 420, size = 3, sha256 = SUM2, mtime_ns = 6000000000, ino = 8 })
    loc:add("l", { kind = "symlink", target = "elsewhere", mtime_ns = 7, ino = 9 })
    loc:taken_at(1700000000)
    assert.equal(3, remote:stat_from(loc)) -- a, a/b, f
    assert.same({ 5000000000, 7, 2049 }, { remote:get("f").mtime_ns, remote:get("f").ino, remote:get("f").dev })
    assert.same({ 0, 0 }, { remote:get("g").mtime_ns, remote:get("g").ino }) -- other content
    assert.same({ 0, 0 }, { remote:get("l").mtime_ns, remote:get("l").ino }) -- other target
    assert.equal(SUM, remote:get("g").sha256) -- the content stays the remote's
    assert.equal(1700000000, remote:taken_at())
  end)
end)
