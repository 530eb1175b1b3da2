--- ferry.prepare: prepare the managed runtime in a sandbox (README "Prepare and restore"). Orchestration only:
-- check the inputs, open the sandbox (ferry.attach), decide the git mode and make the history pack
-- (ferry.git_prepare), snapshot the workspace, walk the assets and references, then change the sandbox: sync
-- the workspace (ferry.sync: a full sync, or a delta from an earlier prepare's state, with the git history
-- in the same command) or adopt the one already there (ferry.adopt), install the adapter's CLI when the
-- sync's check did not find it (ferry.install), send the assets (ferry.assets) and references
-- (ferry.references), and write the state file with the baseline tree (ferry.state). Everything read on the
-- host that can fail is read before the first command that changes the sandbox. With an earlier state to
-- start a delta from, the sandbox lists its tree while the host walks the workspace.
local core = require "ferry.core"
local adapters = require "ferry.adapter"
local adopt = require "ferry.adopt"
local assets = require "ferry.assets"
local attach = require "ferry.attach"
local delta = require "ferry.delta"
local excludes = require "ferry.excludes"
local git_prepare = require "ferry.git_prepare"
local install = require "ferry.install"
local launch = require "ferry.launch"
local progress_mod = require "ferry.progress"
local references = require "ferry.references"
local remote = require "ferry.remote"
local state_file = require "ferry.state"
local sync = require "ferry.sync"
local util = require "ferry.util"
local workspace_lock = require "ferry.workspace_lock"

local M = {}

local function check_remote_dir(remote_dir)
  if type(remote_dir) ~= "string" or remote_dir:sub(1, 1) ~= "/" then
    return nil, "prepare: the remote dir must be an absolute path, got " .. tostring(remote_dir), "EINVAL"
  end
  local clean = util.trim_slashes(remote_dir)
  if clean == "" or ("/" .. clean .. "/"):find("/%.%.?/") or clean:find("//", 1, true) then
    return nil, "prepare: refusing remote dir " .. remote_dir .. " (the root, or '.'/'..' components)", "EINVAL"
  end
  return clean
end

-- opts.remote_dir, else the provider's default.
local function remote_dir_of(opts, sb, provider_string)
  local default = sb:default_remote_dir()
  local remote_dir, err, code = check_remote_dir(opts.remote_dir or default)
  if remote_dir then return remote_dir end
  if opts.remote_dir == nil and not default then
    return nil, "prepare: no remote dir: provider " .. tostring(provider_string)
      .. " has no default; pass remote_dir (-r REMOTE_DIR)", "EINVAL"
  end
  return nil, err, code
end

