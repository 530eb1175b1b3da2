--- ferry.git_restore: the git side of restore (README "Git-aware sync"), for a state whose prepare was in git
-- mode (its `git` table). The outbound lines run inside restore's own command (ferry.git_remote.folded_lines)
-- and their report and bundle come as members of its tar stream, under the runtime dir (never written to
-- the workspace); the bundle is verified and imported (ferry.git_import) and integrated
-- (ferry.git_integrate) before the file merge: a fast-forward of the user's branch, or the agent's commits
-- kept on refs/heads/ferry/<branch> when the branch moved. Then the file merge: the host side walks what git
-- shows (tracked and untracked-not-ignored files), new files from the sandbox that the host's git ignores
-- stay there, and, when the commits went to a ferry ref, the paths they changed count as the sandbox's
-- baseline (so only its uncommitted changes reach the working tree; the commits are on the ref). After the
-- merge the index entries of what the fast-forward changed are reset (git_integrate.sync_index).
local core = require "ferry.core"
local git = require "ferry.git"
local git_integrate = require "ferry.git_integrate"
local git_remote = require "ferry.git_remote"
local util = require "ferry.util"

local M = {}

local MAX_FIELDS, MAX_STDERR = 64 * 1024 * 1024, 64 * 1024

local function valid_ref(ref)
  return ref == "HEAD" or (type(ref) == "string" and ref:match("^refs/heads/[^%c ]+$") ~= nil)
end

-- The state's git table, checked: {mode, head, ref, branch, staged_paths} or nil and why not.
local function state_git(sg)
  if type(sg) ~= "table" or (sg.mode ~= "history" and sg.mode ~= "files") then return nil end
  if sg.mode == "files" then return sg end
  if not valid_ref(sg.ref) or (sg.head ~= nil and not git.is_oid(sg.head)) then
    return nil, "the state's git record is malformed"
  end
  if type(sg.staged_paths) ~= "table" then sg.staged_paths = {} end
  return sg
end

