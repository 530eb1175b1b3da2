--- ferry.git_integrate: the agent's commits onto the host's history, once ferry.git_import brought them in.
-- One ref moves, with `update-ref` and its old-value check (a ref that moved in between is never
-- overwritten): the user's branch when HEAD is still on it at the commit ferry sent (a fast-forward), else
-- refs/heads/ferry/<branch>, leaving the user's branch, HEAD and index alone. No working-tree file is
-- written here: the file merge does that; M.sync_index then resets the index entries of the paths that
-- changed. M.bring_back is the whole way back from a sandbox: the outbound bundle (a full one when the host
-- lacks what a thin one builds on), the import, the integration.
local core = require "ferry.core"
local git = require "ferry.git"
local git_import = require "ferry.git_import"
local git_remote = require "ferry.git_remote"

local M = {}

local ZERO = ("0"):rep(40)

local function is_ancestor(dir, a, b)
  local res = git.run(dir, { "merge-base", "--is-ancestor", a, b })
  return res ~= nil and res.code == 0
end

local function rev(top, spec)
  local res = git.run(top, { "rev-parse", "-q", "--verify", spec .. "^{commit}" })
  return res and res.code == 0 and res.stdout:match("^(%x+)") or nil
end

local function update_ref(top, ref, new, old, message)
  local args = { "update-ref", "-m", message }
  if ref == "HEAD" then args[#args + 1] = "--no-deref" end
  table.move({ ref, new, old }, 1, 3, #args + 1, args)
  local res, err, code = git.run(top, args)
  if not res then return nil, err, code end
  if res.code ~= 0 then return nil, git.failure("git update-ref " .. ref, res), "EGIT" end
  return true
end

-- Where the agent's commits go when the user's branch moved: refs/heads/ferry/<branch>, a free or
-- fast-forwardable one of its numbered variants, or refs/ferry/<branch> when a branch named like a
-- directory of those exists.
local function candidates(branch)
  local name = branch or "detached"
  local list = { "refs/heads/ferry/" .. name }
  for i = 2, 9 do list[#list + 1] = "refs/heads/ferry/" .. name .. "-" .. i end
  list[#list + 1] = "refs/ferry/" .. name
  return list
end

local function keep_on_ferry_ref(top, expect, new)
  local last
  for _, ref in ipairs(candidates(expect.branch)) do
    local cur = rev(top, ref)
    if cur == new then return ref, cur end
    if not cur or is_ancestor(top, cur, new) then
      local ok, err = update_ref(top, ref, new, cur or ZERO, "ferry: the sandbox's commits on " .. expect.ref)
      if ok then return ref, cur end
      last = err
    end
  end
  return nil, "no ferry/ ref could be written: " .. tostring(last)
end

-- The paths that differ between two commits (every path of `new` when old is nil: an unborn branch).
local function changed_paths(top, old, new)
  local args = old and { "diff", "--name-only", "-z", "--no-renames", old, new }
    or { "ls-tree", "-r", "-z", "--name-only", "--full-tree", new }
  local out = git.out(top, args, "git " .. args[1])
  return out and git.split_z(out) or {}
end

-- Commits reachable from `new` and from none of `others` (nil entries skipped).
local function count_new(top, new, ...)
  local args = { "rev-list", "--count", new, "--not" }
  for i = 1, select("#", ...) do
    local oid = select(i, ...)
    if oid then args[#args + 1] = oid end
  end
  local out = git.out(top, args, "git rev-list --count") or ""
  return tonumber(out:match("%d+")) or 0
end

local function head_points_to(top)
  local res = git.run(top, { "symbolic-ref", "-q", "HEAD" })
  return res and res.code == 0 and res.stdout:match("^([^\n]+)") or "HEAD"
end

-- The fast-forward: HEAD still on the ref, the ref still at base (absent for an unborn branch), new
-- descending from base. Returns the result, or nil when it does not apply or the ref moved meanwhile.
local function fast_forward(top, new, expect, cur)
  if cur ~= expect.base or head_points_to(top) ~= expect.ref then return nil end
  if expect.base and not is_ancestor(top, expect.base, new) then return nil end
  if not update_ref(top, expect.ref, new, expect.base or ZERO, "ferry: fast-forward from the sandbox") then
    return nil
  end
  return { mode = "fast-forward", ref = expect.ref, old = expect.base, new = new,
    commits = count_new(top, new, expect.base), paths = changed_paths(top, expect.base, new) }
end

--- Integrate imported commits: fast-forward the user's ref (expect.ref) when HEAD is still on it and it is
--- still at expect.base (`update-ref` with the old value, so a move in between is never overwritten); else
--- keep the commits on refs/heads/ferry/<branch> (see above) and leave the user's branch, HEAD and index
--- alone; nothing when the ref already contains them. expect: ref, branch (nil when detached), base (nil
--- when the branch was unborn: the fast-forward then creates it).
--- Returns {mode = "fast-forward"|"ferry-ref"|"none", ref (the ref written, or the user's), old, new, commits
--- (on ref and not on the user's branch before), paths (fast-forward: the paths that differ between old and
--- new, for M.sync_index)} or nil, message, code.
---@param info table
---@param new string  M.import's new
---@param expect table
---@return table|nil result, string|nil err, string|nil code
function M.integrate(info, new, expect)
  local top = info.top
  local cur = rev(top, expect.ref)
  if cur == new and new ~= expect.base and head_points_to(top) == expect.ref
      and (not expect.base or is_ancestor(top, expect.base, new)) then
    -- an earlier restore moved the ref and was stopped before it finished: the same fast-forward
    return { mode = "fast-forward", ref = expect.ref, old = expect.base, new = new,
      commits = count_new(top, new, expect.base), paths = changed_paths(top, expect.base, new) }
  end
  if new == expect.base or (cur and (cur == new or is_ancestor(top, new, cur))) then
    return { mode = "none", ref = expect.ref, old = cur, new = cur, commits = 0, paths = {} }
  end
  local done = fast_forward(top, new, expect, cur)
  if done then return done end
  local ref, old = keep_on_ferry_ref(top, expect, new)
  if not ref then return nil, "git: " .. old, "EGIT" end
  return { mode = "ferry-ref", ref = ref, old = old, new = new, commits = count_new(top, new, cur, expect.base),
    paths = {} }
end

--- After a fast-forward and the file merge: the host's index entries of `result.paths` and of the paths
--- that were staged when the workspace was sent (`staged_paths`, ferry.git_pack's) are reset to the new
--- commit (other entries, the user's own staging, are kept; no working-tree file is touched), then the index
--- is refreshed. A no-op for other modes.
---@param info table
---@param result table  M.integrate's
---@param staged_paths string[]|nil
---@return true|nil ok, string|nil err, string|nil code
function M.sync_index(info, result, staged_paths)
  if result.mode ~= "fast-forward" then return true end
  local seen, paths = {}, {}
  for _, list in ipairs { result.paths or {}, staged_paths or {} } do
    for _, p in ipairs(list) do
      if not seen[p] then
        seen[p] = true
        paths[#paths + 1] = p
      end
    end
  end
  if #paths > 0 then
    local out, err, code = git.out(info.top, { "reset", "-q", result.new, "--pathspec-from-file=-",
      "--pathspec-file-nul" }, "git reset (index of the changed paths)",
      { stdin = table.concat(paths, "\0") .. "\0", env = { GIT_LITERAL_PATHSPECS = "1" } })
    if not out then return nil, err, code end
  end
  local res, err, code = git.run(info.top, { "update-index", "-q", "--refresh" })
  if not res then return nil, err, code end
  return true
end


-- The outbound bundle, imported; a full bundle when the host lacks the commits a thin one builds on.
local function fetch_and_import(sb, remote_dir, info, expect, opts, dest)
  local params = { ref = expect.ref, base = expect.base }
  local report, err, code = opts.received, nil, nil
  if not report then report, err, code = git_remote.outbound(sb, remote_dir, params, dest, opts) end
  if not report then return nil, err, code end
  if report.status ~= "ok" or not report.bundle then return report end
  local imported
  imported, err, code = git_import.import(info, report.bundle, expect, opts)
  if not imported and code == "ENEEDFULL" then
    params.full = true
    report, err, code = git_remote.outbound(sb, remote_dir, params, dest, opts)
    if not report then return nil, err, code end
    if report.status ~= "ok" or not report.bundle then return report end
    imported, err, code = git_import.import(info, report.bundle, expect, opts)
  end
  if not imported then return nil, err, code end
  report.imported = imported
  return report
end

local WHY = {
  ["no-git"] = "the sandbox has no git: its commits cannot come back (the files do)",
  ["no-repo"] = "the sandbox's repository is gone: its commits cannot come back (the files do)",
  ["no-ref"] = "the sandbox has no %s any more: no commits came back",
}

--- The whole way back from a sandbox: run the outbound lines (M.outbound of ferry.git_remote, 1 command; 1
--- more when the host needs a full bundle), import the bundle (ferry.git_import: verified first) and
--- integrate it (M.integrate). expect: ref, branch, base (what ferry sent). opts: as ferry.git_import.import
--- and ferry.git_remote.outbound, and received: the report of outbound lines that already ran (restore folds
--- them into its own command: ferry.git_remote.folded_report's, its bundle in place), so no command runs
--- unless a full bundle is needed. Returns M.integrate's result plus dirty (the sandbox's `git status` records
--- {xy, path}), on (what the sandbox's HEAD points to), kind (the bundle: "thin" | "full" | "none") and
--- warning (why no commits came back, when they could not), or nil, message, code (a refused bundle:
--- "git bundle refused: ..." EPERM, nothing imported).
---@param sb table
---@param remote_dir string
---@param info table  ferry.git.detect's
---@param expect table
---@param opts table|nil
---@return table|nil result, string|nil err, string|nil code
function M.bring_back(sb, remote_dir, info, expect, opts)
  opts = opts or {}
  local dir, err, code = core.fs_mkdtemp("ferry-git-out-")
  if not dir then return nil, err, code end
  local report
  report, err, code = fetch_and_import(sb, remote_dir, info, expect, opts, dir .. "/out.bundle")
  local result
  if report and report.imported then
    result, err, code = M.integrate(info, report.imported.new, expect)
  elseif report then
    local head = report.head and git.run(info.top, { "cat-file", "-e", report.head .. "^{commit}" })
    local new = head and head.code == 0 and report.head or expect.base
    result, err, code = M.integrate(info, new, expect)
    if result and WHY[report.status] then result.warning = WHY[report.status]:format(expect.ref) end
  end
  core.fs_remove_tree(dir)
  if not result then return nil, err, code end
  result.dirty, result.on, result.kind = report.dirty or {}, report.on, report.kind
  return result
end

return M
