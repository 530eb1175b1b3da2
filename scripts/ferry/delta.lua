--- ferry.delta: the planning of a delta sync on trees (core.tree_*), pure (no sandbox, no file system):
-- whether an earlier prepare's state can be the base of one, what the sandbox holds now given the listing,
-- what a full sync would change there, and whether the sandbox's listing after the sync shows the local tree.
--
-- After every sync the sync command leaves a marker holding the sync's id in the runtime dir and lists the
-- tree when the sandbox's find can -printf (GNU find); the state keeps that listing as the remote tree (each
-- entry's kind, mode, size, mtime, inode, device) and the marker's id. The next prepare with the same
-- provider, remote dir, excludes and preserved names lists again in one command, started before the local
-- walk: while the marker still holds the id, only what changed after it (ferry.remote), else everything,
-- with the SHA-256 of the files that changed. M.current gives the sandbox's tree from the recorded one and
-- that listing; M.plan compares only the paths where the sandbox changed since the marker or the local tree
-- since the baseline: a file the sandbox did not touch holds what the baseline says (it held it at the
-- marker), one it changed is judged by its SHA-256 (resent when it has none). Then one command deletes what
-- should go and extracts one tar stream of the entries M.plan flagged.
local core = require "ferry.core"
local util = require "ferry.util"

local M = {}

--- The flag of the local tree's entries a delta sends (core.tar_writer's `flagged`).
M.SEND = 1

local function same_list(a, b)
  if type(a) ~= "table" or #a ~= #b then return false end
  for i = 1, #b do
    if a[i] ~= b[i] then return false end
  end
  return true
end

