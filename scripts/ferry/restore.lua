--- ferry.restore: bring the work back from the sandbox (README "Prepare and restore"). Orchestration only:
-- take the workspace lock (ferry.workspace_lock), receive the sandbox's workspace into a spool dir of its
-- own (ferry.scratch, ferry.receive: torn files fetched again; in git mode the outbound git bundle in the
-- same stream), check every entry (ferry.guard), bring the sandbox's commits back (ferry.git_restore:
-- verified, imported, integrated), 3-way merge the files into the local workspace against the baseline
-- (ferry.merge), apply the plan with writes that never follow a symlink, land by rename and check the host
-- file right before (ferry.apply), reset the index entries a fast-forward changed, and write the new
-- baseline to the state file (ferry.state).
local core = require "ferry.core"
local adapters = require "ferry.adapter"
local apply = require "ferry.apply"
local attach = require "ferry.attach"
local excludes = require "ferry.excludes"
local git_restore = require "ferry.git_restore"
local guard = require "ferry.guard"
local merge = require "ferry.merge"
local progress_mod = require "ferry.progress"
local receive = require "ferry.receive"
local remote = require "ferry.remote"
local scratch = require "ferry.scratch"
local snapshot = require "ferry.snapshot"
local state_file = require "ferry.state"
local util = require "ferry.util"
local workspace_lock = require "ferry.workspace_lock"

local M = {}

--- The default content limit of the archive restore receives (1 GiB).
M.DEFAULT_MAX_BYTES = 1024 * 1024 * 1024

local SPOOL_SLACK = 256 * 1024 * 1024 -- archive headers on top of max_bytes of content

