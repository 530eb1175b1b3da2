--- ferry.restore: bring the work back from the sandbox (README "Prepare and restore"). Orchestration only:
-- take the workspace lock, receive the sandbox's workspace as one tar stream (ferry.remote's restore
-- script) into a spool file, check every entry (ferry.guard), 3-way merge it into the local workspace
-- against the baseline (ferry.merge) with writes that never follow a symlink and land by rename, and
-- write the new baseline to the state file (ferry.state).
local core = require "ferry.core"
local adapters = require "ferry.adapter"
local attach = require "ferry.attach"
local excludes = require "ferry.excludes"
local guard = require "ferry.guard"
local merge = require "ferry.merge"
local progress_mod = require "ferry.progress"
local remote = require "ferry.remote"
local snapshot = require "ferry.snapshot"
local state_file = require "ferry.state"
local util = require "ferry.util"

local M = {}

--- The default content limit of the archive restore receives (1 GiB).
M.DEFAULT_MAX_BYTES = 1024 * 1024 * 1024

local SPOOL_SLACK = 256 * 1024 * 1024 -- archive headers on top of max_bytes of content

-- Receive the remote workspace into `spool`. Returns {received, warning} or nil, message, code.
local function receive(sb, st, spool, limit, progress)
  progress:phase("restore")
  local f, ferr = io.open(spool, "wb")
  if not f then return nil, "restore: spool " .. spool .. ": " .. tostring(ferr), "EIO" end
  local written, overflow, write_err, reported = 0, false, nil, 0
  local res, err, code = sb:pipe_out(remote.restore_script(st.remote_dir, st.preserve, st.excludes), function(chunk)
    if overflow or write_err then return end
    written = written + #chunk
    if written > limit then
      overflow = true
      return
    end
    local ok, werr = f:write(chunk)
    if not ok then write_err = werr end
  end, {
    what = "restore from " .. st.remote_dir,
    on_progress = function(n)
      progress:advance(n - reported)
      reported = n
    end,
  })
  local closed, cerr = f:close()
  if not closed and not write_err then write_err = cerr end
  if overflow then
    return nil, string.format("restore refused: the sandbox sent over %d bytes", limit), "EFBIG"
  end
  if write_err then return nil, "restore: spool " .. spool .. ": " .. tostring(write_err), "EIO" end
  if not res then return nil, "restore: " .. err, code end
  if remote.restore_dir_missing(res) then
    return nil, "restore: " .. st.remote_dir .. " does not exist in the sandbox; nothing restored", "ENOENT"
  end
  local warning
  if res.code == 1 and not res.timed_out then
    warning = "restore: the sandbox's tar reported: " .. remote.tail(res.stderr) -- e.g. a file changed as read
  elseif res.code ~= 0 or res.timed_out then
    return nil, "restore: " .. remote.failure("reading " .. st.remote_dir .. " from the sandbox", res), "EIO"
  end
  return { received = res.received or written, warning = warning }
end