--- The state `st` of an earlier prepare (ferry.state.read's) when a delta can start from it: same provider
--- string, remote dir, excludes and preserved names as `want`, and a recorded listing; else nil and why not.
---@param st table
---@param want table  provider, remote_dir, excludes, preserve
---@return table|nil st, string|nil why
function M.usable_base(st, want)
  if st.provider ~= want.provider then return nil, "the state is of provider " .. st.provider end
  if st.remote_dir ~= want.remote_dir then return nil, "the state is of remote dir " .. st.remote_dir end
  if not same_list(st.excludes, want.excludes) then return nil, "the excludes changed" end
  if not same_list(st.preserve, want.preserve) then return nil, "the preserved names changed" end
  if st.version == 1 then return nil, "the state was written by an older ferry" end
  if not (st.trees.remote and st.sync) then return nil, "the earlier sync did not list the sandbox (no GNU find)" end
  return st
end

local function tree_fields(kind, mode, size, mtime_ns, ino, dev, sha256, target)
  return { kind = kind, mode = mode, size = size, mtime_ns = mtime_ns, ino = ino, dev = dev, sha256 = sha256,
    target = target }
end

local LISTED = "kind mode size mtime_ns ino dev sha256 target flags"

-- Is the listed entry the one recorded at its path (same kind, inode and device)?
local function same_entry(recorded, kind, ino, dev)
  return recorded ~= nil and recorded.kind == kind and recorded.ino == ino and recorded.dev == dev
end

--- The sandbox's tree now, from the tree recorded at the marker and a listing (core.tree_parse_listing's
--- tree and info). A full listing is the tree. An incremental one lists what changed after the marker and
--- every entry of each directory that did: the entries of such a directory that the recorded tree has and
--- the listing lacks are gone, and the rest of the tree is as recorded. A directory listed unchanged but
--- not the one recorded at its path (another inode: moved there) holds what the listing cannot say: it is
--- returned among `unknown`, its subtree left out.
---@param recorded table  the remote tree of the state
---@param listed table
---@param info table  {incremental, root_changed}
---@return table tree, string[] unknown
function M.current(recorded, listed, info)
  if not info.incremental then return listed, {} end
  if listed:count() == 0 and not info.root_changed then return recorded, {} end
  local now, unknown = recorded:copy(), {}
  local complete = info.root_changed and { "" } or {}
  for rel, flags in listed:iter(nil, "flags", "dir") do
    if flags & 1 == 1 then complete[#complete + 1] = rel end
  end
  for _, dir in ipairs(complete) do
    for _, rel in ipairs(recorded:children(dir)) do
      if not listed:get(rel) then now:prune(rel) end
    end
  end
  local below -- the unknown directory whose subtree the iteration is in
  local adds = {}
  for rel, kind, mode, size, mtime_ns, ino, dev, sha256, target, flags in listed:iter(nil, LISTED) do
    if below and rel:sub(1, #below + 1) == below .. "/" then
      now:prune(rel)
    else
      below = nil
      local was = recorded:get(rel)
      if kind == "dir" and flags & 1 == 0 and not same_entry(was, kind, ino, dev) then
        below = rel
        unknown[#unknown + 1] = rel
        now:prune(rel)
      elseif was and was.kind == "dir" and kind ~= "dir" then
        now:prune(rel) -- a directory replaced: nothing of it is left
      end
      adds[#adds + 1] = { rel, tree_fields(kind, mode, size, mtime_ns, ino, dev, sha256, target) }
    end
  end
  for _, a in ipairs(adds) do now:add(a[1], a[2]) end -- after the prunes: an add out of order re-sorts once
  return now, unknown
end

local function paths_of(...)
  local seen, out = {}, {}
  for i = 1, select("#", ...) do
    for _, rel in ipairs((select(i, ...))) do
      if not seen[rel] then
        seen[rel] = true
        out[#out + 1] = rel
      end
    end
  end
  return out
end

-- The content the sandbox holds at rel (a file): the digest it listed, else the baseline's when the file is
-- the one ferry left there (not changed after the marker, same lstat as recorded), else nil (unknown).
local function remote_content(now, rec, base, changed)
  if now.sha256 then return now.sha256 end
  if changed or not rec or rec.kind ~= "file" then return nil end
  if rec.size ~= now.size or rec.mtime_ns ~= now.mtime_ns or rec.ino ~= now.ino or rec.dev ~= now.dev
      or rec.mode ~= now.mode then
    return nil
  end
  return base and base.kind == "file" and base.sha256 or nil
end

-- Does the sandbox's entry `now` hold what the local entry `l` has? rec: the recorded remote entry, base:
-- the baseline's, changed: listed as changed after the marker.
local function up_to_date(l, now, rec, base, changed)
  if now.kind ~= l.kind then return false end
  if l.kind == "symlink" then return now.target == l.target end
  -- the mode ferry gave it is still there (the sandbox's umask may have changed what it got), and the
  -- local mode is still the one it was given
  local mode_kept = rec ~= nil and rec.kind == now.kind and rec.mode == now.mode and base ~= nil
    and base.kind == l.kind and (base.mode & 511) == (l.mode & 511)
  if not mode_kept or l.kind == "dir" then return mode_kept end
  local sum = remote_content(now, rec, base, changed)
  return sum ~= nil and sum == l.sha256
end

--- The delta from the sandbox's tree to the local one. Flags (M.SEND) the entries of `loc` to send, their
--- parent dirs included.
---@param t table  {loc (the local tree, every file hashed), base (the baseline), recorded (the remote tree
---                at the marker), now (M.current's), unknown (M.current's), listed (the listing)}; when the
---                sandbox did not change since the marker it holds the baseline: recorded and now may then
---                both be the baseline itself
---@return table  {delete = paths to delete in path order, topmost only; changed = the local entries the
---               sandbox does not hold; files = the files among them; bytes = their content (for progress)}
function M.plan(t)
  local loc, base, rec, now = t.loc, t.base, t.recorded, t.now
  local local_paths = (core.tree_diff(base, loc, { mode_mask = 511 }))
  local remote_paths = {}
  if now ~= rec then remote_paths = (core.tree_diff(rec, now, { compare = "stat" })) end
  local changed_paths, changed = {}, {}
  for rel, flags in t.listed:iter(nil, "flags") do
    if flags & 1 == 1 then
      changed_paths[#changed_paths + 1] = rel
      changed[rel] = true
    end
  end
  local doomed, wanted, counted, out = {}, {}, {}, { delete = {}, changed = 0, bytes = 0, files = {} }
  local function send(rel, l)
    counted[rel] = true
    out.changed, out.bytes = out.changed + 1, out.bytes + (l.size or 0)
    if l.kind == "file" then out.files[#out.files + 1] = rel end
    local p = rel
    while p and not wanted[p] do
      wanted[p] = true
      loc:set_flags(p, M.SEND)
      p = util.parent_of(p)
    end
  end
  for _, rel in ipairs(paths_of(local_paths, remote_paths, changed_paths)) do
    local l, r = loc:get(rel), now:get(rel)
    if not l then
      if r then doomed[rel] = true end
    elseif not r then
      send(rel, l)
    elseif not up_to_date(l, r, rec:get(rel), base:get(rel), changed[rel]) then
      if r.kind ~= l.kind or l.kind == "symlink" then doomed[rel] = true end
      send(rel, l)
    end
  end
  for _, dir in ipairs(t.unknown) do -- deleted and sent again whole
    doomed[dir] = true
    for rel, kind, size in loc:iter(dir, "kind size") do
      if rel ~= dir and rel:sub(1, #dir + 1) ~= dir .. "/" then break end
      if not counted[rel] then send(rel, { kind = kind, size = size }) end
    end
  end
  local tops = {}
  for rel in pairs(doomed) do tops[#tops + 1] = rel end
  table.sort(tops, core.tree_path_less)
  for _, rel in ipairs(tops) do
    local last = out.delete[#out.delete]
    if not (last and rel:sub(1, #last + 1) == last .. "/") then out.delete[#out.delete + 1] = rel end
  end
  return out
end

--- The first path where the sandbox's tree after a sync and the local tree disagree (kind, a file's size, a
--- link's target, or a path on one side only), or nil when they agree.
---@param after table  the sandbox's tree
---@param loc table  the local tree
---@return string|nil
function M.disagreement(after, loc)
  local paths = core.tree_diff(after, loc, { compare = "size", mode_mask = 0 })
  return paths[1]
end

return M
