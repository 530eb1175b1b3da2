--- The 3-way merge of restore: what to do with the local workspace given the baseline snapshot taken at
--- prepare time, the local workspace now, and the sandbox's workspace now.
--
-- A snapshot maps a relative path ('/'-separated, no '.', '..' or empty components) to an entry
-- {kind = "file"|"dir"|"symlink", mode = permission bits, size = bytes, sha256 = hex (files), target =
-- link text (symlinks)}. Every path's parent must be a directory of the same snapshot.
--
-- A side "changed" a path when its entry differs from the baseline's: another kind, another sha256 (files),
-- another target (symlinks) or another mode (files and dirs; symlink modes mean nothing). A missing entry
-- differs from a present one. Per path:
--
--   remote changed, local unchanged     take the remote version (write, delete, mkdir, rmdir)
--   local changed, remote unchanged     keep local
--   both changed identically            keep local (it is already the remote version)
--   both changed, to different things   conflict: keep local in place, save the remote version beside it
--                                       as PATH.ferry-remote (or PATH.ferry-remote-2, ... when that name is
--                                       used by something else)
--   remote deleted, local changed       keep local (not a conflict: there is nothing remote to save)
--   local deleted, remote changed       conflict: the user deleted it, the agent edited it. The path stays
--                                       deleted and the remote version is saved as PATH.ferry-remote, so
--                                       neither decision is silently undone
--   both dirs, modes changed apart      keep the local mode
--
-- The tree shape adds two rules. A directory that still holds kept local content stays a directory even
-- when the remote removed it or replaced it with a file (the file is then a conflict, saved beside it).
-- Remote content that cannot land in place because a directory above it is gone or is no longer a
-- directory locally is saved under the copy of the highest such path: if the user replaced dir `d` with a
-- file and the agent added `d/x`, the file stays and `d/x` is saved as `d.ferry-remote/x`, reported as a
-- conflict.
--
-- No action ever removes or overwrites a path whose local entry differs from the baseline, or a path the
-- remote did not change. A copy name is only used when it is absent from the baseline and the remote and
-- each copy written there is missing locally or already identical, so a rerun finds its own copies and
-- plans nothing new.
local util = require "ferry.util"

local M = {}

M.SUFFIX = ".ferry-remote"

local KINDS = { file = true, dir = true, symlink = true }
local MAX_COPY_NAMES = 1000

-- "" for the workspace root
local function parent_of(rel)
  return util.parent_of(rel, "")
end

local function is_dir(entry)
  return entry ~= nil and entry.kind == "dir"
end

local function same(a, b, mask)
  if a == nil or b == nil then return a == b end
  if a.kind ~= b.kind then return false end
  if a.kind == "symlink" then return a.target == b.target end
  if a.kind == "file" and a.sha256 ~= b.sha256 then return false end
  return ((a.mode or 0) & mask) == ((b.mode or 0) & mask)
end

--- True when two entries are the same version (kind, sha256 / target, mode under `mask`, default 07777).
---@return boolean
function M.same(a, b, mask)
  return same(a, b, mask or 4095)
end

local function bad_path(rel)
  if rel == "" or rel:byte(1) == 47 or rel:byte(-1) == 47 or rel:find("//", 1, true) ~= nil
      or rel:find("\0", 1, true) ~= nil then
    return true
  end
  -- a '.' or '..' component starts the path or follows a '/'; most paths have neither (plain finds only)
  if rel:byte(1) ~= 46 and not rel:find("/.", 1, true) then return false end
  return rel == "." or rel == ".." or rel:find("^%.%.?/") ~= nil or rel:find("/%.%.?/") ~= nil
    or rel:find("/%.%.?$") ~= nil
end

local function entry_problem(snapshot, rel, entry)
  if type(rel) ~= "string" then return "path is a " .. type(rel) end
  if bad_path(rel) then return "bad path" end
  if type(entry) ~= "table" or not KINDS[entry.kind] then return "kind must be file, dir or symlink" end
  if entry.kind == "file" and type(entry.sha256) ~= "string" then return "file without sha256" end
  if entry.kind == "symlink" and type(entry.target) ~= "string" then return "symlink without target" end
  if entry.mode ~= nil and math.type(entry.mode) ~= "integer" then return "mode is not an integer" end
  local parent = rel:match("^(.*)/[^/]*$")
  if parent and not is_dir(snapshot[parent]) then
    return "inside " .. string.format("%q", parent) .. ", which is not a directory of the snapshot"
  end
  return nil
