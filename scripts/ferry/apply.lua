--- ferry.apply: restore's writes into the local workspace: a merge plan's actions in order (ferry.merge),
-- each checked against the local snapshot right before it lands. A removal removes only what still has its
-- snapshot's quick key (core.fs_safe_remove's expect); a write of a file or symlink is renamed into place
-- only when what is there still has its key, or is still absent, checked on the parent directory's fd right
-- before the rename, with its content hash too when the snapshot could not trust the mtime
-- (core.tar_extract's expect). A path the host changed meanwhile keeps the host's version: a removal is
-- dropped (the host's edit wins over the sandbox's deletion), and a write goes to a free PATH.ferry-remote
-- copy instead, reported as a conflict, with whatever the plan put below that path.
local core = require "ferry.core"
local merge = require "ferry.merge"
local snapshot = require "ferry.snapshot"

local M = {}

M.REASON = "changed on the host during the restore"

local MAX_COPY_NAMES = 1000

local function under(path, root)
  return path == root or (path:sub(1, #root + 1) == root .. "/")
end

-- Where a planned path goes now: below its copy when it, or a directory above it, was relocated.
local function destination(job, path)
  if next(job.relocated) == nil then return path, false end
  for root, copy in pairs(job.relocated) do
    if under(path, root) then return copy .. path:sub(#root + 1), true, root end
  end
  return path, false
end

-- Send the planned path `path` (and what the plan puts below it) to a free copy name, or to the next one
-- when the host took the copy too; returns the copy.
local function relocate(job, path, kind)
  for n = 1, MAX_COPY_NAMES do
    local name = merge.copy_name(path, merge.SUFFIX, n)
    if not job.planned[name] and not job.taken[name] and not core.fs_safe_lstat(job.ws, name) then
      job.taken[name] = true
      job.relocated[path] = name
      local at = job.moved_index[path]
      if at then
        job.moved[at].remote_copy = name
      else
        job.moved[#job.moved + 1] = { path = path, remote_copy = name, kind = kind, reason = M.REASON }
        job.moved_index[path] = #job.moved
      end
      return name
    end
  end
  error("restore: no free name for the remote copy of " .. path, 0)
end

-- What a write at `path` expects to find there: "" (nothing) or the snapshot's key, and the sha256 to
-- compare too when the mtime cannot be trusted (modified within the racy window of the snapshot's walk).
local function expectation(job, path, relocated)
  if relocated or job.removed[path] then return "" end
  local st, entry = job.stats[path], job.localsnap[path]
  if not entry or not st then return "" end
  local racy = entry.kind == "file" and st.mtime >= job.taken_at - snapshot.RACY_SECONDS
  return snapshot.expect_key(st), racy and entry.sha256 or nil
end

local function hook(job, path, op)
  if job.before_write then job.before_write(path, op) end
end

local function remove(job, a)
  local path, relocated = destination(job, a.path)
  if relocated then return true end -- below a path the host changed: the host's content is not ours to touch
  hook(job, path, "remove")
  local st = a.op == "remove" and job.stats[path]
  local ok, err, code = core.fs_safe_remove(job.ws, path, st and snapshot.expect_key(st) or nil)
  if ok then
    job.removed[path] = true
    return true
  end
  if code == "ESTALE" or (a.op == "rmdir" and code == "ENOTEMPTY") then
    if job.target[path] ~= nil then
      relocate(job, path, job.target[path].kind)
    elseif code == "ESTALE" then
      job.kept[#job.kept + 1] = path
    else
      job.warnings[#job.warnings + 1] = a.path .. ": kept (holds excluded content)"
    end
    return true
  end
  return nil, "restore: " .. err, code
end

local function mkdir(job, a)
  local path = destination(job, a.path)
  local ok, err, code = core.fs_safe_mkdir(job.ws, path, a.mode)
  if not ok and code == "EEXIST" and path == a.path and job.target[a.path] then -- the host put a file there
    path = relocate(job, a.path, "dir")
    ok, err, code = core.fs_safe_mkdir(job.ws, path, a.mode)
  end
  if not ok then return nil, "restore: " .. err, code end
  return true
end

-- What to relocate when the write of `path` found the host changed: the highest directory the plan made
-- (or kept) above it that is no longer a directory on disk, else the relocated root it already goes below,
-- else the path itself.
local function moved_root(job, path)
  local _, relocated, root = destination(job, path)
  if relocated then return root, "dir" end
  local at = 1
  while true do
    local slash = path:find("/", at, true)
    if not slash then break end
    local dir = path:sub(1, slash - 1)
    local st = core.fs_safe_lstat(job.ws, dir)
    if not st or st.kind ~= "dir" then return dir, "dir" end
    at = slash + 1
  end
  return path, job.target[path] and job.target[path].kind or "file"
end

-- One tar_extract per spool and round (a source written to two places needs two rounds). Returns the writes
-- of the next round: the second uses of a source, and the writes the host moved, now aimed at their copies.
local function write_round(job, writes)
  local by_spool, later = {}, {}
  for _, w in ipairs(writes) do
    local src = job.source[w.from]
    local plan = by_spool[src.spool] or {}
    by_spool[src.spool] = plan
    if plan[src.name] then
      later[#later + 1] = w
    else
      local dest, relocated = destination(job, w.path)
      local expect, expect_sha = expectation(job, w.path, relocated)
      -- the sha256 the guard saw is checked again before each rename
      plan[src.name] = { dest = dest, mode = w.entry.mode or 420, sha256 = w.entry.sha256, expect = expect,
        expect_sha256 = expect_sha, action = w }
    end
  end
  for spool, plan in pairs(by_spool) do
    local count, moved, code = core.tar_extract(spool, job.ws, plan, { max_bytes = job.max_bytes,
      before_commit = job.before_write and function(dest) hook(job, dest, "write") end })
    if not count then return nil, "restore: " .. moved, code end
    local n, by_dest = 0, {}
    for _, p in pairs(plan) do
      n = n + 1
      by_dest[p.dest] = p.action
    end
    if count + #moved ~= n then return nil, string.format("restore: wrote %d of %d entries", count, n), "EIO" end
    for _, dest in ipairs(moved) do
      local w = by_dest[dest]
      local root, kind = moved_root(job, w.path)
      relocate(job, root, kind)
      later[#later + 1] = w
    end
  end
  return later
end

--- Apply `plan` (ferry.merge.plan's) to the workspace. job: ws, plan, source (rel -> {spool, name}: where
--- each remote path's entry is read), localsnap and stats (the local snapshot and its lstat tables),
--- taken_at (when that walk began), target (rel -> the merged entry, nil for absent), max_bytes,
--- before_write(path, op) (called right before each removal and each write lands: a test's window).
--- Returns {moved = {{path, remote_copy, kind, reason}} (writes the host's changes turned into conflicts),
--- kept = {path} (removals the host's changes cancelled), warnings} or nil, message, code.
---@param job table
---@return table|nil applied, string|nil err, string|nil code
function M.run(job)
  job.relocated, job.taken, job.removed = {}, {}, {}
  job.moved, job.moved_index, job.kept, job.warnings, job.planned = {}, {}, {}, {}, {}
  local writes, chmods = {}, {}
  for _, a in ipairs(job.plan.actions) do job.planned[a.path] = true end
  for _, a in ipairs(job.plan.actions) do
    local ok, err, code = true, nil, nil
    if a.op == "remove" or a.op == "rmdir" then
      ok, err, code = remove(job, a)
    elseif a.op == "mkdir" then
      ok, err, code = mkdir(job, a)
    elseif a.op == "write" then
      writes[#writes + 1] = a
    elseif a.op == "chmod" then
      chmods[#chmods + 1] = a
    end
    if not ok then return nil, err, code end
  end
  while #writes > 0 do
    local later, err, code = write_round(job, writes)
    if not later then return nil, err, code end
    writes = later
  end
  for _, a in ipairs(chmods) do
    local ok, err, code = core.fs_safe_chmod(job.ws, (destination(job, a.path)), a.mode)
    if not ok then return nil, "restore: " .. err, code end
  end
  return { moved = job.moved, kept = job.kept, warnings = job.warnings }
end

return M