-- The names at the top of the remote dir that a full sync does not clear: the runtime dir and the
-- adapter's `preserve` list.
local function preserved_names(adapter)
  local keep = { remote.RUNTIME_DIR }
  for _, n in ipairs(adapter.preserve or {}) do
    if type(n) == "string" and n ~= "" and not n:find("/", 1, true) then keep[#keep + 1] = n end
  end
  return keep
end

-- The state of an earlier prepare a delta can start from, or nil and why not (nil when there is none).
local function delta_base(path, want)
  local st, err, code = state_file.read(path)
  if not st then return nil, code ~= "ENOENT" and err or nil end
  return delta.usable_base(st, want)
end

-- The trees of the delta base: {baseline, remote = function() -> the remote tree or nil, why}, or nil and why
-- not. The remote tree is read when the delta needs it (after the walk: the listing runs meanwhile).
local function base_trees(path, st)
  local baseline, err = state_file.tree(path, st, "baseline")
  if not baseline then return nil, err end
  local trees = { baseline = baseline }
  function trees.load_remote()
    local remote_tree, rerr = state_file.tree(path, st, "remote")
    trees.remote = remote_tree
    return remote_tree, rerr
  end
  return trees
end

-- Walk the workspace into the local tree: with a delta base every file hashed (those whose lstat did not move
-- since the baseline's walk keep its digest unread), else nothing read (a full sync hashes what it sends).
local function walk(job, temp_tokens)
  local base = job.base_trees and job.base_trees.baseline
  local tree, info, code = core.tree_walk(job.ws, { exclude = job.matcher, hash = base ~= nil, known = base,
    temp_tokens = temp_tokens })
  if not tree then return nil, "prepare: snapshot " .. job.ws .. ": " .. info, code end
  job.tree, job.info = tree, info
  return true
end

local function check_inputs(opts)
  if type(opts) ~= "table" then error("ferry.prepare: expected an options table", 3) end
  if type(opts.workspace) ~= "string" or opts.workspace == "" then
    error("ferry.prepare: opts.workspace must be a path", 3)
  end
  local ws = util.trim_slashes(util.absolute(opts.workspace))
  if ws == "" then ws = "/" end
  local st, err, code = core.fs_stat(ws)
  if not st then return nil, "prepare: workspace " .. ws .. ": " .. err, code end
  if st.kind ~= "dir" then return nil, "prepare: workspace " .. ws .. " is not a directory", "ENOTDIR" end
  local adapter, aerr, acode = adapters.load(opts.adapter)
  if not adapter then return nil, "prepare: " .. aerr, acode end
  if opts.inbound ~= nil and opts.inbound ~= "copy" and opts.inbound ~= "adopt" then
    return nil, 'prepare: inbound must be "copy" or "adopt", got ' .. tostring(opts.inbound), "EINVAL"
  end
  local refs, rerr, rcode = references.check(opts.references)
  if not refs then return nil, rerr, rcode end
  local depth, derr, dcode = git_prepare.depth(opts.git_depth)
  if not depth then return nil, derr, dcode end
  return { workspace = ws, adapter = adapter, adopt = opts.inbound == "adopt", references = refs }
end

-- What prepare works out before it changes the sandbox: remote dir, excludes, assets, the delta base and
-- the local snapshot. Returns the job or nil, message, code.
local function plan(opts, sb, provider_string, inputs, redact_fn, progress)
  local ws, adapter = inputs.workspace, inputs.adapter
  local remote_dir, rerr, rcode = remote_dir_of(opts, sb, provider_string)
  if not remote_dir then return nil, rerr, rcode end
  local job = { ws = ws, adapter = adapter, remote_dir = remote_dir, progress = progress,
    runtime_dir = remote_dir .. "/" .. remote.RUNTIME_DIR, keep = preserved_names(adapter),
    patterns = excludes.combine(excludes.DEFAULT, adapter.excludes, opts.excludes), asset_dirs = {},
    ref_warnings = {} }
  inputs.job = job
  local gj, gerr, gcode = git_prepare.plan(opts, job)
  if gerr then return nil, gerr, gcode end
  job.git = gj and gj.mode ~= "plain" and gj or nil
  job.git_plan = gj
  local matcher, merr, mcode = excludes.checked(job.patterns, "prepare")
  if not matcher then return nil, merr, mcode end
  job.base_matcher, job.matcher = matcher, job.walk and job.walk(matcher) or matcher
  job.ctx = adapters.context({ sb = sb, workspace = ws, remote_dir = remote_dir, runtime_dir = job.runtime_dir,
    adapter = adapter.name, asset_dirs = job.asset_dirs, provider = provider_string }, redact_fn, progress)
  local wanted, aerr, acode = assets.collect(adapter, job.ctx, opts.assets)
  if not wanted then return nil, aerr, acode end
  job.assets = wanted
  for key in pairs(wanted) do job.asset_dirs[key] = job.runtime_dir .. "/" .. adapter.name .. "/" .. key end
  job.state = opts.state and util.absolute(opts.state) or state_file.default_path(provider_string, remote_dir)
  references.plan(inputs.references, job.ref_warnings)
  local lerr, lcode
  job.launch, lerr, lcode = launch.plan(adapter, job.ctx, job.runtime_dir, remote_dir)
  if not job.launch then return nil, lerr, lcode end
  -- run first by the first command (the listing of a delta, else the sync)
  job.setup_lines = references.clear_lines() .. "\n" .. launch.setup_lines(job.launch)
  if inputs.adopt then
    if job.git then -- the adopted repository stays the sandbox's own, in "files" mode too
      if job.git.mode ~= "history" then job.keep[#job.keep + 1] = ".git" end
      job.keep_out = git_prepare.keep_out(adapter)
    end
    return job
  end
  if opts.delta ~= false then
    job.base, job.fallback = delta_base(job.state, { provider = provider_string, remote_dir = remote_dir,
      excludes = job.patterns, preserve = job.keep })
  end
  -- the sandbox lists its tree while the host reads the baseline and walks: one command, at once (with the
  -- install check)
  job.first_line = install.check_line(adapter, job.runtime_dir)
  if job.base then sync.start_listing(sb, job, job.base) end
  if job.base then
    job.base_trees, job.fallback = base_trees(job.state, job.base)
    if not job.base_trees then
      sync.settle(job) -- its listing is of no use now
      job.base = nil
    end
  end
  local walked, werr, wcode = walk(job, inputs.lock.temp_tokens)
  if not walked then return nil, werr, wcode end
  if job.git then
    local ok, perr, pcode = git_prepare.pack(job.git, job, job.base)
    if not ok then return nil, perr, pcode end
    if job.inputs then job.git_head = job.inputs.head end
  end
  return job
end

local function add_install(result, inst)
  result.installed, result.install_status, result.install_warning = inst.installed, inst.status, inst.warning
  result.install_prefix = inst.prefix
end

local function add_sync(result, synced, info)
  result.delta, result.delta_files, result.delta_deleted = synced.delta, synced.delta_files, synced.delta_deleted
  result.delta_fallback = synced.delta_fallback
  for _, w in ipairs(synced.warnings) do result.warnings[#result.warnings + 1] = w end
  for _, rel in ipairs(info.skipped or {}) do
    result.warnings[#result.warnings + 1] = rel .. ": not a file, dir or symlink; skipped"
  end
end

-- The trees the state file gets: the local tree as the baseline, and the sandbox's tree after the sync (false:
-- none, the next prepare is a full sync). When no sync command ran, the marker and the recorded tree stay,
-- and the baseline on disk too when no file's lstat moved and none had to be read.
local function state_trees(job, synced)
  if not synced.same_marker then return { baseline = job.tree, remote = synced.recorded or false } end
  local moved = core.tree_diff(job.base_trees.baseline, job.tree, { compare = "stat" })
  if #moved == 0 and job.info.hashed == 0 then return {} end
  return { baseline = job.tree }
end

local function state_record(job, provider_string, synced)
  return {
    version = state_file.VERSION, ferry_version = core.version, provider = provider_string,
    remote_dir = job.remote_dir, runtime_dir = job.runtime_dir, adapter = job.adapter.name, workspace = job.ws,
    excludes = job.patterns, preserve = job.keep, assets = job.asset_dirs,
    sync = synced.sync_id and { id = synced.sync_id } or nil,
    trees = synced.same_marker and job.base.trees or nil,
    git = job.git_state, references = next(job.reference_dirs or {}) and job.reference_dirs or nil,
    launch = job.launch_result, created_at = os.time(),
  }
end

-- The workspace into the sandbox: synced (with the git history, in git mode), or adopted where it is.
local function bring_in(sb, job, result)
  if not job.adopting then
    local synced, err, code = sync.run(sb, job, job.fallback)
    if not synced then return nil, err, code end
    local extra
    extra, err, code = git_prepare.finish(sb, job.git_plan, job, synced, result)
    if not extra then return nil, err, code end
    synced.bytes = synced.bytes + extra
    job.git_state = job.git_plan and job.git_plan.state
    return synced
  end
  local adopted, err, code = adopt.run(sb, job, job.git)
  if not adopted then return nil, err, code end
  job.tree, job.info = adopted.baseline, adopted.info
  result.files, result.dirs, result.symlinks = adopted.info.files, adopted.info.dirs, adopted.info.symlinks
  for _, w in ipairs(job.git_plan and job.git_plan.warnings or {}) do result.warnings[#result.warnings + 1] = w end
  if adopted.git then
    local warning
    job.git_state, result.git, warning = adopt.git_fields(adopted.git)
    if warning then result.warnings[#result.warnings + 1] = warning end
  elseif job.git_plan then
    result.git = { mode = job.git_plan.mode, why = job.git_plan.why }
  end
  return { bytes = 0, warnings = adopted.warnings, stderr = adopted.stderr, recorded = adopted.recorded,
    sync_id = adopted.sync_id, delta = false }
end

local function run(opts, sb, provider_string, handle, inputs)
  local progress = opts.progress or progress_mod.QUIET
  local redact_fn, redact_record = state_file.redactor(opts.secrets)
  local job, err, code = plan(opts, sb, provider_string, inputs, redact_fn, progress)
  if not job then return nil, err, code end
  job.adopting = inputs.adopt
  local adapter, info = job.adapter, job.info or {}
  local result = { workspace = job.ws, provider = provider_string, remote_dir = job.remote_dir,
    runtime_dir = job.runtime_dir, asset_dirs = job.asset_dirs, adapter = adapter.name, files = info.files,
    dirs = info.dirs, symlinks = info.symlinks, hashed_files = info.hashed or 0, warnings = {},
    inbound = inputs.adopt and "adopt" or "copy" }
  local hooked, herr = adapters.run_hook(adapter, "before_sync", job.ctx)
  if not hooked then return nil, "prepare: " .. redact_fn(herr), "EHOOK" end
  local asset_plan, perr, pcode = assets.plan(job.assets)
  if not asset_plan then return nil, redact_fn(perr), pcode end

  job.first_line = job.first_line or install.check_line(adapter, job.runtime_dir)
  -- from the first command that changes the sandbox until the state is written, a restore from it could
  -- read a half-synced sandbox: restore refuses while the mark is there
  local recorded_provider = redact_fn(provider_string)
  local marked, merr, mcode = state_file.mark_unfinished(recorded_provider, job.remote_dir)
  if not marked then return nil, "prepare: " .. merr, mcode end
  local synced, serr, scode = bring_in(sb, job, result)
  if not synced then return nil, redact_fn(serr), scode end
  add_install(result, install.after_check(install.reported(synced.stderr), sb, adapter, job.runtime_dir, opts,
    progress, redact_fn))
  result.launch = launch.result(job.launch, synced.stderr, result.warnings)
  job.launch_result = result.launch
  add_sync(result, synced, job.info)
  local asset_bytes, xerr, xcode = assets.send(sb, adapter.name, asset_plan, job.runtime_dir, progress,
    result.warnings)
  if not asset_bytes then return nil, redact_fn(xerr), xcode end
  table.move(job.ref_warnings, 1, #job.ref_warnings, #result.warnings + 1, result.warnings)
  local ref_bytes
  ref_bytes, job.reference_dirs = references.send(sb, inputs.references, job.remote_dir, progress, result.warnings)
  result.reference_dirs = job.reference_dirs
  result.bytes_sent = synced.bytes + asset_bytes + ref_bytes
  -- once the workspace, the assets and the references are in the sandbox (scripts/README.md "Hooks")
  job.ctx.result = result
  hooked, herr = adapters.run_hook(adapter, "after_sync", job.ctx)
  if not hooked then return nil, "prepare: " .. redact_fn(herr), "EHOOK" end

  progress:phase("finalize")
  local wrote, werr, wcode = state_file.write(job.state, redact_record(state_record(job, provider_string, synced)),
    state_trees(job, synced))
  if not wrote then return nil, "prepare: " .. werr, wcode end
  state_file.clear_unfinished(recorded_provider, job.remote_dir)
  result.state = job.state
  result.commands = handle.commands()
  return redact_record(result)
end

--- Prepare the managed runtime in a sandbox. opts:
---   provider        provider string ("local", "bwrap:DIR", "cmd:ARGV...") or an opened sandbox (ferry.open)
---   workspace       local directory to send (never written by prepare)
---   adapter         adapter name (default "shell") or an adapter table
---   remote_dir      absolute dir in the sandbox (default: the provider's default remote dir)
---   excludes        extra exclude patterns (ferry.excludes syntax), after the defaults and the adapter's
---   assets          extra assets: {key = dir | {dir, follow_symlinks, exclude}}
---   state           state file path (default ferry.state.default_path(provider, remote_dir))
---   progress        a ferry.progress reporter (phases sync, install, assets, finalize); secrets: list of
---                   values to redact; on_exec(argv, script) for every command; install_timeout_ms (300 s)
---   lock_wait_ms    how long to wait for another prepare or restore of the workspace (default 10 s)
---   session         ferry.open's session for a provider string (default: on where the provider is costly)
---   delta           false: always a full sync (default: a delta when the state file is of an earlier
---                   prepare with the same provider string, remote dir, excludes and preserved names)
---   git             false: no git mode (a git workspace's .git then travels as plain files, as before)
---   git_depth       commits of history sent in git mode (default ferry.git.DEFAULT_DEPTH; 0 for all)
---   inbound         "copy" (default) or "adopt": take the workspace already in the remote dir as the
---                   baseline without sending it (README "Inbound modes and references")
---   references      {NAME = DIR}: other projects staged read-only in <runtime_dir>/references/NAME
--- Returns {workspace, provider, remote_dir, runtime_dir, asset_dirs = {key = dir}, installed = true|false|nil,
--- install_status
--- ("none"|"present"|"installed"|"failed"|"missing"), install_warning, bytes_sent, commands, state, files,
--- dirs, symlinks, warnings, delta = true|false, delta_files (entries sent), delta_deleted (paths removed),
--- delta_fallback (why an earlier state was not used for a delta), hashed_files (local files read to hash
--- before a delta; 0 for a full sync, which hashes what it sends), inbound ("copy"|"adopt"), git (nil for a
--- workspace outside git: {mode = "history"|"files"|"plain", why, pack ("full"|"thin"|"same"|"unborn"|
--- "adopted"), head, ref, branch, depth, commits, bytes}), reference_dirs = {NAME = dir}, install_prefix (the
--- user prefix npm installed into), launch = {cwd, env, path, command} (ferry.launch)} or nil, message, code.
--- Errors include "<workspace>: another ferry prepare/restore is running (pid N)" EBUSY.
---@param opts table
---@return table|nil result, string|nil err, string|nil code
function M.prepare(opts)
  local inputs, ierr, icode = check_inputs(opts)
  if not inputs then return nil, ierr, icode end
  local lock, lerr, lcode = workspace_lock.acquire(inputs.workspace, "prepare", opts)
  if not lock then return nil, lcode == "EBUSY" and lerr or "prepare: " .. lerr, lcode end
  inputs.lock = lock
  local sb, provider_string, handle = attach.open(opts.provider, opts.on_exec, "ferry.prepare: opts.provider",
    opts.session)
  if not sb then
    lock:release()
    return nil, "prepare: " .. provider_string, handle
  end
  local ok, result, err, code = pcall(run, opts, sb, provider_string, handle, inputs)
  if inputs.job then sync.settle(inputs.job) end -- a listing begun for a prepare that failed
  git_prepare.cleanup(inputs.job and inputs.job.git)
  handle.release()
  lock:release()
  if not ok then error(result, 0) end
  if not result then return attach.diagnosed(handle, "prepare: ", err, code) end
  return result
end

return M
