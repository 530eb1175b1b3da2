--- ferry.prepare: prepare the managed runtime in a sandbox (README "Prepare and restore"). Orchestration only:
-- check the inputs, open the sandbox (ferry.attach), decide the git mode and make the history pack
-- (ferry.git_prepare), snapshot the workspace, walk the assets and references, then change the sandbox: sync
-- the workspace (ferry.sync: a full sync, or a delta from an earlier prepare's state, with the git history
-- in the same command) or adopt the one already there (ferry.adopt), install the adapter's CLI when the
-- sync's check did not find it (ferry.install), send the assets (ferry.assets) and references
-- (ferry.references), and write the state file with the baseline snapshot (ferry.state). Everything read
-- on the host that can fail is read before the first command that changes the sandbox.
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
local snapshot = require "ferry.snapshot"
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
  job.head_lines = references.clear_lines()
  references.plan(inputs.references, job.ref_warnings)
  local lerr, lcode
  job.launch, lerr, lcode = launch.plan(adapter, job.ctx, job.runtime_dir, remote_dir)
  if not job.launch then return nil, lerr, lcode end
  job.head_lines = job.head_lines .. "\n" .. launch.setup_lines(job.launch)
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
  -- a delta compares local hashes with the sandbox's before it sends (trusting the earlier prepare's
  -- quick records for files whose lstat did not change); a full sync hashes while it sends
  job.taken_at = os.time()
  local snap, names, info = snapshot.take(ws, { matcher = job.matcher, hash = job.base ~= nil,
    known = job.base and job.base.local_stat, stats = true, temp_tokens = inputs.lock.temp_tokens })
  if not snap then return nil, "prepare: " .. names, info end
  job.snap, job.names, job.info = snap, names, info
  if job.git then
    local ok, perr, pcode = git_prepare.pack(job.git, job, job.base)
    if not ok then return nil, perr, pcode end
    if job.inputs then job.head_lines = job.head_lines .. "\n" .. job.inputs.head end
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

local function state_record(job, provider_string, synced)
  return {
    version = state_file.VERSION, ferry_version = core.version, provider = provider_string,
    remote_dir = job.remote_dir, runtime_dir = job.runtime_dir, adapter = job.adapter.name, workspace = job.ws,
    excludes = job.patterns, preserve = job.keep, assets = job.asset_dirs, baseline = job.snap,
    remote_stat = synced.recorded,
    local_stat = job.info.stats and snapshot.quick_records(job.snap, job.info.stats, job.taken_at) or nil,
    git = job.git_state, references = next(job.reference_dirs or {}) and job.reference_dirs or nil,
    launch = job.launch_result, created_at = os.time(),
  }
end

-- The workspace into the sandbox: synced (with the git history, in git mode), or adopted where it is.
local function bring_in(sb, job, result)
  if not job.adopting then
    local synced, err, code = sync.run(sb, job, job.base, job.fallback)
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
  job.snap, job.info = adopted.baseline, adopted.info
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
    delta = false }
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

  job.first_line = install.check_line(adapter, job.runtime_dir)
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
  local wrote, werr, wcode = state_file.write(job.state, redact_record(state_record(job, provider_string, synced)))
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
  git_prepare.cleanup(inputs.job and inputs.job.git)
  handle.release()
  lock:release()
  if not ok then error(result, 0) end
  if not result then return attach.diagnosed(handle, "prepare: ", err, code) end
  return result
end

return M
