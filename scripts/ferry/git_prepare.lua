--- ferry.git_prepare: the git side of prepare (README "Git-aware sync"). When the workspace is the top level
-- of a git work tree and the host has git, prepare is in git mode: `.git` never travels as files (it is
-- excluded, and kept in the sandbox as a preserved name), the walk sends what git shows (tracked files plus
-- untracked files that are not ignored, within ferry's excludes), and the history goes as a shallow bundle
-- (ferry.git_pack) in the sync command's own tar stream, built into a repository by the inbound lines
-- (ferry.git_remote) run in that same command: no extra command. A delta re-sync sends only the commits the
-- sandbox lacks. Without history to send (unmerged paths, HEAD not on a branch, no git in the sandbox) the
-- tree still goes as git shows it ("files" mode). A workspace below the top level is sent as plain files.
-- The state keeps a small `git` table: {mode = "history"|"files", head, ref, branch, staged_paths, depth,
-- why}.
local core = require "ferry.core"
local excludes = require "ferry.excludes"
local git = require "ferry.git"
local git_pack = require "ferry.git_pack"
local git_remote = require "ferry.git_remote"

local M = {}

local NO_GIT_HINT = " (git = false / --no-git sends the workspace as plain files)"

--- The git_depth option: an integer >= 0, default ferry.git.DEFAULT_DEPTH; or nil, message, "EINVAL".
---@param depth any
---@return integer|nil depth, string|nil err, string|nil code
function M.depth(depth)
  if depth == nil then return git.DEFAULT_DEPTH end
  if math.type(depth) ~= "integer" or depth < 0 then
    return nil, "prepare: git_depth must be an integer >= 0 (0 for the whole history), got " .. tostring(depth),
      "EINVAL"
  end
  return depth
end

local function add_all(list, more)
  for _, v in ipairs(more or {}) do list[#list + 1] = v end
end

--- Decide the git mode of a prepare and adjust the job: job.patterns gets ferry.git.EXCLUDES and job.keep
--- ".git" (history mode), job.walk(base) gives the walk's matcher. Returns the git job {mode = "plain" |
--- "files" | "history", info, files, why, warnings} or nil when git plays no part (not a work tree, opts.git
--- false); nil, message, code when git fails on the host in an unexpected way.
---@param opts table  prepare's options (git, git_depth)
---@param job table  ws, patterns, keep
---@return table|nil gj, string|nil err, string|nil code
function M.plan(opts, job)
  if opts.git == false then return nil end
  local depth, derr, dcode = M.depth(opts.git_depth)
  if not depth then return nil, derr, dcode end
  local info, err, code = git.detect(job.ws)
  if info == nil then
    if code ~= "ENOENT" then return nil, "prepare: " .. err .. NO_GIT_HINT, code end
    if core.fs_lstat(job.ws .. "/.git") then
      return { mode = "plain", warnings = { "git is not installed on the host: " .. job.ws
        .. "/.git is sent as plain files" } }
    end
    return nil
  end
  if not info then return nil end
  if info.prefix ~= "" then
    return { mode = "plain", why = "the workspace is a subdirectory of the git work tree " .. info.top
      .. "; it is sent as plain files, without history", warnings = {} }
  end
  job.patterns = excludes.combine(job.patterns, git.EXCLUDES)
  local files
  files, err, code = git.files(info)
  if not files then return nil, "prepare: " .. err, code end
  local gj = { mode = info.history and "history" or "files", info = info, files = files, depth = depth,
    why = info.why, warnings = {} }
  add_all(gj.warnings, files.warnings)
  if not info.history then gj.warnings[#gj.warnings + 1] = info.why .. "; the files are sent without history" end
  if info.history then job.keep[#job.keep + 1] = ".git" end
  job.walk = function(base) return git.matcher(files, base) end
  return gj
end

--- The names besides the runtime dir that the sandbox's .git/info/exclude lists: the adapter's preserved
--- names (they are no part of the work tree).
---@param adapter table
---@return string[]
function M.keep_out(adapter)
  local out = {}
  for _, n in ipairs(adapter.preserve or {}) do
    if type(n) == "string" and n ~= "" and not n:find("/", 1, true) then out[#out + 1] = n end
  end
  return out
end

--- Make the inbound pack (history mode), on the host, before the sandbox changes: only the commits after
--- the earlier prepare's head when the delta base `base` (a state) recorded one. Sets gj.pack and the job's
--- inputs for ferry.sync (its head lines, the members in front of the tree's stream, the inbound lines run
--- after the extraction). Returns true or nil, message, code.
---@param gj table
---@param job table  remote_dir, keep, adapter, base_matcher (ferry's excludes)
---@param base table|nil
---@return true|nil ok, string|nil err, string|nil code
function M.pack(gj, job, base)
  if gj.mode ~= "history" then return true end
  local earlier = base and type(base.git) == "table" and base.git
  local have = earlier and earlier.mode == "history" and git.is_oid(earlier.head) and earlier.head or nil
  gj.not_sent = git.not_sent(gj.files, job.base_matcher)
  local pack, err, code = git_pack.pack(gj.info, { depth = gj.depth, have = have, not_sent = gj.not_sent })
  if not pack then return nil, "prepare: git history: " .. err, code end
  pack.keep_out = M.keep_out(job.adapter)
  gj.pack = pack
  job.inputs = {
    head = git_remote.inputs_head_lines(), -- run before the extraction (job.head_lines)
    wrap = #pack.names > 0 and function(after) return git_remote.input_reader(pack, after) end or nil,
    after = git_remote.inbound_lines(job.remote_dir, pack),
    bytes = pack.bytes,
  }
  return true
end

--- Remove the temp dirs of the git job's packs.
---@param gj table|nil
function M.cleanup(gj)
  if not gj then return end
  git_pack.cleanup(gj.pack)
  git_pack.cleanup(gj.full_pack)
end

-- The sandbox could not take the delta: send the whole history (depth as asked) in one more command.
local function send_full(sb, gj, job)
  local pack, err, code = git_pack.pack(gj.info, { depth = gj.depth, not_sent = gj.not_sent })
  if not pack then return nil, "prepare: git history: " .. err, code end
  pack.keep_out = gj.pack.keep_out
  gj.full_pack = pack
  local report
  report, err, code = git_remote.inbound(sb, job.remote_dir, pack)
  if not report then return nil, "prepare: " .. err, code end
  return report
end

--- After the sync: read what the inbound lines reported (on the sync command's stderr), send the whole
--- history when the sandbox could not take a delta (need-full), fall back to files mode with a warning when
--- the sandbox has no git. Fills result.git, the warnings and gj.state (the state's git table). Returns the
--- extra bytes sent (0, or a full pack's) or nil, message, code.
---@param sb table
---@param gj table|nil
---@param job table
---@param synced table  ferry.sync's
---@param result table
---@return integer|nil bytes, string|nil err, string|nil code
function M.finish(sb, gj, job, synced, result)
  if not gj then return 0 end
  add_all(result.warnings, gj.warnings)
  if gj.mode ~= "history" then
    result.git = { mode = gj.mode, why = gj.why }
    if gj.mode == "files" then gj.state = { mode = "files", why = gj.why } end
    return 0
  end
  local pack, extra = gj.pack, 0
  local report = git_remote.inbound_report(synced.stderr)
  if report.status == "need-full" then
    local full, err, code = send_full(sb, gj, job)
    if not full then return nil, err, code end
    report, pack, extra = full, gj.full_pack, gj.full_pack.bytes
  end
  if report.status == "failed" or report.status == "need-full" then
    return nil, "prepare: git in the sandbox: " .. tostring(report.why), "EIO"
  end
  if report.status == "no-git" then
    local why = "the sandbox has no git: the workspace was sent without its history (restore brings back files "
      .. "only)"
    result.warnings[#result.warnings + 1] = why
    result.git = { mode = "files", why = why }
    gj.state = { mode = "files", why = why }
    return extra
  end
  result.git = { mode = "history", pack = pack.mode, head = pack.head, ref = pack.ref, branch = pack.branch,
    depth = pack.depth, commits = pack.commits, bytes = pack.bytes }
  gj.state = { mode = "history", head = pack.head, ref = pack.ref, branch = pack.branch,
    staged_paths = pack.staged_paths, depth = pack.depth }
  return extra
end

return M
