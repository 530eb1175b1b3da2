--- ferry.adopt: prepare's inbound mode "adopt": a workspace already in the sandbox (a durable volume, an
-- earlier run) becomes the baseline without being uploaded. One command lists the remote tree with the
-- SHA-256 of every file (the delta listing, hashing all files), touches the sync marker (so the next
-- prepare can be a delta from it), and, when the remote dir is a git repository, reports its HEAD and keeps
-- the runtime dir out of `git add -A`. The listing, within ferry's excludes (and, in git mode, without what
-- the host's git ignores), is the baseline restore merges against.
local core = require "ferry.core"
local git = require "ferry.git"
local git_remote = require "ferry.git_remote"
local listing = require "ferry.listing"
local remote = require "ferry.remote"
local util = require "ferry.util"

local M = {}

-- The listing as the baseline tree: within the excludes, every entry's parent kept, files with their hash.
local function baseline_of(listed, matcher, warnings)
  local baseline, dirs = core.tree_new(), {}
  for rel, kind, mode, size, sha256, target in listed:iter(nil, "kind mode size sha256 target") do
    local parent = util.parent_of(rel)
    local is_dir = kind == "dir"
    if (not parent or dirs[parent]) and not matcher(rel, is_dir) then
      if kind == "file" and not sha256 then
        warnings[#warnings + 1] = "adopt: " .. rel .. ": the sandbox could not hash it; left out of the baseline"
      elseif kind ~= "other" then
        baseline:add(rel, { kind = kind, mode = kind ~= "symlink" and mode or nil, size = size, sha256 = sha256,
          target = target })
        if is_dir then dirs[rel] = true end
      end
    end
  end
  return baseline
end

local function counts(tree)
  local info = { files = 0, dirs = 0, symlinks = 0, bytes = 0, hashed = 0 }
  for _, kind, size in tree:iter(nil, "kind size") do
    local counter = kind .. "s" -- files, dirs, symlinks
    info[counter] = info[counter] + 1
    info.bytes = info.bytes + size
  end
  return info
end

-- Leave out what the host's git ignores (and everything below an ignored dir).
local function drop_ignored(tree, top)
  local paths = {}
  for rel, kind in tree:iter(nil, "kind") do paths[#paths + 1] = kind == "dir" and rel .. "/" or rel end
  local ignored, err, code = git.ignored(top, paths)
  if not ignored then return nil, err, code end
  for rel, kind in tree:iter(nil, "kind") do
    if ignored[rel] or ignored[rel .. "/"] then
      if kind == "dir" then tree:prune(rel) else tree:remove(rel) end
    end
  end
  return true
end

local function failure(res, remote_dir)
  if res.code == 3 then
    return nil, "prepare: adopt: " .. remote_dir .. " does not exist in the sandbox; nothing to adopt", "ENOENT"
  end
  if res.code == 4 then
    return nil, "prepare: adopt: the sandbox's find cannot -printf (adopting a workspace needs GNU find)", "ENOTSUP"
  end
  return nil, "prepare: " .. remote.failure("adopting " .. remote_dir, res), "EIO"
end

--- Adopt the remote dir's workspace (the listing's tree becomes the baseline, and the remote tree with the
--- marker's id). job: remote_dir, keep, patterns, base_matcher (ferry's excludes),
--- first_line, progress, keep_out (names for .git/info/exclude), setup_lines (more lines to run first);
--- gj: ferry.git_prepare's plan when the host workspace is the top of a git work tree (else nil). Returns
--- {baseline (a tree), info = {files, dirs, symlinks}, recorded (the listing's tree), sync_id, stderr,
--- warnings, git = ferry.git_remote.adopt_report's (nil without gj)} or nil, message, code.
---@param sb table
---@param job table
---@param gj table|nil
---@return table|nil adopted, string|nil err, string|nil code
function M.run(sb, job, gj)
  job.progress:phase("sync")
  local id = util.unique_hex(16)
  local before = { 'mkdir -p "$ferry_r/' .. remote.RUNTIME_DIR .. '" || exit 1',
    "printf '%s' " .. core.sh_quote(id) .. ' > "$ferry_r/' .. listing.MARK_FILE .. '" || exit 1' }
  if job.setup_lines then before[#before + 1] = job.setup_lines end
  if gj then before[#before + 1] = git_remote.adopt_lines(job.keep_out) end
  local script = (job.first_line and job.first_line .. "\n" or "")
    .. listing.list_script(job.remote_dir, job.keep, job.patterns, { all = true, before = table.concat(before, "\n") })
  local on_chunk, finish = listing.reader(false)
  local res, err, code = sb:pipe_out(script, on_chunk, { what = "adopting " .. job.remote_dir })
  if not res then return nil, "prepare: " .. err, code end
  if res.code ~= 0 or res.timed_out then return failure(res, job.remote_dir) end
  local listed = finish()
  if not listed then return nil, "prepare: adopting " .. job.remote_dir .. ": malformed listing", "EIO" end
  local adopted = { warnings = {}, stderr = res.stderr, recorded = listed, sync_id = id }
  adopted.baseline = baseline_of(listed, job.base_matcher, adopted.warnings)
  if gj then
    adopted.git = git_remote.adopt_report(res.stderr)
    if adopted.git.head and not git.is_oid(adopted.git.head) then adopted.git.head = nil end
    local ok, gerr, gcode = drop_ignored(adopted.baseline, gj.info.top)
    if not ok then return nil, "prepare: " .. gerr, gcode end
  end
  adopted.info = counts(adopted.baseline)
  return adopted
end

--- The state's git table and the result's git field of an adopted workspace, and a warning when its
--- commits cannot come back.
---@param report table  ferry.git_remote.adopt_report's
---@return table state, table result, string|nil warning
function M.git_fields(report)
  if report.status ~= "adopted" then
    local why = report.status == "no-git" and "the sandbox has no git"
      or "the adopted workspace is not a git repository"
    why = why .. ": restore brings back files only"
    return { mode = "files", why = why }, { mode = "files", why = why }, why
  end
  return { mode = "history", adopted = true, head = report.head, ref = report.ref, branch = report.branch,
      staged_paths = {} },
    { mode = "history", pack = "adopted", head = report.head, ref = report.ref, branch = report.branch,
      commits = 0, bytes = 0 }
end

return M