--- The git part of a restore: nil when there is none (the state is not of a git-mode prepare, or opts.git is
--- false), else {mode = "history"|"files", info (ferry.git.detect's), files, walk(base) -> the local walk's
--- matcher, expect = {ref, branch, base} and script (ferry.receive's script options) in history mode}.
--- A workspace that is no longer a git work tree (or a host without git) restores files only, with a warning.
---@param job table  restore's: st, ws, opts
---@param warnings string[]
---@return table|nil gr
function M.plan(job, warnings)
  local sg, why = state_git(job.st.git)
  if not sg or job.opts.git == false then
    if why then warnings[#warnings + 1] = "restore: " .. why .. "; files only" end
    return nil
  end
  local info, err = git.detect(job.ws)
  local files
  if info and info.prefix == "" then files, err = git.files(info) end
  if not files then
    warnings[#warnings + 1] = "restore: " .. job.ws .. " is no longer the top of a git work tree ("
      .. tostring(err or "git sees no repository there") .. "); the sandbox's commits were not brought back, "
      .. "its files were"
    return nil
  end
  local gr = { mode = sg.mode, info = info, files = files, sg = sg }
  gr.walk = function(base) return git.matcher(files, base) end
  if sg.mode == "history" then
    gr.expect = { ref = sg.ref, branch = sg.branch, base = sg.head }
    local F = git_remote.FOLDED
    gr.script = { before = git_remote.folded_lines(job.st.remote_dir, { ref = sg.ref, base = sg.head }),
      members = { F.fields, F.stderr, F.bundle } }
  end
  return gr
end

-- The received member `rel` (a file), extracted into the spool dir as `dest`: its path and size, or nil.
local function member(got, spool_dir, rel, dest, limit)
  local e = got.info.members[rel]
  if not e or e.kind ~= "file" or e.size > limit then return nil end
  local ok = core.tar_extract(got.spool, spool_dir, { [e.name] = { dest = dest, mode = 384 } })
  return ok and spool_dir .. "/" .. dest or nil, e.size
end

local function read_all(path)
  local f = path and io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

--- The outbound report that came with restore's stream (ferry.git_remote.folded_report's, the bundle in
--- spool_dir), or nil, message, code.
---@param got table  ferry.receive.pull's
---@param spool_dir string
---@return table|nil report, string|nil err, string|nil code
function M.received(got, spool_dir)
  local F = git_remote.FOLDED
  local fields = read_all((member(got, spool_dir, F.fields, "git.fields", MAX_FIELDS)))
  local stderr = read_all((member(got, spool_dir, F.stderr, "git.stderr", MAX_STDERR)))
  local bundle, size = member(got, spool_dir, F.bundle, "git.bundle", math.huge)
  return git_remote.folded_report(fields, stderr, bundle, bundle and size or 0)
end

--- Import and integrate the sandbox's commits (nothing is imported from a bundle that fails a check).
--- Returns ferry.git_integrate.bring_back's result or nil, message, code.
---@param gr table
---@param sb table
---@param remote_dir string
---@param report table  M.received's
---@param opts table  restore's options (max_bytes for a full bundle fetched again, allow_outside_symlinks)
---@return table|nil result, string|nil err, string|nil code
function M.bring_back(gr, sb, remote_dir, report, opts)
  return git_integrate.bring_back(sb, remote_dir, gr.info, gr.expect,
    { received = report, allow_outside_symlinks = opts.allow_outside_symlinks })
end

-- Top-level dirs of the submodules and nested repositories: check-ignore cannot answer below them.
local function nested_roots(files)
  local roots = {}
  for _, list in ipairs { files.submodules, files.nested } do
    for _, rel in ipairs(list) do roots[#roots + 1] = rel end
  end
  return roots
end

local function below_any(rel, roots)
  for _, root in ipairs(roots) do
    if rel == root or rel:sub(1, #root + 1) == root .. "/" then return true end
  end
  return false
end

--- Leave out of the sandbox's tree the new paths (absent from the baseline) that the host's git ignores,
--- and everything below them: they stay in the sandbox. Returns the paths left out, in path order.
---@param gr table
---@param remote_tree table
---@param baseline table  a tree
---@return string[]|nil dropped, string|nil err, string|nil code
function M.drop_ignored(gr, remote_tree, baseline)
  local roots, query, new = nested_roots(gr.files), {}, {}
  for _, rel in ipairs((core.tree_diff(baseline, remote_tree))) do
    local e = remote_tree:get(rel)
    if e and not baseline:get(rel) and not below_any(rel, roots) then
      new[#new + 1] = rel
      query[#query + 1] = e.kind == "dir" and rel .. "/" or rel
    end
  end
  local ignored, err, code = git.ignored(gr.info.top, query)
  if not ignored then return nil, "restore: " .. err, code end
  local dropped, gone = {}, nil
  for _, rel in ipairs(new) do -- in path order: a parent before its subtree (all of it new too)
    if gone and rel:sub(1, #gone + 1) == gone .. "/" then
      dropped[#dropped + 1] = rel
    elseif ignored[rel] or ignored[rel .. "/"] then
      dropped[#dropped + 1] = rel
      remote_tree:prune(rel)
      gone = rel
    end
  end
  return dropped
end

local MODES = { ["100644"] = 420, ["100755"] = 493 }

-- {path = {mode, oid}} of `paths` in commit `new` (absent: deleted there).
local function tree_entries(top, new, paths)
  local out, err, code = git.out(top, { "ls-tree", "-r", "-z", "--full-tree", new }, "git ls-tree")
  if not out then return nil, err, code end
  local want, found = {}, {}
  for _, p in ipairs(paths) do want[p] = true end
  for _, rec in ipairs(git.split_z(out)) do
    local mode, kind, oid, path = rec:match("^(%d+) (%a+) (%x+)\t(.+)$")
    if path and want[path] and kind == "blob" then found[path] = { mode = mode, oid = oid } end
  end
  return found
end

-- A baseline entry for a commit's blob, or nil for what the merge does not carry (a submodule).
local function entry_of(e, text)
  if e.mode == "120000" then return text and { kind = "symlink", target = text } or nil end
  local mode = MODES[e.mode]
  if not mode or not text then return nil end
  return { kind = "file", mode = mode, size = #text, sha256 = core.sha256(text) }
end

--- When the agent's commits went to a ferry ref (the user's branch moved), the baseline the merge uses:
--- a copy of the `baseline` tree where each path those commits changed has its version in the new commit
--- (absent when they deleted it), its parent dirs included. The working tree then gets only what the
--- sandbox changed on top of its commits; the commits themselves wait on the ref.
---@param gr table
---@param integrated table  ferry.git_integrate.integrate's (mode "ferry-ref")
---@param baseline table  a tree
---@param remote_tree table
---@param matcher function  the state's excludes
---@return table|nil baseline, string|nil err, string|nil code
function M.committed_baseline(gr, integrated, baseline, remote_tree, matcher)
  local top, new, old = gr.info.top, integrated.new, gr.expect.base
  local args = old and { "diff", "--name-only", "-z", "--no-renames", old, new }
    or { "ls-tree", "-r", "-z", "--name-only", "--full-tree", new }
  local out, err, code = git.out(top, args, "git " .. args[1])
  if not out then return nil, "restore: " .. err, code end
  local paths = {}
  for _, p in ipairs(git.split_z(out)) do
    if not matcher(p, false) then paths[#paths + 1] = p end
  end
  local oids = {}
  local entries
  entries, err, code = tree_entries(top, new, paths)
  if not entries then return nil, "restore: " .. err, code end
  for _, e in pairs(entries) do oids[#oids + 1] = e.oid end
  local texts
  texts, err, code = git.blobs(top, oids)
  if not texts then return nil, "restore: " .. err, code end
  local merged = baseline:copy()
  for _, p in ipairs(paths) do
    local e = entries[p]
    local entry = e and entry_of(e, texts[e.oid])
    local was = merged:get(p)
    if was and was.kind == "dir" then merged:prune(p) else merged:remove(p) end
    if entry then merged:add(p, entry) end
    local parent = entry and util.parent_of(p)
    while parent do
      local d = merged:get(parent)
      if d and d.kind == "dir" then break end
      if d then merged:remove(parent) end
      local r = remote_tree:get(parent)
      merged:add(parent, { kind = "dir", mode = r and r.mode or 493 })
      parent = util.parent_of(parent)
    end
  end
  return merged
end

--- The merge must never write inside a .git: a plan action on such a path is a bug (the excludes keep every
--- `.git` out of both snapshots); raise rather than write.
---@param plan table  ferry.merge.plan's
function M.assert_outside_git(plan)
  for _, a in ipairs(plan.actions) do
    if ("/" .. a.path .. "/"):find("/.git/", 1, true) then
      error("restore: the file merge planned to " .. a.op .. " " .. a.path .. ", inside .git; nothing written there", 0)
    end
  end
end

--- After the file merge: the index entries of what a fast-forward changed (and of the paths staged at
--- prepare) reset to the new commit. A failure is a warning (the files are in place).
---@param gr table
---@param integrated table
---@param warnings string[]
function M.sync_index(gr, integrated, warnings)
  local ok, err = git_integrate.sync_index(gr.info, integrated, gr.sg.staged_paths)
  if not ok then
    warnings[#warnings + 1] = "restore: the git index could not be brought up to date: " .. tostring(err)
  end
end

--- The state's git table after a restore: the commit both sides now hold becomes the base of the next
--- restore (and the `have` of the next prepare); the prepare-time staging is settled by a fast-forward.
---@param gr table
---@param integrated table|nil
---@return table
function M.next_state(gr, integrated)
  local sg = gr.sg
  if integrated and integrated.mode ~= "none" then
    sg.head = integrated.new
    if integrated.mode == "fast-forward" then sg.staged_paths = {} end
  end
  return sg
end

return M
