-- core.tree_diff: the paths where two or three trees differ, checked against a plain Lua reference (and
-- ferry.merge's notion of "the same version") on random trees from a fixed seed.
local core = require "ferry.core"
local merge = require "ferry.merge"
local trees = require "support.trees"

local KINDS = { "file", "file", "file", "dir", "symlink", "other" }

local function hex(n)
  return string.format("%064x", n)
end

-- A random entry; the size follows the digest, as on a real disk.
local function random_entry(always_hashed)
  local kind = KINDS[math.random(#KINDS)]
  local e = { kind = kind, mode = ({ 420, 493, 384, 4095, 2541 })[math.random(5)], ino = math.random(3),
    mtime_ns = math.random(2) * 1000000000 + math.random(0, 1) }
  if kind == "file" then
    local n = math.random(4)
    if always_hashed or math.random(8) > 1 then e.sha256 = hex(n) end
    e.size = n * 10
  elseif kind == "symlink" then
    e.target = ({ "a", "b/c", "../x", "" })[math.random(4)]
  end
  return e
end

local NAMES = { "a", "b", "a b", "a.txt", "ü", "x\ny", "-" }

local function random_path()
  local parts = {}
  for i = 1, math.random(3) do parts[i] = NAMES[math.random(#NAMES)] end
  return table.concat(parts, "/")
end

-- rel -> entry, from a base with some entries changed, removed or added.
local function mutate(base, rate, always_hashed)
  local out = {}
  for rel, e in pairs(base) do
    local r = math.random()
    if r < rate then
      out[rel] = random_entry(always_hashed)
    elseif r > rate * 1.5 then
      out[rel] = e
    end
  end
  for _ = 1, math.random(0, 5) do out[random_path()] = random_entry(always_hashed) end
  return out
end

local function to_tree(snap)
  local t = core.tree_new()
  for rel, e in pairs(snap) do t:add(rel, e) end
  return t
end

-- What tree_diff compares.
local function same(a, b, mask, compare)
  if a == nil or b == nil then return a == b end
  if a.kind ~= b.kind then return false end
  if a.kind == "symlink" then return a.target == b.target end
  if a.mode & mask ~= b.mode & mask then return false end
  if a.kind ~= "file" then return true end
  if a.size ~= b.size then return false end
  if compare == "size" then return true end
  if compare == "stat" then return a.mtime_ns == b.mtime_ns and a.ino == b.ino end
  return a.sha256 == b.sha256
end

local function reference(snaps, mask, compare)
  local paths, sides = {}, {}
  for _, rel in ipairs(trees.union_sorted(snaps)) do
    local bits = 0
    for k = 2, #snaps do
      if not same(snaps[1][rel], snaps[k][rel], mask, compare) then bits = bits | (1 << (k - 2)) end
    end
    if bits ~= 0 then
      paths[#paths + 1] = rel
      sides[#sides + 1] = bits
    end
  end
  return paths, sides
end

describe("core.tree_diff", function()
  it("agrees with the reference on random trees (two and three sides, masks, each compare)", function()
    math.randomseed(20261126)
    for round = 1, 300 do
      local base = {}
      for _ = 1, math.random(0, 40) do base[random_path()] = random_entry() end
      local b, c = mutate(base, 0.2), mutate(base, 0.2)
      local ta, tb, tc = to_tree(base), to_tree(b), to_tree(c)
      local mask = ({ 4095, 511, 0 })[round % 3 + 1]
      local compare = ({ "content", "stat", "content", "size" })[round % 4 + 1]
      local opts = { mode_mask = mask, compare = compare }
      local want_p, want_s = reference({ base, b, c }, mask, compare)
      local got_p, got_s = core.tree_diff(ta, tb, tc, opts)
      assert.same(want_p, got_p, "round " .. round)
      assert.same(want_s, got_s, "round " .. round)
      local two_p = reference({ base, b }, mask, compare)
      assert.same(two_p, (core.tree_diff(ta, tb, opts)), "round " .. round)
    end
  end)

  it("marks each side as ferry.merge would judge it changed", function()
    math.randomseed(7)
    for _ = 1, 100 do
      local base = {}
      for _ = 1, 30 do base[random_path()] = random_entry(true) end
      local l, r = mutate(base, 0.3, true), mutate(base, 0.3, true)
      local paths, sides = core.tree_diff(to_tree(base), to_tree(l), to_tree(r))
      local listed = {}
      for i, rel in ipairs(paths) do listed[rel] = sides[i] end
      for _, s in ipairs { base, l, r } do
        for rel in pairs(s) do
          local want = (merge.same(base[rel], l[rel]) and 0 or 1) | (merge.same(base[rel], r[rel]) and 0 or 2)
          assert.equal(want, listed[rel] or 0, rel)
        end
      end
    end
  end)

  it("finds nothing between a tree and itself, or two empty trees", function()
    local t = to_tree { a = { kind = "dir", mode = 493 }, ["a/f"] = { kind = "file", sha256 = hex(1), size = 1 } }
    assert.same({}, (core.tree_diff(t, t)))
    assert.same({}, (core.tree_diff(t, t, t)))
    assert.same({}, (core.tree_diff(core.tree_new(), core.tree_new())))
  end)

  it("treats an unknown digest as different from a known one, and two unknown ones by size", function()
    local a = to_tree { f = { kind = "file", size = 1, sha256 = hex(1) }, g = { kind = "file", size = 1 } }
    local b = to_tree { f = { kind = "file", size = 1 }, g = { kind = "file", size = 1 } }
    local c = to_tree { f = { kind = "file", size = 1 }, g = { kind = "file", size = 2 } }
    assert.same({ "f" }, (core.tree_diff(a, b)))
    assert.same({ "g" }, (core.tree_diff(b, c)))
  end)

  it("leaves removed entries out", function()
    local a = to_tree { x = { kind = "file", size = 1 }, y = { kind = "file", size = 1 } }
    local b = to_tree { x = { kind = "file", size = 1 }, y = { kind = "file", size = 1 } }
    b:remove("y")
    a:remove("x")
    local p, s = core.tree_diff(a, b)
    assert.same({ "x", "y" }, p)
    assert.same({ 1, 1 }, s)
  end)

  it("refuses bad options", function()
    local t = core.tree_new()
    assert.has_error(function() core.tree_diff(t, t, { compare = "hash" }) end,
      'tree_diff: opts.compare must be "content", "stat" or "size"')
    assert.has_error(function() core.tree_diff(t, t, t, { mode_mask = -1 }) end,
      "tree_diff: opts.mode_mask must be an integer in 0..07777")
    assert.has_error(function() core.tree_diff(t, t, "x") end, "tree_diff: opts must be a table, got string")
    assert.has_error(function() core.tree_diff(t) end, "tree_diff: b must be a tree, got no value")
  end)
end)
