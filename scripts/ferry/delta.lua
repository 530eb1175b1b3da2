--- ferry.delta: the planning of a delta sync, pure (no sandbox, no file system): whether an earlier
-- prepare's state can be the base of one, what a full sync would change in the sandbox, and whether the
-- sandbox's listing after the sync shows the local tree.
--
-- After every sync the sync command lists the remote tree (kind, mode, size, mtime of each entry) when the
-- sandbox's find can -printf (GNU find), and touches a marker file in the runtime dir; the state keeps what
-- ferry recorded of that listing as `remote_stat` (M.recorded_stats). The next prepare with the same
-- provider, remote dir, excludes and preserved names lists the tree again in one command, hashing only the
-- files modified after the marker, and works out what a full sync would change (M.plan): a file whose size,
-- mtime and mode are as ferry left them holds what ferry sent (the baseline), the quick check rsync uses;
-- any other file is judged by its SHA-256, or resent when it has none. Then one command deletes what should
-- go and extracts one tar stream of what should come.
local util = require "ferry.util"

local M = {}

local function same_list(a, b)
  if type(a) ~= "table" or #a ~= #b then return false end
  for i = 1, #b do
    if a[i] ~= b[i] then return false end
  end
  return true
end

--- The state `st` of an earlier prepare when a delta can start from it: same provider string, remote dir,
--- excludes and preserved names as `want`, and a recorded listing; else nil and why not.
---@param st table  a state record (ferry.state.read)
---@param want table  provider, remote_dir, excludes, preserve
---@return table|nil st, string|nil why
function M.usable_base(st, want)
  if st.provider ~= want.provider then return nil, "the state is of provider " .. st.provider end
  if st.remote_dir ~= want.remote_dir then return nil, "the state is of remote dir " .. st.remote_dir end
  if not same_list(st.excludes, want.excludes) then return nil, "the excludes changed" end
  if not same_list(st.preserve, want.preserve) then return nil, "the preserved names changed" end
  if type(st.remote_stat) ~= "table" then return nil, "the earlier sync did not list the sandbox (no GNU find)" end
  return st
end

-- What ferry records of a remote entry: a file's kind, mode, size and mtime; a dir's kind and mode.
local function stat_key(e)
  if e.kind == "file" then return "f " .. e.mode .. " " .. e.size .. " " .. e.mtime end
  if e.kind == "dir" then return "d " .. e.mode end
  return nil
end

--- What the state keeps of a listing (ferry.remote.parse_listing's): rel -> record, for files and dirs.
---@param entries table
---@return table
function M.recorded_stats(entries)
  local out = {}
  for rel, e in pairs(entries) do out[rel] = stat_key(e) end
  return out
end

-- Does the remote entry hold what the local one has? `rec` is ferry's record of it, `base` the baseline.
local function up_to_date(l, r, rec, base)
  if r.kind ~= l.kind then return false end
  if l.kind == "symlink" then return r.target == l.target end
  local mode_kept = rec ~= nil and rec:match("^%a (%d+)") == r.mode and base ~= nil and base.kind == l.kind
    and base.mode == l.mode
  if not mode_kept or l.kind == "dir" then return mode_kept end
  if rec == stat_key(r) and base.sha256 == l.sha256 then return true end
  return r.sha256 ~= nil and r.sha256 == l.sha256
end

--- The delta from the remote listing to the local snapshot.
---@param remote table  the listing (ferry.remote.parse_listing)
---@param snap table  the local snapshot (with sha256 of every file)
---@param names string[]  the snapshot's paths in walk order
---@param base table  the earlier state: remote_stat (M.recorded_stats) and baseline (the snapshot sent)
---@return table  {send = paths to send, in walk order, with their parent dirs; delete = paths to delete,
---               topmost only, sorted; changed = the number of local entries the sandbox does not hold}
function M.plan(remote, snap, names, base)
  local wanted, changed, doomed = {}, 0, {}
  for rel, l in pairs(snap) do
    local r = remote[rel]
    if not r or not up_to_date(l, r, base.remote_stat[rel], base.baseline[rel]) then
      changed = changed + 1
      if r and (r.kind ~= l.kind or l.kind == "symlink") then doomed[rel] = true end
      local p = rel
      while p and not wanted[p] do
        wanted[p] = true
        p = util.parent_of(p)
      end
    end
  end
  for rel in pairs(remote) do
    if not snap[rel] then doomed[rel] = true end
  end
  local delete = {}
  for rel in pairs(doomed) do
    local p, covered = util.parent_of(rel), false
    while p and not covered do
      covered = doomed[p] or false
      p = util.parent_of(p)
    end
    if not covered then delete[#delete + 1] = rel end
  end
  local send = {}
  for _, rel in ipairs(names) do
    if wanted[rel] then send[#send + 1] = rel end
  end
  return { send = send, delete = util.sorted(delete), changed = changed }
end

--- The first path where the listed remote tree and the snapshot disagree (kind, size, link target, or a
--- path on one side only), or nil when they agree.
---@param listed table  the listing (ferry.remote.parse_listing)
---@param snap table
---@return string|nil
function M.disagreement(listed, snap)
  for rel, r in pairs(listed) do
    local l = snap[rel]
    if not l or l.kind ~= r.kind or (l.kind == "file" and tostring(l.size) ~= r.size)
      or (l.kind == "symlink" and l.target ~= r.target) then
      return rel
    end
  end
  for rel in pairs(snap) do
    if not listed[rel] then return rel end
  end
  return nil
end

return M
