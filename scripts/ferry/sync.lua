--- ferry.sync: the workspace into the sandbox's remote dir: a full sync (clear the remote dir but the
-- preserved names, extract one tar stream of the workspace) in one command, or, from an earlier prepare's
-- state, a delta (ferry.delta): one listing command, started before the local walk so that both run at
-- once, then — only when something differs — one command that deletes what should go and extracts what
-- should come. The tar stream is made in-process (core.tar_writer) from the local tree, hashing what it
-- sends into it; the writer is made before the command runs, so a workspace it cannot read fails before the
-- sandbox changes.
local core = require "ferry.core"
local delta = require "ferry.delta"
local listing = require "ferry.listing"
local remote = require "ferry.remote"
local task = require "ferry.task"
local transfer = require "ferry.transfer"
local util = require "ferry.util"

local M = {}

local MAX_DELTA_SCRIPT = 96 * 1024 -- the script travels as one argument (Linux allows 128 KiB)
local TAR_HEADER = 512

-- The reader of the command's stdin: job.inputs' members (ferry's own files for the runtime dir) in front of
-- the tree's stream; nil when there is nothing to send. Returns it and a function giving the members' bytes.
local function stdin_reader(job, writer)
  local tree = writer and function() return writer:read() end
  if not (job.inputs and job.inputs.wrap) then return tree, function() return 0 end end
  return job.inputs.wrap(tree)
end

-- The files the writer left out (they vanished or stopped being files before they were sent; it warned)
-- are no files ferry sent: out of the tree, which becomes the baseline.
local function drop_unsent(tree, files)
  local gone = {}
  if files then
    for _, rel in ipairs(files) do
      local e = tree:get(rel)
      if e and e.kind == "file" and not e.sha256 then gone[#gone + 1] = rel end
    end
  else
    for rel, sha256 in tree:iter(nil, "sha256", "file") do
      if not sha256 then gone[#gone + 1] = rel end
    end
  end
  for _, rel in ipairs(gone) do tree:remove(rel) end
end

-- The sandbox's listing after the sync, as a tree (the recorded one overlaid with what changed when the
-- listing is incremental), or nil when the sandbox could not list or the listing cannot be read.
local function listed_after(finish, recorded)
  local listed, info = finish()
  if not listed then return nil end
  if not info.incremental then return listed end
  if not recorded then return nil end
  local now, unknown = delta.current(recorded, listed, info)
  if #unknown > 0 then return nil end
  return now
end

-- One command: `head` (clearing or deleting), the tar stream of the local tree's entries (those flagged
-- delta.SEND with `flagged`; none when `bytes` is false) with job.inputs' members, job.inputs' lines, then the
-- marker and the listing (of what changed after the marker `since` left, when given). Returns {bytes,
-- warnings, recorded (the sandbox's tree after it, or nil), sync_id, stderr} or nil, message, code.
local function send_tree(sb, job, opts)
  local writer, werr, wcode
  if opts.bytes then
    writer, werr, wcode = core.tar_writer(job.ws, job.tree, { hash = true, flagged = opts.flagged and delta.SEND })
    if not writer then return nil, "prepare: cannot read the workspace: " .. werr, wcode end
  end
  local inputs = job.inputs
  job.progress:phase("sync", (opts.bytes or 0) + (inputs and inputs.bytes or 0))
  local binary = sb:is_binary()
  local read, input_bytes = stdin_reader(job, writer)
  local id = util.unique_hex(16)
  local script = remote.sync_script(job.remote_dir, { first = opts.first, head = opts.head, extract = read ~= nil,
    after = inputs and inputs.after,
    tail = listing.record_lines(job.keep, job.patterns, binary, id, opts.since) })
  local stream = read and transfer.guarded(read)
  local sent = 0
  local on_stdout, finish = listing.reader(not binary)
  local res, err, code = sb:pipe_in(script, stream and stream.read or "", {
    what = "sync to " .. job.remote_dir,
    on_stdout = on_stdout,
    on_progress = function(n)
      job.progress:advance(n - sent)
      sent = n
    end,
  })
  local synced = { bytes = input_bytes(), warnings = {}, stderr = res and res.stderr }
  if writer then
    synced.bytes, synced.warnings = synced.bytes + writer:bytes(), writer:warnings()
    writer:close()
  end
  if stream and stream.failure then return nil, "prepare: reading the workspace: " .. stream.failure, "EIO" end
  if not res then return nil, "prepare: " .. err, code end
  if res.code ~= 0 or res.timed_out then
    return nil, "prepare: " .. remote.failure("sync to " .. job.remote_dir, res), "EIO"
  end
  if writer then drop_unsent(job.tree, opts.files) end
  -- a listing that does not decode or parse is left out: the next prepare is a full sync
  synced.recorded = listed_after(finish, opts.since and job.base_trees and job.base_trees.remote)
  synced.sync_id = synced.recorded and id
  return synced
end

-- The listing command: its tree and info, and its stderr (the install check's report); or nil and why not.
local function list_remote(sb, job, since)
  local script = listing.list_script(job.remote_dir, job.keep, job.patterns, { since = since,
    first = job.first_line, before = job.setup_lines })
  local on_chunk, finish = listing.reader(false)
  local res, err = sb:pipe_out(script, on_chunk, { what = "listing " .. job.remote_dir })
  if not res then return nil, err end
  if res.code ~= 0 or res.timed_out then return nil, remote.failure("listing " .. job.remote_dir, res) end
  local listed, info = finish()
  if not listed then return nil, "listing " .. job.remote_dir .. ": malformed output (" .. info .. ")" end
  return { listed = listed, info = info, stderr = res.stderr }
end

--- Start the listing of a delta from the state `base` (ferry.delta.usable_base's) in a task of its own, so
--- that it runs in the sandbox while the host walks the workspace. M.run waits for it.
---@param sb table
---@param job table  remote_dir, keep, patterns, first_line, setup_lines
---@param base table
function M.start_listing(sb, job, base)
  job.listing = task.spawn(list_remote, sb, job, base.sync.id)
end

--- Wait for a listing M.start_listing began (its failure is dropped: the caller is failing already).
---@param job table
function M.settle(job)
  if job.listing then pcall(task.wait_one, job.listing) end
  job.listing = nil
end

-- The delta's plan from the listing (ferry.delta), or nil and why not.
local function plan_delta(job, got)
  local trees, listed, info = job.base_trees, got.listed, got.info
  if info.incremental and listed:count() == 0 and not info.root_changed then
    -- the sandbox did not change since the marker: it holds the baseline (the remote tree is not read)
    return delta.plan { loc = job.tree, base = trees.baseline, recorded = trees.baseline, now = trees.baseline,
      unknown = {}, listed = listed }
  end
  local recorded, rerr = trees.load_remote()
  if not recorded then return nil, rerr or "the earlier sync did not list the sandbox" end
  local now, unknown = delta.current(recorded, listed, info)
  return delta.plan { loc = job.tree, base = trees.baseline, recorded = recorded, now = now, unknown = unknown,
    listed = listed }
end

-- A delta sync, or nil and why it cannot be done (then the full sync runs); errors after the sandbox
-- changed are returned as nil, nil, message, code.
local function delta_sync(sb, job)
  local ok, got, why = pcall(task.wait_one, job.listing)
  job.listing = nil
  if not ok then return nil, tostring(got) end
  if not got then return nil, why end
  job.stderr_before = got.stderr
  local trees = job.base_trees
  local plan, perr = plan_delta(job, got)
  if not plan then return nil, perr end
  local head = remote.delete_lines(plan.delete)
  if #head > MAX_DELTA_SCRIPT then return nil, #plan.delete .. " paths to delete (the script would be too long)" end
  if plan.changed == 0 and #plan.delete == 0 and not job.inputs then
    -- the sandbox holds the workspace already: no second command, and the marker stays the one recorded
    job.progress:phase("sync", 0)
    return { bytes = 0, warnings = {}, stderr = got.stderr, sync_id = job.base.sync.id, same_marker = true,
      delta = true, delta_files = 0, delta_deleted = 0 }
  end
  -- the listing after the sync says what changed since the marker: on top of the recorded tree; the
  -- baseline and the sandbox's tree before the sync are done with (their memory goes back now)
  if not trees.remote then
    local recorded, rerr = trees.load_remote()
    if not recorded then return nil, rerr or "the earlier sync did not list the sandbox" end
  end
  trees.baseline, got.listed = nil, nil
  collectgarbage()
  if job.git_head then head = head .. "\n" .. job.git_head end
  local synced, err, code = send_tree(sb, job, { head = head, flagged = true, files = plan.files,
    bytes = plan.changed > 0 and plan.bytes + TAR_HEADER * plan.changed, since = job.base.sync.id })
  if not synced then return nil, nil, err, code end
  trees.remote = nil
  collectgarbage()
  synced.stderr = (got.stderr or "") .. (synced.stderr or "")
  -- the listing taken after the delta must show the local tree (a race with the sandbox, or a bug, would
  -- not): else the full sync puts it right
  local odd = not synced.recorded and "the listing" or delta.disagreement(synced.recorded, job.tree)
  if odd then return nil, "after the delta, " .. odd .. " differed in the sandbox" end
  synced.delta, synced.delta_files, synced.delta_deleted = true, plan.changed, #plan.delete
  return synced
end

--- Sync the workspace: a delta from the earlier prepare's state when M.start_listing began one and it fits,
--- else a full sync (clear all but the preserved names, send everything).
---@param sb table  the sandbox
---@param job table  ws, tree (the local tree; with a delta base every file hashed), info (the walk's),
---                  remote_dir, keep (preserved names), patterns (excludes), progress, first_line (the
---                  install check), setup_lines (lines run first: clear the references, make the launch's
---                  dirs), git_head (lines of the git inputs run before the extraction, or nil), inputs
---                  (nil, or files for the runtime dir in the same command: {wrap(read_tree) -> read, bytes
---                  (the members in front of the tree's stream; nil when there is no file), after (lines run in
---                  a subshell after the extraction), bytes (an estimate)}), base (the earlier state) and
---                  base_trees ({baseline, remote}) with a listing
---@param fallback string|nil  why there is no delta base
---@return table|nil synced  {bytes, warnings (the tar writer's), recorded (the sandbox's tree after the sync,
---                          nil when it could not list), sync_id, stderr (of the commands), delta = true|false,
---                          delta_files, delta_deleted, delta_fallback (why an earlier state was not used),
---                          same_marker (no sync command ran: the marker and the recorded tree stay)}
---@return string|nil err, string|nil code
function M.run(sb, job, fallback)
  if job.listing then
    local synced, why, err, code = delta_sync(sb, job)
    if synced then return synced end
    if err then return nil, err, code end
    fallback = why -- (the flags a delta set mean nothing to the full sync, which streams every entry)
  end
  local head = remote.clear_lines(job.keep) .. "\n" .. job.setup_lines .. (job.git_head and "\n" .. job.git_head or "")
  local info = job.info
  local synced, err, code = send_tree(sb, job, { first = job.first_line, head = head,
    bytes = info.bytes + TAR_HEADER * (info.files + info.dirs + info.symlinks) + 1024 })
  if not synced then return nil, err, code end
  -- (the listing ran the setup lines too: the launch's notes are the full sync's, not twice)
  synced.stderr = (job.stderr_before or ""):gsub("ferry%-launch: [^\n]*\n?", "") .. (synced.stderr or "")
  synced.delta, synced.delta_fallback = false, fallback
  return synced
end

return M