-- The local tree for the merge: a dead run's temp files removed (those named with a token the workspace lock
-- recorded), and paths a killed restore had removed (state.pending_removals) seen as the baseline had them,
-- so the rerun finishes the same plan. Like a delta prepare, the walk reads only the files whose lstat moved
-- since the baseline recorded them. Returns the tree and the walk's info.
local function local_tree(job, matcher)
  local ws, st, result, baseline = job.ws, job.st, job.result, job.baseline
  local tree, info, code = core.tree_walk(ws, { exclude = matcher, hash = true, known = baseline,
    temp_tokens = job.lock.temp_tokens })
  if not tree then return nil, "snapshot " .. ws .. ": " .. info, code end
  local all_removed = true
  for _, rel in ipairs(info.temps) do
    local removed, err = core.fs_safe_remove(ws, rel)
    if not removed then
      all_removed = false
      result.warnings[#result.warnings + 1] = "restore: leftover temp file kept: " .. err
    end
  end
  if all_removed then job.lock:forget(job.lock.temp_tokens) end
  result.hashed_files = info.hashed
  local pending = st.pending_removals
  if type(pending) == "table" then
    table.sort(pending)
    for _, rel in ipairs(pending) do
      local was, parent = type(rel) == "string" and baseline:get(rel), util.parent_of(rel)
      local p = parent and tree:get(parent)
      if was and not tree:get(rel) and (not parent or (p and p.kind == "dir")) then tree:add(rel, was) end
    end
  end
  return tree, info
end

local function refusal(refused, result)
  for _, r in ipairs(refused) do result.refused[#result.refused + 1] = r.name .. ": " .. r.reason end
  local first = refused[1]
  return nil, "restore refused: " .. first.name .. ": " .. first.reason, "EPERM", result
end

-- A torn file was not received: the sandbox's side of it reads as unchanged (the baseline's entry), so the
-- host keeps its version and the next restore looks at it again.
local function keep_torn(remote_tree, torn, baseline, result)
  for _, rel in ipairs(torn) do
    local parent = util.parent_of(rel)
    local p, was = parent and remote_tree:get(parent), baseline:get(rel)
    remote_tree:remove(rel)
    if was and (not parent or (p and p.kind == "dir")) then remote_tree:add(rel, was) end
    result.torn[#result.torn + 1] = rel
    result.warnings[#result.warnings + 1] = "restore: " .. rel .. ": changed while the sandbox's tar read it, "
      .. "twice; not restored (the host keeps its version)"
  end
end

-- The top-level names restore never takes from the archive: the runtime dir and the preserved names.
local function skip_top(st)
  local names = { remote.RUNTIME_DIR }
  for _, n in ipairs(st.preserve) do names[#names + 1] = n end
  return names
end

-- Check the received tree (ferry.guard): nil when it passes, else nil, message, code, partial result.
local function check_remote(job, got)
  local checked = guard.check(got.tree, got.info, { workspace = job.ws, baseline = job.baseline,
    allow_outside_symlinks = job.opts.allow_outside_symlinks })
  if #checked.refused > 0 then return refusal(checked.refused, job.result) end
  keep_torn(got.tree, got.torn, job.baseline, job.result)
  return true
end

-- A tree no walk, scan or state could make: an entry whose parent is not a directory of it.
local function malformed(label, tree)
  local rel = tree:orphan()
  if not rel then return nil end
  return string.format("restore: %s: %q: inside %q, which is not a directory of the snapshot", label, rel,
    util.parent_of(rel)), "EINVAL"
end

-- Plan the merge of the received tree against `baseline`, looking only at the paths where the local or the
-- remote tree differs from it: the plan and the job's merge context; or nil, message, code.
local function merge_plan(job, got, baseline)
  local walk = job.git and job.git.walk(job.matcher) or job.matcher
  local loc, info, lcode = local_tree(job, walk)
  if not loc then return nil, "restore: " .. info, lcode end
  for _, side in ipairs { { "baseline", baseline }, { "local", loc }, { "remote", got.tree } } do
    local err, code = malformed(side[1], side[2])
    if err then return nil, err, code end
  end
  local paths = core.tree_diff(baseline, loc, got.tree, { mode_mask = 511 })
  local plan, perr, pcode = merge.plan(snapshot.view(baseline), snapshot.view(loc), snapshot.view(got.tree),
    { paths = paths })
  if not plan then return nil, "restore: " .. perr, pcode end
  if job.git then git_restore.assert_outside_git(plan) end
  return plan, { loc = loc, info = info }
end

-- The git part before the merge (git mode): the sandbox's commits imported and integrated, new files the
-- host's git ignores left in the sandbox, and the baseline the merge uses. Returns the baseline and the
-- integration (nil when no history came back), or nil, message, code.
local function bring_back(job, sb, got, spool_dir)
  local gr, st, result = job.git, job.st, job.result
  if not gr then return job.baseline end
  local integrated
  if gr.expect then
    local report, err, code = git_restore.received(got, spool_dir)
    if not report then
      return nil, "restore: " .. err .. " (nothing written; git = false / --no-git brings back files only)", code
    end
    integrated, err, code = git_restore.bring_back(gr, sb, st.remote_dir, report, job.opts)
    if not integrated then return nil, err, code end
    result.git = { mode = integrated.mode, ref = integrated.ref, old = integrated.old, new = integrated.new,
      commits = integrated.commits, branch = gr.expect.branch }
    if integrated.warning then result.warnings[#result.warnings + 1] = "restore: " .. integrated.warning end
  end
  local dropped, derr, dcode = git_restore.drop_ignored(gr, got.tree, job.baseline)
  if not dropped then return nil, derr, dcode end
  result.ignored = dropped
  if integrated and integrated.mode == "ferry-ref" then
    local baseline, berr, bcode = git_restore.committed_baseline(gr, integrated, job.baseline, got.tree, job.matcher)
    if not baseline then return nil, berr, bcode end
    return baseline, integrated
  end
  return job.baseline, integrated
end

-- The local tree's lstat, as apply checks each path against it (files and symlinks; a symlink's size is
-- its target's length, as lstat has it).
local function stats_view(loc)
  return setmetatable({}, { __index = function(_, rel)
    local e = loc:get(rel)
    if not e or (e.kind ~= "file" and e.kind ~= "symlink") then return nil end
    if e.kind == "symlink" then e.size = #e.target end
    return e
  end })
end

-- Where apply reads each remote path's entry: the spool it came in, under its member name.
local function sources(got)
  return setmetatable({}, { __index = function(_, rel)
    local e = got.from[rel] or got.tree:get(rel)
    return e and { spool = e.spool or got.spool, name = e.name or rel }
  end })
end

local function concat_sorted(a, b)
  return util.sorted(table.move(b, 1, #b, #a + 1, table.move(a, 1, #a, 1, {})))
end

local function add_plan(result, plan, applied)
  local moved = {}
  for _, m in ipairs(applied.moved) do moved[m.path] = true end
  for _, p in ipairs(applied.kept) do moved[p] = true end
  local function landed(list)
    local out = {}
    for _, p in ipairs(list) do
      if not moved[p] then out[#out + 1] = p end
    end
    return out
  end
  result.changed = landed(concat_sorted(plan.take, plan.mkdirs))
  result.deleted = landed(concat_sorted(plan.delete, plan.rmdirs))
  result.conflict_copies = {}
  local conflicts = {}
  for _, c in ipairs(plan.conflicts) do
    conflicts[#conflicts + 1] = c.path
    result.conflict_copies[c.path] = c.remote_copy
  end
  for _, m in ipairs(applied.moved) do
    conflicts[#conflicts + 1] = m.path
    result.conflict_copies[m.path] = m.remote_copy
    result.warnings[#result.warnings + 1] = "restore: " .. m.path .. ": " .. m.reason .. "; the sandbox's "
      .. "version is at " .. m.remote_copy
  end
  result.conflicts = util.sorted(conflicts)
  result.kept = concat_sorted(plan.keep, applied.kept)
  for _, w in ipairs(applied.warnings) do result.warnings[#result.warnings + 1] = w end
end

-- The state file written: `st` with the trees given (nil: those recorded).
local function write_state(job, trees)
  if job.st.version == 1 then trees = trees or { baseline = job.baseline } end -- its first write makes it 2
  local wrote, werr, wcode = state_file.write(job.path, job.redact_record(job.st), trees)
  if not wrote then return nil, "restore: " .. werr, wcode end
  return true
end

-- Receive, check, merge and apply, then record the new baseline. Returns the result or nil, message, code[,
-- partial result].
local function pull(job, sb, spool_dir)
  local opts, st, result = job.opts, job.st, job.result
  local max_bytes = opts.max_bytes or M.DEFAULT_MAX_BYTES
  local compiled, ignore = pcall(guard.ignore_matcher, st.excludes, skip_top(st))
  if not compiled then return nil, "restore: " .. tostring(ignore), "EINVAL", result end
  job.matcher = excludes.compile(st.excludes)
  local got, gerr, gcode = receive.pull(sb, st, spool_dir, { limit = opts.max_stream_bytes or max_bytes + SPOOL_SLACK,
    scan = guard.scan_options(job.ws, ignore, max_bytes, job.git and job.git.script and job.git.script.members),
    progress = job.progress, script = job.git and job.git.script })
  if not got then return nil, gerr, gcode, result end
  result.bytes_received = got.received
  local ok, cerr, ccode = check_remote(job, got)
  if not ok then return nil, cerr, ccode, result end
  local baseline, integrated, icode = bring_back(job, sb, got, spool_dir)
  if not baseline then return nil, integrated, icode, result end
  local plan, merged, mcode = merge_plan(job, got, baseline)
  if not plan then return nil, merged, mcode, result end
  local pending = {}
  for _, a in ipairs(plan.actions) do
    if a.op == "remove" or a.op == "rmdir" then pending[#pending + 1] = a.path end
  end
  if #pending > 0 then
    st.pending_removals = pending
    local wrote, werr, wcode = write_state(job)
    if not wrote then return nil, werr, wcode end
  end
  local claimed, lerr, lcode = job.lock:claim_temps()
  if not claimed then return nil, "restore: " .. lerr, lcode end
  local applied, xerr, xcode = apply.run { ws = job.ws, plan = plan, source = sources(got),
    localsnap = snapshot.view(merged.loc), stats = stats_view(merged.loc), taken_at = merged.loc:taken_at(),
    target = plan.target, max_bytes = max_bytes, before_write = opts.before_write }
  if not applied then return nil, xerr, xcode, result end
  if integrated then git_restore.sync_index(job.git, integrated, result.warnings) end
  if job.git then st.git = git_restore.next_state(job.git, integrated) end
  -- the sandbox's tree is the new baseline, with the lstat of each local file that holds the same
  got.tree:stat_from(merged.loc)
  st.pending_removals, st.restored_at = nil, os.time()
  local wrote, werr, wcode = write_state(job, { baseline = got.tree })
  if not wrote then return nil, werr, wcode end
  add_plan(result, plan, applied)
  return result
end

local function restore_locked(job)
  local opts, st, result = job.opts, job.st, job.result
  -- the work comes back even when the adapter is gone: only its hooks are missed
  local adapter, aerr = adapters.load(opts.adapter or st.adapter)
  if not adapter then
    result.warnings[#result.warnings + 1] = "restore: " .. aerr .. "; restoring without its hooks"
    adapter = { name = tostring(st.adapter), hooks = {} }
  end
  if not opts.sb and st.provider:find("***", 1, true) then
    return nil, "restore: the provider string in " .. job.path .. " was redacted (it held a secret); pass the "
      .. "sandbox itself (opts.sb) or keep secrets out of provider strings", "EINVAL"
  end
  local sb, provider_string, handle = attach.open(opts.sb or st.provider, opts.on_exec, "ferry.restore: opts.sb",
    opts.session)
  if not sb then return nil, "restore: " .. provider_string, handle end
  local ctx = adapters.context({ sb = sb, workspace = job.ws, remote_dir = st.remote_dir,
    runtime_dir = st.runtime_dir, adapter = adapter.name, asset_dirs = st.assets, provider = provider_string,
    state = job.path, result = result, copy_back_credentials = opts.credentials == "copy-back" },
    job.redact_fn, job.progress)
  job.git = git_restore.plan(job, result.warnings)
  scratch.sweep("restore") -- what a killed restore left; a live one's spool is its own
  local spool_dir, serr, scode = scratch.make("restore")
  if not spool_dir then
    handle.release()
    return nil, "restore: " .. serr, scode
  end
  local ok, r1, r2, r3, r4 = pcall(function()
    local hooked, herr = adapters.run_hook(adapter, "before_restore", ctx)
    if not hooked then return nil, "restore: " .. herr, "EHOOK" end
    local pulled, err, code, partial = pull(job, sb, spool_dir)
    if not pulled then return nil, err, code, partial end
    local after, aferr = adapters.run_hook(adapter, "after_restore", ctx)
    if not after then result.warnings[#result.warnings + 1] = aferr end
    return result
  end)
  local removed, rerr = scratch.remove(spool_dir)
  if not removed then result.warnings[#result.warnings + 1] = "restore: spool dir kept: " .. rerr end
  result.commands = handle.commands()
  handle.release()
  if not ok then error(r1, 0) end
  if not r1 then return attach.diagnosed(handle, "restore: ", r2, r3, r4) end
  return r1
end

--- Restore the sandbox's workspace into the local one. opts:
---   state           the state file prepare wrote (required)
---   workspace       local workspace (default: the one in the state)
---   sb              an opened sandbox to use instead of opening the state's provider
---   adapter         adapter name or table (default: the state's; a missing one only loses its hooks)
---   allow_outside_symlinks  let symlinks point outside the workspace (default false)
---   max_bytes       content limit of the archive (default 1 GiB)
---   max_stream_bytes  limit of the stream itself, headers included (default max_bytes + 256 MiB)
---   credentials     "copy-back": let adapters copy credentials the sandbox refreshed back to the host (each
---                   adapter checks them first); default nil, "skip": never (what would have been is reported)
---   progress, secrets, on_exec, lock_wait_ms, session   as for prepare (phases restore, finalize)
---   before_write    function(path, op) called right before each removal ("remove") and each write
---                   ("write") lands in the workspace, after the snapshot it is checked against (for tests)
---   git             false: files only, even when the state is of a git-mode prepare (no commits come back)
--- Returns {changed, deleted, conflicts (paths: the merge's, and the paths the host changed during the
--- restore), conflict_copies = {path = copy}, kept, refused, torn (files the sandbox's tar read while they
--- changed, twice: not restored), credentials, warnings,
--- bytes_received, commands, hashed_files (local files read to hash: those whose lstat moved since the
--- state's quick records), credentials ({adapter, path, action = "copied"|"refused"|"skipped", reason} per
--- credential an adapter decided about), state, workspace, remote_dir, runtime_dir, provider, git (after a
--- git-mode prepare with history: {mode = "fast-forward"|"ferry-ref"|"none", ref, old, new, commits, branch
--- (the user's)}), ignored (new paths in the sandbox that the host's git ignores: left there)} or nil,
--- message, code[, partial result with `refused` (one "<entry>: <reason>" per refused entry)].
--- Errors: "<workspace>: another ferry prepare/restore is running (pid N)" EBUSY (after opts.lock_wait_ms);
--- "restore refused: <entry>: <reason>" EPERM; "git bundle refused: <why>" EPERM (nothing imported, nothing
--- written); "restore refused: archive exceeds the N byte limit at <entry>" and "restore refused: the sandbox
--- sent over N bytes" EFBIG; "restore: <remote> does not exist in the sandbox; nothing restored" ENOENT;
--- "restore: reading <remote> from the sandbox: exit code N: ..." EIO; state and filesystem errors.
---@param opts table
---@return table|nil result, string|nil err, string|nil code, table|nil partial
function M.restore(opts)
  if type(opts) ~= "table" or type(opts.state) ~= "string" then
    error("ferry.restore: opts.state must be the path of a state file", 2)
  end
  if opts.credentials ~= nil and opts.credentials ~= "copy-back" and opts.credentials ~= "skip" then
    error('ferry.restore: opts.credentials must be "copy-back" or "skip", got ' .. tostring(opts.credentials), 2)
  end
  local path = util.absolute(opts.state)
  local st, err, code = state_file.read(path)
  if not st then return nil, "restore: " .. err, code end
  local ws = util.trim_slashes(util.absolute(opts.workspace or st.workspace))
  local wst = core.fs_stat(ws)
  if not wst or wst.kind ~= "dir" then
    return nil, "restore: workspace " .. ws .. " is not a directory", wst and "ENOTDIR" or "ENOENT"
  end
  local redact_fn, redact_record = state_file.redactor(opts.secrets)
  local lock, lerr, lcode = workspace_lock.acquire(ws, "restore", opts)
  if not lock then return nil, redact_fn(lcode == "EBUSY" and lerr or "restore: " .. lerr), lcode end
  -- what a prepare that held the lock meanwhile wrote is the state to restore from
  local first_workspace = st.workspace
  st, err, code = state_file.read(path)
  if st and not opts.workspace and st.workspace ~= first_workspace then
    st, err, code = nil, path .. " was rewritten for workspace " .. st.workspace .. " while this restore waited; "
      .. "run it again", "EAGAIN"
  end
  local baseline
  if st then
    baseline, err, code = state_file.tree(path, st, "baseline")
    if not baseline then st = nil end
  end
  local mark = st and state_file.unfinished(st.provider, st.remote_dir)
  if mark then
    err = "a prepare into " .. st.remote_dir .. " did not finish, so the sandbox may hold part of the workspace "
      .. "(a restore would take the rest as deleted); prepare again, or remove " .. mark .. " to restore anyway"
    st, code = nil, "EAGAIN"
  end
  if not st then
    lock:release()
    return nil, redact_fn("restore: " .. err), code
  end
  local job = { opts = opts, st = st, path = path, ws = ws, progress = opts.progress or progress_mod.QUIET,
    redact_fn = redact_fn, redact_record = redact_record, lock = lock, baseline = baseline }
  job.result = { state = path, workspace = ws, remote_dir = st.remote_dir, runtime_dir = st.runtime_dir,
    provider = st.provider, changed = {}, deleted = {}, conflicts = {}, refused = {}, torn = {}, warnings = {},
    credentials = {}, bytes_received = 0, commands = 0, hashed_files = 0 }
  local ok, r1, r2, r3, r4 = pcall(restore_locked, job)
  lock:release()
  if not ok then error(r1, 0) end
  if not r1 then return nil, redact_fn(r2), r3, r4 and redact_record(r4) end
  return redact_record(r1)
end

return M