end

--- Check that a snapshot is a well-formed tree: nil, message, "EINVAL" naming the first bad entry
--- (in sorted order).
---@param label string  "baseline", "local" or "remote", for the message
---@return true|nil, string|nil, string|nil
function M.check(label, snapshot)
  if type(snapshot) ~= "table" then
    error("merge: " .. label .. " snapshot: expected a table, got " .. type(snapshot), 2)
  end
  local bad = {}
  for rel, entry in pairs(snapshot) do
    if entry_problem(snapshot, rel, entry) then bad[#bad + 1] = rel end
  end
  if #bad == 0 then return true end
  table.sort(bad, function(a, b) return tostring(a) < tostring(b) end)
  local why = entry_problem(snapshot, bad[1], snapshot[bad[1]])
  return nil, string.format("%s: %q: %s", label, tostring(bad[1]), why), "EINVAL"
end

local function sorted_union(...)
  local seen, paths = {}, {}
  for i = 1, select("#", ...) do
    for rel in pairs((select(i, ...))) do
      if not seen[rel] then
        seen[rel] = true
        paths[#paths + 1] = rel
      end
    end
  end
  -- plain byte order puts every directory before everything inside it
  table.sort(paths)
  return paths
end

-- The final entry of each path (nil = absent) and whether it comes from the remote side.
local function decide(paths, B, L, R, mask)
  local decided = {}
  for _, p in ipairs(paths) do decided[p] = true end
  -- a path nobody changed (not among `paths`) ends as it is locally
  local final = setmetatable({}, { __index = function(_, p) if not decided[p] then return L[p] end end })
  local from_remote, local_changed, remote_changed = {}, {}, {}
  for _, p in ipairs(paths) do
    local lc, rc = not same(B[p], L[p], mask), not same(B[p], R[p], mask)
    local_changed[p], remote_changed[p] = lc, rc
    if rc and not lc then
      final[p], from_remote[p] = R[p], true
    else
      final[p] = L[p]
    end
  end
  -- Bottom-up: a directory above kept local content stays the local directory.
  local holds_local = {}
  for i = #paths, 1, -1 do
    local p = paths[i]
    if holds_local[p] and not is_dir(final[p]) then
      final[p], from_remote[p] = L[p], nil
    end
    if holds_local[p] or (final[p] ~= nil and not from_remote[p]) then
      holds_local[parent_of(p)] = true
    end
  end
  -- Top-down: remote content whose parent is not a directory any more cannot land in place.
  for _, p in ipairs(paths) do
    if from_remote[p] and final[p] ~= nil then
      local parent = parent_of(p)
      if parent ~= "" and not is_dir(final[parent]) then
        final[p], from_remote[p] = L[p], nil
      end
    end
  end
  return final, from_remote, local_changed, remote_changed
end

local function conflict_reason(p, L, local_changed)
  if not local_changed[p] then return "a directory above it changed locally" end
  if L[p] == nil then return "deleted locally, changed remotely" end
  return "changed on both sides"
end

-- Where each conflict's remote version goes: grouped by the highest path whose copy holds it.
local function find_conflicts(paths, final, R, L, remote_changed, local_changed, mask)
  local conflicts, by_root, roots = {}, {}, {}
  for _, p in ipairs(paths) do
    local r, f = R[p], final[p]
    if remote_changed[p] and r ~= nil and not same(f, r, mask) and not (is_dir(f) and is_dir(r)) then
      local root = p
      while parent_of(root) ~= "" and not is_dir(final[parent_of(root)]) do root = parent_of(root) end
      local conflict = { path = p, kind = r.kind, reason = conflict_reason(p, L, local_changed), root = root }
      conflicts[#conflicts + 1] = conflict
      if not by_root[root] then
        by_root[root] = {}
        roots[#roots + 1] = root
      end
      table.insert(by_root[root], conflict)
    end
  end
  return conflicts, by_root, roots
end

-- The copy entries of one root under the name `name`: rel -> entry (the conflicts' remote entries and the
-- remote directories between the root and them).
local function copy_items(root, conflicts, name, R)
  local items = {}
  for _, c in ipairs(conflicts) do
    local p = c.path
    items[name .. p:sub(#root + 1)] = R[p]
    local a = parent_of(p)
    while #a >= #root do
      local q = name .. a:sub(#root + 1)
      if items[q] then break end
      items[q] = { kind = "dir", mode = R[a].mode }
      a = parent_of(a)
    end
  end
  return items
end

local function usable_name(name, items, B, R, L, taken, mask)
  if B[name] ~= nil or R[name] ~= nil or taken[name] then return false end
  for q, entry in pairs(items) do
    local existing = L[q]
    if existing ~= nil and not (is_dir(entry) and is_dir(existing)) and not same(existing, entry, mask) then
      return false
    end
  end
  return true
end

local MAX_NAME = 255 -- bytes of a path component (NAME_MAX)

--- The n-th copy name of `root` (1: root .. suffix, then root .. suffix .. "-n"), its last component cut
--- (at a UTF-8 character boundary) so that it stays within 255 bytes.
---@param root string
---@param suffix string
---@param n integer
---@return string
function M.copy_name(root, suffix, n)
  local tail = suffix .. (n == 1 and "" or "-" .. n)
  local dir, leaf = root:match("^(.*/)([^/]*)$")
  dir, leaf = dir or "", leaf or root
  local room = MAX_NAME - #tail
  if #leaf > room then
    local cut = room
    while cut > 0 and (leaf:byte(cut + 1) or 0) & 0xC0 == 0x80 do cut = cut - 1 end
    leaf = leaf:sub(1, cut)
  end
  return dir .. leaf .. tail
end

local function place_copies(by_root, roots, B, R, L, suffix, mask)
  local copies, taken = {}, {}
  for _, root in ipairs(roots) do
    local chosen
    for n = 1, MAX_COPY_NAMES do
      local name = M.copy_name(root, suffix, n)
      local items = copy_items(root, by_root[root], name, R)
      if usable_name(name, items, B, R, L, taken, mask) then
        chosen = name
        for q, entry in pairs(items) do
          -- a directory already there (our copy from a previous run, or the user's) keeps its mode
          copies[q] = (is_dir(entry) and is_dir(L[q])) and L[q] or entry
        end
        break
      end
    end
    if not chosen then error("merge: no free name for the remote copy of " .. root, 0) end
    taken[chosen] = true
    for _, c in ipairs(by_root[root]) do c.remote_copy = chosen .. c.path:sub(#root + 1) end
  end
  return copies
end

local function mkdir_op(rel, mode, deferred)
  mode = mode or 493 -- 0755
  if mode & 448 ~= 448 then
    -- a directory we cannot write into is created writable; its mode is set after its contents
    deferred[#deferred + 1] = { op = "chmod", path = rel, mode = mode }
    mode = mode | 448
  end
  return { op = "mkdir", path = rel, mode = mode }
end

local function build_actions(all_paths, L, target, source_of, mask)
  local removals, creations, deferred = {}, {}, {}
  for i = #all_paths, 1, -1 do
    local p = all_paths[i]
    local l, t = L[p], target[p]
    if l ~= nil and (t == nil or is_dir(l) ~= is_dir(t)) then
      removals[#removals + 1] = { op = is_dir(l) and "rmdir" or "remove", path = p, kind = l.kind }
    end
  end
  for _, p in ipairs(all_paths) do
    local l, t = L[p], target[p]
    if t ~= nil and not same(l, t, mask) then
      if is_dir(t) then
        if not (is_dir(l) and ((l.mode or 0) & mask) == ((t.mode or 0) & mask)) then
          creations[#creations + 1] = mkdir_op(p, t.mode, deferred)
        end
      else
        creations[#creations + 1] = { op = "write", path = p, from = source_of[p], entry = t }
      end
    end
  end
  local actions = removals
  for _, a in ipairs(creations) do actions[#actions + 1] = a end
  for i = #deferred, 1, -1 do actions[#actions + 1] = deferred[i] end
  return actions
end

local function summarise(plan, paths, from_remote, local_changed, conflicted)
  local lists = { write = plan.take, remove = plan.delete, mkdir = plan.mkdirs, rmdir = plan.rmdirs }
  for _, a in ipairs(plan.actions) do
    if a.op ~= "write" or a.from == a.path then
      local list = lists[a.op]
      if list then list[#list + 1] = a.path end
    end
  end
  table.sort(plan.take)
  table.sort(plan.mkdirs)
  for _, p in ipairs(paths) do
    if local_changed[p] and not from_remote[p] and not conflicted[p] then plan.keep[#plan.keep + 1] = p end
  end
  for _, c in ipairs(plan.conflicts) do plan.conflict_paths[#plan.conflict_paths + 1] = c.path end
  plan.changed = #plan.actions > 0
  return plan
end

--- Plan the merge of `remote` into `localsnap` against `baseline` (see the rules at the top).
--- opts.suffix: the copy suffix (default ".ferry-remote"); opts.mode_mask: mode bits compared (07777);
--- opts.paths: the only paths to look at, parents before their contents (where some side differs from the
--- baseline: core.tree_diff's), the snapshots then being lookups of well-formed trees (ferry.snapshot.view),
--- never iterated nor checked.
--- Returns a plan, or nil, "<side>: <path>: <what is wrong>", "EINVAL" for a malformed snapshot:
---   actions    ordered steps; applying them in order is the merge:
---              {op="remove", path, kind} unlink a file or symlink; {op="rmdir", path} an empty dir
---              (all removals come first, deepest first); {op="mkdir", path, mode} create the dir if
---              missing, then set mode; {op="write", path, from, entry} write the remote entry `from`
---              (file content or symlink target, entry.mode) at `path`, replacing what is there;
---              {op="chmod", path, mode} (last: final modes of dirs created writable to fill them)
---   take       in-place writes (rel list); delete: files/symlinks removed; mkdirs; rmdirs
---   conflicts  list of {path, remote_copy, kind, reason}: the remote version of `path` is written at
---              `remote_copy`; conflict_paths: the same paths as a plain list
---   keep       paths changed locally that keep their local version (not conflicts)
---   changed    true when there is any action
---   target     rel -> the entry each path ends with (conflict copies included), nil for absent
---@return table|nil, string|nil, string|nil
function M.plan(baseline, localsnap, remote, opts)
  opts = opts or {}
  local mask = opts.mode_mask or 4095
  local suffix = opts.suffix or M.SUFFIX
  local B, L, R = baseline, localsnap, remote
  local paths = opts.paths
  if not paths then
    local sides = { { "baseline", baseline }, { "local", localsnap }, { "remote", remote } }
    for _, side in ipairs(sides) do
      local ok, err, code = M.check(side[1], side[2])
      if not ok then return nil, err, code end
    end
    paths = sorted_union(B, L, R)
  end
  local final, from_remote, local_changed, remote_changed = decide(paths, B, L, R, mask)
  local conflicts, by_root, roots = find_conflicts(paths, final, R, L, remote_changed, local_changed, mask)
  local copies = place_copies(by_root, roots, B, R, L, suffix, mask)

  local target, source_of = {}, {}
  for _, p in ipairs(paths) do
    target[p] = final[p]
    if from_remote[p] then source_of[p] = p end
  end
  local conflicted = {}
  for _, c in ipairs(conflicts) do
    conflicted[c.path] = true
    source_of[c.remote_copy] = c.path
    c.root = nil
  end
  local all_paths = paths
  if next(copies) then
    for q, entry in pairs(copies) do target[q] = entry end
    -- (looked up, L is not iterated: the paths given and the copies are every path an action can touch)
    local given = {}
    for _, p in ipairs(opts.paths or {}) do given[p] = true end
    all_paths = opts.paths and sorted_union(given, copies) or sorted_union(target, L)
  end

  local plan = {
    target = target,
    actions = build_actions(all_paths, L, target, source_of, mask),
    take = {}, delete = {}, mkdirs = {}, rmdirs = {}, keep = {},
    conflicts = conflicts, conflict_paths = {},
  }
  return summarise(plan, paths, from_remote, local_changed, conflicted)
end

return M
