--- Fuzz target: what restore does with the bytes a hostile sandbox sends, up to the write: core.tar_scan (C,
-- libarchive) on the archive, ferry.guard.check on its entries, and, when the guard refuses nothing,
-- core.tar_extract of every accepted entry into a workspace. Contract:
--   tar_scan: a list of {name, kind, mode, size, mtime, linkname, sha256} or nil, "bad archive: ..." EINVAL /
--     "archive exceeds ..." EFBIG; never an error;
--   guard.check: never an error; an accepted entry is a safe relative path (no '/', '..', '.' or empty
--     component), a file, dir or symlink, below no symlink or non-dir (in the archive or on disk), its
--     symlink target inside the workspace; guard.snapshot of them is a tree merge.check accepts;
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
local merge = require "ferry.merge"

local MAX_BYTES = 1024 * 1024
local MAX_HOPS = 40

local scratch, remove = common.scratch()
local archive, ws, outside = scratch .. "/in.tar", scratch .. "/ws", scratch .. "/outside"
local matcher = excludes.compile(excludes.DEFAULT)
local skip_top = { [".ferry-runtime"] = true }
local KINDS = { file = true, dir = true, symlink = true, hardlink = true, char = true, block = true, fifo = true,
  socket = true, other = true }

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

local function check_entries(entries)
  for i, e in ipairs(entries) do
    if type(e.name) ~= "string" or not KINDS[e.kind] then common.fail("entry %d: bad name or kind", i) end
    if math.type(e.mode) ~= "integer" or e.mode < 0 or e.mode > 4095 then common.fail("entry %d: bad mode", i) end
    if math.type(e.size) ~= "integer" or e.size < 0 then common.fail("entry %d: bad size %s", i, tostring(e.size)) end
    if e.kind == "file" and not (type(e.sha256) == "string" and e.sha256:match("^%x+$") and #e.sha256 == 64) then
      common.fail("entry %d: a file without its sha256", i)
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

local function check_accepted(checked)
  for _, rel in ipairs(checked.order) do
    local e = checked.entries[rel]
    if not common.safe_rel(rel) then common.fail("accepted unsafe path %q (%q)", rel, e.name) end
    if not (e.kind == "file" or e.kind == "dir" or e.kind == "symlink") then
      common.fail("accepted a %s: %q", e.kind, rel)
    end
    local parent = rel:match("^(.*)/[^/]*$")
    while parent do
      local p = checked.entries[parent]
      if p and p.kind ~= "dir" then common.fail("accepted %q below the %s %q", rel, p.kind, parent) end
      local st = core.fs_lstat(ws .. "/" .. parent)
      if st and st.kind == "symlink" then common.fail("accepted %q below the disk symlink %q", rel, parent) end
      parent = parent:match("^(.*)/[^/]*$")
    end
  end
end

local function extract(checked)
  local plan = {}
  for _, rel in ipairs(checked.order) do
    local e = checked.entries[rel]
    plan[e.name] = { dest = rel, mode = e.mode & 511, sha256 = e.sha256 }
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
  local ok, entries, err, code = pcall(core.tar_scan, archive, { max_bytes = MAX_BYTES, max_entries = 4096 })
  if not ok then common.fail("tar_scan raised: %s", tostring(entries)) end
  if not entries then
    local bad = code == "EINVAL" and err:find("^bad archive: ")
    if not (bad or (code == "EFBIG" and err:find("^archive exceeds "))) then
      common.fail("tar_scan failed with %q, %q", tostring(err), tostring(code))
    end
    return
  end
  check_entries(entries)
  local cok, checked = pcall(guard.check, entries, { workspace = ws, matcher = matcher, skip_top = skip_top,
    baseline = {} })
  if not cok then common.fail("guard.check raised: %s", tostring(checked)) end
  if #checked.refused > 0 then
    for _, r in ipairs(checked.refused) do
      if type(r.name) ~= "string" or type(r.reason) ~= "string" then common.fail("a refusal without its reason") end
    end
    return
  end
  check_accepted(checked)
  local sok, snap = pcall(guard.snapshot, checked)
  if not sok then common.fail("guard.snapshot raised: %s", tostring(snap)) end
  local well_formed, why = merge.check("remote", snap)
  if not well_formed then common.fail("the guard accepted what is not a tree: %s", why) end
  extract(checked)
end

return { check = check, close = remove }
