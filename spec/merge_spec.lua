local merge = require "ferry.merge"

local function file(sha, mode) return { kind = "file", sha256 = sha, mode = mode or 420, size = #sha } end
local function dir(mode) return { kind = "dir", mode = mode or 493 } end
local function link(target) return { kind = "symlink", target = target, mode = 511 } end

local function copy(tbl)
  local out = {}
  for k, v in pairs(tbl) do out[k] = type(v) == "table" and copy(v) or v end
  return out
end

local function children_of(tree, rel)
  local prefix, out = rel .. "/", {}
  for p in pairs(tree) do
    if p:sub(1, #prefix) == prefix then out[#out + 1] = p end
  end
  return out
end

local function parent_of(rel) return rel:match("^(.*)/[^/]*$") or "" end

-- Apply a plan to an in-memory tree, refusing anything a real file system would refuse.
local function apply(plan, localsnap, remote)
  local tree = copy(localsnap)
  local function parent_is_dir(p)
    local parent = parent_of(p)
    return parent == "" or (tree[parent] and tree[parent].kind == "dir")
  end
  for i, a in ipairs(plan.actions) do
    local here = tree[a.path]
    local where = string.format("action %d (%s %s)", i, a.op, a.path)
    if a.op == "remove" then
      assert(here and here.kind ~= "dir", where .. ": nothing to unlink")
      tree[a.path] = nil
    elseif a.op == "rmdir" then
      assert(here and here.kind == "dir", where .. ": not a dir")
      assert(#children_of(tree, a.path) == 0, where .. ": dir not empty")
      tree[a.path] = nil
    elseif a.op == "mkdir" then
      assert(parent_is_dir(a.path), where .. ": parent is not a dir")
      assert(here == nil or here.kind == "dir", where .. ": a non-dir is in the way")
      tree[a.path] = dir(a.mode)
    elseif a.op == "write" then
      assert(parent_is_dir(a.path), where .. ": parent is not a dir")
      assert(here == nil or here.kind ~= "dir", where .. ": a dir is in the way")
      assert(merge.same(remote[a.from], a.entry), where .. ": entry is not the remote's")
      tree[a.path] = copy(remote[a.from])
    elseif a.op == "chmod" then
      assert(here, where .. ": nothing to chmod")
      here.mode = a.mode
    else
      error(where .. ": unknown op")
    end
  end
  return tree
end

local function ops(plan)
  local out = {}
  for _, a in ipairs(plan.actions) do
    out[#out + 1] = a.op .. " " .. a.path .. (a.from and a.from ~= a.path and (" <- " .. a.from) or "")
      .. (a.mode and string.format(" %o", a.mode) or "")
  end
  return out
end

local function plan_ok(b, l, r)
  local plan, err = merge.plan(b, l, r)
  assert(plan, err)
  return plan
end

describe("merge.plan", function()
  it("takes a remote edit, keeps a local edit, keeps identical edits without an action", function()
    local b = { a = file "1", b = file "1", c = file "1" }
    local l = { a = file "1", b = file "2", c = file "3" }
    local r = { a = file "2", b = file "1", c = file "3" }
    local plan = plan_ok(b, l, r)
    assert.same({ "write a" }, ops(plan))
    assert.same({ "a" }, plan.take)
    assert.same({ "b", "c" }, plan.keep)
    assert.same({}, plan.conflicts)
    assert.is_true(plan.changed)
  end)

  it("plans nothing when the remote did not change", function()
    local b = { d = dir(), ["d/x"] = file "1" }
    local plan = plan_ok(b, { d = dir(), ["d/x"] = file "2", y = file "9" }, copy(b))
    assert.same({}, plan.actions)
    assert.is_false(plan.changed)
    assert.same({ "d/x", "y" }, plan.keep)
  end)

  it("keeps the local file and saves the remote one beside it when both changed", function()
    local plan = plan_ok({ f = file "1" }, { f = file "2" }, { f = file "3" })
    assert.same({ "write f.ferry-remote <- f" }, ops(plan))
    assert.same({ { path = "f", remote_copy = "f.ferry-remote", kind = "file", reason = "changed on both sides" } },
      plan.conflicts)
    assert.same({ "f" }, plan.conflict_paths)
    assert.same({}, plan.take)
  end)

  it("treats a file added on both sides as a conflict only when the contents differ", function()
    assert.same({ "write n.ferry-remote <- n" }, ops(plan_ok({}, { n = file "a" }, { n = file "b" })))
    assert.same({}, ops(plan_ok({}, { n = file "a" }, { n = file "a" })))
  end)

  it("treats a mode-only change as a change", function()
    assert.same({ "write x" }, ops(plan_ok({ x = file "1" }, { x = file "1" }, { x = file("1", 493) })))
    local plan = plan_ok({ x = file "1" }, { x = file("1", 384) }, { x = file("1", 493) })
    assert.same({ "x" }, plan.conflict_paths)
  end)

  it("keeps the local mode of a directory whose mode both sides changed, without a conflict", function()
    local plan = plan_ok({ d = dir(493) }, { d = dir(448) }, { d = dir(365) })
    assert.same({}, plan.actions)
    assert.same({}, plan.conflicts)
    assert.same({ "d" }, plan.keep)
    assert.same({ "mkdir d 755", "chmod d 555" }, ops(plan_ok({ d = dir(493) }, { d = dir(493) }, { d = dir(365) })))
  end)

  it("deletes what the remote deleted unless it changed locally", function()
    local b = { d = dir(), ["d/x"] = file "1", ["d/y"] = file "1", z = file "1" }
    local plan = plan_ok(b, { d = dir(), ["d/x"] = file "1", ["d/y"] = file "2", z = file "1" }, {})
    assert.same({ "remove z", "remove d/x" }, ops(plan))
    assert.same({ "d/y" }, plan.keep)
    assert.same({}, plan.conflicts)
    plan = plan_ok(b, copy(b), {})
    assert.same({ "remove z", "remove d/y", "remove d/x", "rmdir d" }, ops(plan))
    assert.same({ "d" }, plan.rmdirs)
  end)

  it("restores a locally deleted file the agent edited as a conflict copy, leaving the path deleted", function()
    local plan = plan_ok({ f = file "1" }, {}, { f = file "2" })
    assert.same({ "write f.ferry-remote <- f" }, ops(plan))
    assert.same("deleted locally, changed remotely", plan.conflicts[1].reason)
  end)

  it("replaces a file by a symlink or a directory when only the remote changed it", function()
    assert.same({ "write f" }, ops(plan_ok({ f = file "1" }, { f = file "1" }, { f = link "t" })))
    local plan = plan_ok({ f = file "1" }, { f = file "1" }, { f = dir(), ["f/in"] = file "2" })
    assert.same({ "remove f", "mkdir f 755", "write f/in" }, ops(plan))
  end)

  it("keeps a directory holding a local edit that the remote replaced with a file", function()
    local b = { d = dir(), ["d/x"] = file "1", ["d/y"] = file "1" }
    local plan = plan_ok(b, { d = dir(), ["d/x"] = file "2", ["d/y"] = file "1" }, { d = file "9" })
    assert.same({ "remove d/y", "write d.ferry-remote <- d" }, ops(plan))
    assert.same({ "d" }, plan.conflict_paths)
  end)

  it("saves remote additions under a directory the user replaced with a file beside that file", function()
    local b = { d = dir(), ["d/x"] = file "1" }
    local plan = plan_ok(b, { d = file "7" }, { d = dir(), ["d/x"] = file "1", ["d/new"] = file "2" })
    assert.same({ "mkdir d.ferry-remote 755", "write d.ferry-remote/new <- d/new" }, ops(plan))
    assert.same({ { path = "d/new", remote_copy = "d.ferry-remote/new", kind = "file",
      reason = "a directory above it changed locally" } }, plan.conflicts)
  end)

  it("puts copies into a directory already at the copy name without changing that directory", function()
    local b = { a = dir(448), ["a/c"] = dir() }
    local l = { ["a.ferry-remote"] = dir(493), ["a.ferry-remote/notes"] = file "n" }
    local r = { a = dir(448), ["a/c"] = dir(), ["a/c/new"] = file "2" }
    local plan = plan_ok(b, l, r)
    assert.same({ "mkdir a.ferry-remote/c 755", "write a.ferry-remote/c/new <- a/c/new" }, ops(plan))
  end)

  it("picks another copy name when .ferry-remote is taken by something else", function()
    local b = { f = file "1" }
    local plan = plan_ok(b, { f = file "2", ["f.ferry-remote"] = file "x" }, { f = file "3" })
    assert.same({ "write f.ferry-remote-2 <- f" }, ops(plan))
    plan = plan_ok(b, { f = file "2" }, { f = file "3", ["f.ferry-remote"] = file "4" })
    assert.same({ "write f.ferry-remote", "write f.ferry-remote-2 <- f" }, ops(plan))
  end)

  it("reuses its own copy on a rerun instead of writing another", function()
    local b, l, r = { f = file "1" }, { f = file "2" }, { f = file "3" }
    local after = apply(plan_ok(b, l, r), l, r)
    local again = plan_ok(b, after, r)
    assert.same({}, again.actions)
    assert.same("f.ferry-remote", again.conflicts[1].remote_copy)
  end)

  it("creates an unwritable directory writable, fills it, then sets its mode", function()
    local r = { ro = dir(365), ["ro/f"] = file "1" }
    assert.same({ "mkdir ro 755", "write ro/f", "chmod ro 555" }, ops(plan_ok({}, {}, r)))
  end)

  it("orders removals deepest first and creations parents first", function()
    local b = { a = dir(), ["a/b"] = dir(), ["a/b/c"] = file "1" }
    local r = { x = dir(), ["x/y"] = dir(), ["x/y/z"] = file "1" }
    assert.same({ "remove a/b/c", "rmdir a/b", "rmdir a", "mkdir x 755", "mkdir x/y 755", "write x/y/z" },
      ops(plan_ok(b, copy(b), r)))
  end)

  it("refuses malformed snapshots, naming the side and the path", function()
    local plan, err, code = merge.plan({}, {}, { ["a/b"] = file "1" })
    assert.is_nil(plan)
    assert.equal('remote: "a/b": inside "a", which is not a directory of the snapshot', err)
    assert.equal("EINVAL", code)
    assert.same({ nil, 'remote: "../x": bad path', "EINVAL" }, { merge.plan({}, {}, { ["../x"] = file "1" }) })
    assert.same({ nil, 'local: "f": kind must be file, dir or symlink', "EINVAL" },
      { merge.plan({}, { f = { kind = "fifo" } }, {}) })
    assert.same({ nil, 'baseline: "f": file without sha256', "EINVAL" },
      { merge.plan({ f = { kind = "file" } }, {}, {}) })
    assert.has_error(function() merge.plan({}, nil, {}) end, "merge: local snapshot: expected a table, got nil")
  end)
end)

-- Randomised: random baseline trees, random edits on each side, the plan applied to a model.
local NAMES = { "a", "b", "c", "a.ferry-remote" }
local SHAS = { "h1", "h2", "h3" }
local FILE_MODES = { 420, 420, 493, 384 }
local DIR_MODES = { 493, 493, 493, 448, 365 }
local TARGETS = { "a", "../up", "b/c" }

local function pick(list) return list[math.random(#list)] end

local function random_entry(kind)
  kind = kind or pick { "file", "file", "dir", "symlink" }
  if kind == "file" then return file(pick(SHAS), pick(FILE_MODES)) end
  if kind == "dir" then return dir(pick(DIR_MODES)) end
  return link(pick(TARGETS))
end

local function grow(tree, at, depth)
  for _, name in ipairs(NAMES) do
    if math.random() < 0.45 then
      local rel = at == "" and name or at .. "/" .. name
      tree[rel] = random_entry(depth >= 3 and pick { "file", "symlink" } or nil)
      if tree[rel].kind == "dir" then grow(tree, rel, depth + 1) end
    end
  end
end

local function remove_tree(tree, rel)
  for _, p in ipairs(children_of(tree, rel)) do tree[p] = nil end
  tree[rel] = nil
end

local function sorted_keys(tree)
  local keys = {}
  for k in pairs(tree) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

local function depth_of(rel) return select(2, rel:gsub("/", "")) + 1 end

local function mutate(tree)
  tree = copy(tree)
  for _ = 1, math.random(0, 4) do
    local paths = sorted_keys(tree)
    local op = math.random(6)
    local p = #paths > 0 and pick(paths) or nil
    if op == 1 and p and tree[p].kind ~= "dir" then
      tree[p] = random_entry(tree[p].kind) -- edit content or mode or target
    elseif op == 2 and p and tree[p].kind == "dir" then
      tree[p].mode = pick(DIR_MODES)
    elseif op == 3 and p then
      remove_tree(tree, p)
    elseif op == 4 and p then -- type change
      local kinds = { file = { "dir", "symlink" }, dir = { "file", "symlink" }, symlink = { "file", "dir" } }
      local kind = pick(kinds[tree[p].kind])
      remove_tree(tree, p)
      tree[p] = random_entry(kind)
      if kind == "dir" and depth_of(p) < 3 then grow(tree, p, depth_of(p) + 1) end
    else -- add something in a directory
      local dirs = { "" }
      for _, d in ipairs(paths) do
        if tree[d].kind == "dir" and depth_of(d) < 3 then dirs[#dirs + 1] = d end
      end
      local at = pick(dirs)
      local rel = (at == "" and "" or at .. "/") .. pick(NAMES)
      if not tree[rel] then
        tree[rel] = random_entry()
        if tree[rel].kind == "dir" then grow(tree, rel, depth_of(rel) + 1) end
      end
    end
  end
  return tree
end

local function dump(label, tree)
  local lines = { label .. ":" }
  for _, p in ipairs(sorted_keys(tree)) do
    local e = tree[p]
    lines[#lines + 1] = string.format("  %s %s %o %s", p, e.kind, e.mode or 0, e.sha256 or e.target or "")
  end
  return table.concat(lines, "\n")
end

local function has_descendant(tree, rel) return #children_of(tree, rel) > 0 end

-- The invariants; returns a description of the first broken one, or nil.
local function check_case(b, l, r, stats)
  local plan, err = merge.plan(b, l, r)
  if not plan then return "plan failed: " .. err end
  local ok, result = pcall(apply, plan, l, r)
  if not ok then return "apply failed: " .. tostring(result) end
  local good, why = merge.check("result", result)
  if not good then return "result is not a tree: " .. why end

  local conflict_of = {}
  for _, c in ipairs(plan.conflicts) do
    if conflict_of[c.path] then return "conflict reported twice: " .. c.path end
    conflict_of[c.path] = c
    local saved = result[c.remote_copy]
    if not saved or (r[c.path].kind == "dir" and saved.kind ~= "dir")
      or (r[c.path].kind ~= "dir" and not merge.same(saved, r[c.path])) then
      return "remote version of " .. c.path .. " is not at " .. c.remote_copy
    end
  end
  local function changed_nearby(p)
    for q in pairs(l) do
      if (p:sub(1, #q + 1) == q .. "/" or q:sub(1, #p + 1) == p .. "/") and not merge.same(b[q], l[q]) then
        return true
      end
    end
    for q in pairs(b) do
      if p:sub(1, #q + 1) == q .. "/" and not merge.same(b[q], l[q]) then return true end
    end
    return false
  end

  local all = {}
  for _, t in ipairs { b, l, r } do for p in pairs(t) do all[p] = true end end
  for _, p in ipairs(sorted_keys(all)) do
    local lc, rc = not merge.same(b[p], l[p]), not merge.same(b[p], r[p])
    if lc and not merge.same(result[p], l[p]) then return "(1) local edit lost at " .. p end
    if not lc and not rc and not merge.same(result[p], l[p]) then return "untouched path changed: " .. p end
    local both_dirs = l[p] and r[p] and l[p].kind == "dir" and r[p].kind == "dir"
    if lc and rc and r[p] and not merge.same(l[p], r[p]) and not both_dirs then
      if not conflict_of[p] then return "(2) conflict not reported: " .. p end
      stats.conflicts = stats.conflicts + 1
      if not l[p] then stats.local_deleted = stats.local_deleted + 1 end
    end
    if rc and not lc then
      if merge.same(result[p], r[p]) then
        stats.taken = stats.taken + 1
        if b[p] and r[p] and b[p].kind ~= r[p].kind then stats.type_changes = stats.type_changes + 1 end
      elseif r[p] then
        if not conflict_of[p] then return "(3) remote change neither applied nor saved: " .. p end
        if not changed_nearby(p) then return "(3) remote change set aside without a local reason: " .. p end
        stats.relocated = stats.relocated + 1
      elseif not (result[p] and result[p].kind == "dir" and has_descendant(result, p)) then
        return "(3) remote deletion not applied: " .. p
      end
    end
  end

  local again = merge.plan(b, result, r)
  if #again.actions > 0 then return "(4) second plan not empty: " .. table.concat(ops(again), "; ") end
  if #again.conflicts ~= #plan.conflicts then return "(4) second plan reports other conflicts" end
  for i, c in ipairs(again.conflicts) do
    if c.path ~= plan.conflicts[i].path or c.remote_copy ~= plan.conflicts[i].remote_copy then
      return "(4) second plan moved the copy of " .. c.path
    end
  end
  if table.concat(ops(merge.plan(b, l, r)), "\n") ~= table.concat(ops(plan), "\n") then
    return "the plan is not deterministic"
  end
  return nil
end

describe("merge.plan on random trees", function()
  it("never loses a local edit, reports every conflict, applies remote-only changes, converges", function()
    local base_seed = tonumber(os.getenv("FERRY_MERGE_SEED") or "") or 20261126
    local cases = tonumber(os.getenv("FERRY_MERGE_CASES") or "") or 5000
    local stats = { conflicts = 0, local_deleted = 0, taken = 0, relocated = 0, type_changes = 0 }
    for i = 1, cases do
      local seed = base_seed + i
      math.randomseed(seed)
      local b = {}
      grow(b, "", 1)
      local l, r = mutate(b), mutate(b)
      if math.random() < 0.1 then -- sometimes both sides make the same edit
        for p, e in pairs(r) do if math.random() < 0.5 and l[parent_of(p)] then l[p] = copy(e) end end
        if merge.check("l", l) ~= true then l = mutate(b) end
      end
      local problem = check_case(b, l, r, stats)
      if problem then
        error(string.format("seed %d (FERRY_MERGE_SEED=%d case %d): %s\n%s\n%s\n%s", seed, base_seed, i, problem,
          dump("baseline", b), dump("local", l), dump("remote", r)), 0)
      end
    end
    if os.getenv("FERRY_MERGE_STATS") then print(require("cjson").encode(stats)) end
    -- the generator must keep reaching the interesting cases
    for what, count in pairs(stats) do
      assert(count >= 20, what .. " reached only " .. count .. " times")
    end
  end)
end)
