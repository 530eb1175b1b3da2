--- Fuzz target: what restore does with the bytes a hostile sandbox sends, up to the write: core.tar_scan_tree
-- (C, libarchive) on the archive with ferry.guard's options, ferry.guard.check on its tree, and, when the guard
-- refuses nothing, core.tar_extract of every entry into a workspace. Contract:
--   tar_scan_tree: a tree and info or nil, "bad archive: ..." EINVAL / "archive exceeds ..." EFBIG; never an
--     error;
--   guard.check: never an error; an accepted entry is a safe relative path (no '/', '..', '.' or empty
--     component), a file, dir or symlink, below no symlink or non-dir (in the archive or on disk), its
--     symlink target inside the workspace; the tree has no entry whose parent is not a dir of it;
--   tar_extract: count or nil, message, code; never an error; and afterwards nothing exists outside the
--     workspace that was not there before, and every symlink in it (but the one the workspace had) resolves,
--     as far as it exists, inside it.
-- The workspace on disk starts as d/x (a file), ln -> d (inside) and esc -> ../outside (the user's own link
-- pointing out), beside an empty dir `outside`.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/")
local common = dofile(DIR .. "/common.lua")
local core = require "ferry.core"
local excludes = require "ferry.excludes"
local guard = require "ferry.guard"

local MAX_BYTES = 1024 * 1024
local MAX_HOPS = 40

local scratch, remove = common.scratch()
local archive, ws, outside = scratch .. "/in.tar", scratch .. "/ws", scratch .. "/outside"
local matcher = guard.ignore_matcher(excludes.DEFAULT, { ".ferry-runtime" })

local function reset_workspace()
  assert(core.fs_remove_tree(ws))
  assert(core.fs_safe_mkdir(scratch, "ws", 493))
  assert(core.fs_safe_mkdir(ws, "d", 493))
  assert(core.fs_safe_write(ws, "d/x", "x\n"))
  assert(core.fs_safe_symlink(ws, "ln", "d"))
  assert(core.fs_safe_symlink(ws, "esc", "../outside"))
end

reset_workspace()
assert(core.fs_safe_mkdir(scratch, "outside", 493))

local function write_archive(data)
  local f = assert(io.open(archive, "wb"))
  f:write(data)
  f:close()
end