-- The local snapshot for the merge: leftover temp files removed, and paths a killed restore had removed
-- (state.pending_removals) seen as the baseline had them, so the rerun finishes the same plan. Like a
-- delta prepare, the walk reads only the files whose lstat moved since the state's quick records.
local function local_snapshot(ws, matcher, st, result)
  local snap, names, info = snapshot.take(ws, { matcher = matcher, known = st.local_stat })
  if not snap then return nil, names, info end
  for _, rel in ipairs(info.temps) do
    local removed, err = core.fs_safe_remove(ws, rel)
    if not removed then result.warnings[#result.warnings + 1] = "restore: leftover temp file kept: " .. err end
  end
  result.hashed_files = info.hashed
  local pending = st.pending_removals
  if type(pending) == "table" then
    table.sort(pending)
    for _, rel in ipairs(pending) do
      local parent = util.parent_of(rel)
      if snap[rel] == nil and st.baseline[rel] and (not parent or (snap[parent] and snap[parent].kind == "dir")) then
        snap[rel] = st.baseline[rel]
      end
    end
  end
  return snap
end

local function apply(ws, spool, plan, name_of, max_bytes, result)
  local writes, chmods = {}, {}
  for _, a in ipairs(plan.actions) do
    if a.op == "remove" or a.op == "rmdir" then
      local ok, err, code = core.fs_safe_remove(ws, a.path)
      if not ok then
        if a.op == "rmdir" and code == "ENOTEMPTY" then
          result.warnings[#result.warnings + 1] = a.path .. ": kept (holds excluded content)"
        else
          return nil, "restore: " .. err, code
        end
      end
    elseif a.op == "mkdir" then
      local ok, err, code = core.fs_safe_mkdir(ws, a.path, a.mode)
      if not ok then return nil, "restore: " .. err, code end
    elseif a.op == "write" then
      writes[#writes + 1] = a
    elseif a.op == "chmod" then
      chmods[#chmods + 1] = a
    end
  end
  -- one extract pass per round: a source written to two places needs two passes
  while #writes > 0 do
    local xplan, later, n = {}, {}, 0
    for _, a in ipairs(writes) do
      local name = name_of[a.from]
      if xplan[name] then
        later[#later + 1] = a
      else
        -- the sha256 the guard saw is checked again before each rename
        xplan[name] = { dest = a.path, mode = a.entry.mode or 420, sha256 = a.entry.sha256 }
        n = n + 1
      end
    end
    local count, err, code = core.tar_extract(spool, ws, xplan, { max_bytes = max_bytes })
    if not count then return nil, "restore: " .. err, code end
    if count ~= n then return nil, string.format("restore: wrote %d of %d entries", count, n), "EIO" end
    writes = later
  end
  for _, a in ipairs(chmods) do
    local ok, err, code = core.fs_safe_chmod(ws, a.path, a.mode)
    if not ok then return nil, "restore: " .. err, code end
  end
  return true
end

local function refusal(checked, result)
  for _, r in ipairs(checked.refused) do result.refused[#result.refused + 1] = r.name .. ": " .. r.reason end
  local first = checked.refused[1]
  return nil, "restore refused: " .. first.name .. ": " .. first.reason, "EPERM", result
end

-- Check the received entries and plan the merge: plan, the remote snapshot and entry names by path; or
-- nil, message, code[, partial result].
local function merge_plan(ws, entries, st, opts, result)
  local matcher, merr, mcode = excludes.checked(st.excludes, "restore")
  if not matcher then return nil, merr, mcode end
  local skip_top = {}
  for _, n in ipairs(st.preserve) do skip_top[n] = true end
  skip_top[remote.RUNTIME_DIR] = true
  local checked = guard.check(entries, { workspace = ws, matcher = matcher, skip_top = skip_top,
    baseline = st.baseline, allow_outside_symlinks = opts.allow_outside_symlinks })
  if #checked.refused > 0 then return refusal(checked, result) end
  local remote_snap = guard.snapshot(checked)
  local localsnap, lerr, lcode = local_snapshot(ws, matcher, st, result)
  if not localsnap then return nil, "restore: " .. lerr, lcode end
  local plan, perr, pcode = merge.plan(st.baseline, localsnap, remote_snap)
  if not plan then return nil, "restore: " .. perr, pcode end
  local name_of = {}
  for rel, e in pairs(checked.entries) do name_of[rel] = e.name end
  return plan, remote_snap, name_of
end

local function concat_sorted(a, b)
  return util.sorted(table.move(b, 1, #b, #a + 1, table.move(a, 1, #a, 1, {})))
end

local function add_plan(result, plan)
  result.changed = concat_sorted(plan.take, plan.mkdirs)
  result.deleted = concat_sorted(plan.delete, plan.rmdirs)
  result.conflicts = util.sorted(table.move(plan.conflict_paths, 1, #plan.conflict_paths, 1, {}))
  result.conflict_copies = {}
  for _, c in ipairs(plan.conflicts) do result.conflict_copies[c.path] = c.remote_copy end
  result.kept = plan.keep
end

-- Receive, check, merge and apply, then record the new baseline. Returns the result or nil, message, code[,
-- partial result].
local function pull(job, sb, spool)
  local opts, st, result = job.opts, job.st, job.result
  local max_bytes = opts.max_bytes or M.DEFAULT_MAX_BYTES
  local got, gerr, gcode = receive(sb, st, spool, opts.max_stream_bytes or max_bytes + SPOOL_SLACK, job.progress)
  if not got then return nil, gerr, gcode, result end
  result.bytes_received = got.received
  if got.warning then result.warnings[#result.warnings + 1] = got.warning end
  job.progress:phase("finalize")
  local entries, terr, tcode = core.tar_scan(spool, { max_bytes = max_bytes })
  if not entries then
    if tcode == "EFBIG" then return nil, "restore refused: " .. terr, "EFBIG", result end
    return nil, "restore: bad archive from the sandbox: " .. terr, tcode, result
  end
  local plan, remote_snap, name_of = merge_plan(job.ws, entries, st, opts, result)
  if not plan then return nil, remote_snap, name_of, result end
  local pending = {}
  for _, a in ipairs(plan.actions) do
    if a.op == "remove" or a.op == "rmdir" then pending[#pending + 1] = a.path end
  end
  if #pending > 0 then
    st.pending_removals = pending
    local wrote, werr, wcode = state_file.write(job.path, job.redact_record(st))
    if not wrote then return nil, "restore: " .. werr, wcode end
  end
  local applied, xerr, xcode = apply(job.ws, spool, plan, name_of, max_bytes, result)
  if not applied then return nil, xerr, xcode, result end
  st.pending_removals, st.baseline, st.restored_at = nil, remote_snap, os.time()
  local wrote, werr, wcode = state_file.write(job.path, job.redact_record(st))
  if not wrote then return nil, "restore: " .. werr, wcode end
  add_plan(result, plan)
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
  local sb, provider_string, handle = attach.open(opts.sb or st.provider, opts.on_exec, "ferry.restore: opts.sb")
  if not sb then return nil, "restore: " .. provider_string, handle end
  local ctx = adapters.context({ sb = sb, workspace = job.ws, remote_dir = st.remote_dir,
    runtime_dir = st.runtime_dir, adapter = adapter.name, asset_dirs = st.assets, provider = provider_string,
    state = job.path, result = result, copy_back_credentials = opts.credentials == "copy-back" },
    job.redact_fn, job.progress)
  local spool_dir, serr, scode = core.fs_mkdtemp("ferry-restore-")
  if not spool_dir then
    handle.release()
    return nil, "restore: " .. serr, scode
  end
  local ok, r1, r2, r3, r4 = pcall(function()
    local hooked, herr = adapters.run_hook(adapter, "before_restore", ctx)
    if not hooked then return nil, "restore: " .. herr, "EHOOK" end
    local pulled, err, code, partial = pull(job, sb, spool_dir .. "/remote.tar")
    if not pulled then return nil, err, code, partial end
    local after, aferr = adapters.run_hook(adapter, "after_restore", ctx)
    if not after then result.warnings[#result.warnings + 1] = aferr end
    return result
  end)
  local removed, rerr = core.fs_remove_tree(spool_dir)
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
---   progress, secrets, on_exec   as for prepare (phases restore, finalize)
--- Returns {changed, deleted, conflicts (paths), conflict_copies = {path = copy}, kept, refused, warnings,
--- bytes_received, commands, hashed_files (local files read to hash: those whose lstat moved since the
--- state's quick records), credentials ({adapter, path, action = "copied"|"refused"|"skipped", reason} per
--- credential an adapter decided about), state, workspace, remote_dir, runtime_dir, provider} or nil, message, code[,
--- partial result with `refused` (one "<entry>: <reason>" per refused entry)].
--- Errors: "restore: another restore of <workspace> is running" EBUSY; "restore refused: <entry>: <reason>"
--- EPERM; "restore refused: archive exceeds the N byte limit at <entry>" and "restore refused: the sandbox
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
  local lock, lerr, lcode = core.fs_lock(path .. ".lock")
  if not lock then
    if lcode == "EBUSY" then return nil, "restore: another restore of " .. ws .. " is running", "EBUSY" end
    return nil, "restore: " .. lerr, lcode
  end
  local redact_fn, redact_record = state_file.redactor(opts.secrets)
  local job = { opts = opts, st = st, path = path, ws = ws, progress = opts.progress or progress_mod.QUIET,
    redact_fn = redact_fn, redact_record = redact_record }
  job.result = { state = path, workspace = ws, remote_dir = st.remote_dir, runtime_dir = st.runtime_dir,
    provider = st.provider, changed = {}, deleted = {}, conflicts = {}, refused = {}, warnings = {},
    credentials = {}, bytes_received = 0, commands = 0, hashed_files = 0 }
  local ok, r1, r2, r3, r4 = pcall(restore_locked, job)
  lock:unlock()
  if not ok then error(r1, 0) end
  if not r1 then return nil, redact_fn(r2), r3, r4 and redact_record(r4) end
  return redact_record(r1)
end

return M