local function check_entries(tree)
  for rel, kind, mode, size, sha256 in tree:iter(nil, "kind mode size sha256") do
    if kind ~= "file" and kind ~= "dir" and kind ~= "symlink" then common.fail("%q: kind %s", rel, kind) end
    if mode < 0 or mode > 4095 then common.fail("%q: bad mode", rel) end
    if size < 0 then common.fail("%q: bad size %s", rel, tostring(size)) end
    if kind == "file" and not (type(sha256) == "string" and sha256:match("^%x+$") and #sha256 == 64) then
      common.fail("%q: a file without its sha256", rel)
    end
  end
end

-- Where a symlink at `rel` with `target` leads, component by component on disk: "outside" when it leaves
-- the workspace, else "inside" (a missing component ends the walk: what is not there cannot lead out).
local function resolve(stack, target, hops)
  if hops > MAX_HOPS then return "inside" end -- a loop never arrives anywhere
  if target:sub(1, 1) == "/" then
    if target ~= ws and target:sub(1, #ws + 1) ~= ws .. "/" then return "outside" end
    stack, target = {}, target:sub(#ws + 2)
  end
  local comps = {}
  for c in target:gmatch("[^/]+") do comps[#comps + 1] = c end
  for i, c in ipairs(comps) do
    if c == ".." then
      if #stack == 0 then return "outside" end
      stack[#stack] = nil
    elseif c ~= "." then
      stack[#stack + 1] = c
      local here = table.concat(stack, "/")
      local st = core.fs_lstat(ws .. "/" .. here)
      if not st then
        -- the rest only climbs lexically from here
        local depth = #stack
        for j = i + 1, #comps do
          if comps[j] == ".." then depth = depth - 1 elseif comps[j] ~= "." then depth = depth + 1 end
          if depth < 0 then return "outside" end
        end
        return "inside"
      end
      if st.kind == "symlink" then
        stack[#stack] = nil
        local rest = table.concat(comps, "/", i + 1)
        local link = assert(core.fs_readlink(ws .. "/" .. here))
        local where = resolve(table.move(stack, 1, #stack, 1, {}), link .. (rest ~= "" and "/" .. rest or ""),
          hops + 1)
        return where
      end
    end
  end
  return "inside"
end

local function walk(rel, visit)
  local names = core.fs_readdir(rel == "" and ws or ws .. "/" .. rel) or {}
  for _, name in ipairs(names) do
    local child = rel == "" and name or rel .. "/" .. name
    local st = core.fs_lstat(ws .. "/" .. child)
    if st then
      visit(child, st)
      if st.kind == "dir" then walk(child, visit) end
    end
  end
end

local function check_disk()
  local top = assert(core.fs_readdir(scratch))
  table.sort(top)
  if table.concat(top, ",") ~= "in.tar,outside,ws" then common.fail("written beside the workspace: %s",
      table.concat(top, ",")) end
  if #assert(core.fs_readdir(outside)) > 0 then common.fail("written outside the workspace") end
  walk("", function(rel, st)
    if st.kind == "symlink" and rel ~= "esc" then
      local target = assert(core.fs_readlink(ws .. "/" .. rel))
      local parent = {}
      for c in rel:gmatch("[^/]+") do parent[#parent + 1] = c end
      parent[#parent] = nil
      if resolve(parent, target, 0) == "outside" then common.fail("symlink %q -> %q leads out", rel, target) end
    end
  end)
end

local function check_accepted(tree)
  for rel, kind in tree:iter(nil, "kind") do
    if not common.safe_rel(rel) then common.fail("accepted unsafe path %q", rel) end
    if not (kind == "file" or kind == "dir" or kind == "symlink") then common.fail("accepted a %s: %q", kind, rel) end
    local parent = rel:match("^(.*)/[^/]*$")
    while parent do
      local p = tree:get(parent)
      if not p or p.kind ~= "dir" or p.implied then
        common.fail("accepted %q below %q, no dir of the archive", rel, parent)
      end
      local st = core.fs_lstat(ws .. "/" .. parent)
      if st and st.kind == "symlink" then common.fail("accepted %q below the disk symlink %q", rel, parent) end
      parent = parent:match("^(.*)/[^/]*$")
    end
  end
  if tree:orphan() then common.fail("the guard accepted what is not a tree: %q", tree:orphan()) end
end

local function extract(tree)
  local plan = {}
  for rel, mode, sha256, name in tree:iter(nil, "mode sha256 name") do
    plan[name or rel] = { dest = rel, mode = mode & 511, sha256 = sha256 }
  end
  local ok, count, err, code = pcall(core.tar_extract, archive, ws, plan, { max_bytes = MAX_BYTES })
  if not ok then common.fail("tar_extract raised: %s", tostring(count)) end
  if count == nil and (type(err) ~= "string" or type(code) ~= "string") then
    common.fail("tar_extract failed without a message and code")
  end
  check_disk()
  reset_workspace()
end

local function check(data)
  write_archive(data)
  local opts = guard.scan_options(ws, matcher, MAX_BYTES)
  opts.max_entries = 4096
  local ok, tree, info, code = pcall(core.tar_scan_tree, archive, opts)
  if not ok then common.fail("tar_scan_tree raised: %s", tostring(tree)) end
  if not tree then
    local bad = code == "EINVAL" and info:find("^bad archive: ")
    if not (bad or (code == "EFBIG" and info:find("^archive exceeds "))) then
      common.fail("tar_scan_tree failed with %q, %q", tostring(info), tostring(code))
    end
    return
  end
  check_entries(tree)
  local cok, checked = pcall(guard.check, tree, info, { workspace = ws })
  if not cok then common.fail("guard.check raised: %s", tostring(checked)) end
  if #checked.refused > 0 then
    for _, r in ipairs(checked.refused) do
      if type(r.name) ~= "string" or type(r.reason) ~= "string" then common.fail("a refusal without its reason") end
    end
    return
  end
  check_accepted(tree)
  extract(tree)
end

return { check = check, close = remove }
