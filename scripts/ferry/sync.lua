--- ferry.sync: the workspace into the sandbox's remote dir, in one command: a full sync (clear the remote dir
-- but the preserved names, extract one tar stream of the workspace) or, from an earlier prepare's state, a
-- delta (one listing command, then one command that deletes what should go and extracts what should come;
-- see ferry.delta). The tar stream is made in-process (core.tar_writer), hashing what it sends; the writer is
-- made before the command runs, so a workspace it cannot read fails before the sandbox changes.
local core = require "ferry.core"
local delta = require "ferry.delta"
local remote = require "ferry.remote"
local snapshot = require "ferry.snapshot"
local transfer = require "ferry.transfer"

local M = {}

local MAX_DELTA_SCRIPT = 96 * 1024 -- the script travels as one argument (Linux allows 128 KiB)

-- The baseline holds what the sandbox received: each sent file gets the SHA-256 of the bytes the stream
-- carried (a file changed since the walk included), and a file the stream left out (it vanished or stopped
-- being a file before it was sent; the writer warned) is no file ferry sent, so it leaves the snapshot.
local function record_digests(snap, names, digests)
  for _, rel in ipairs(names) do
    local e = snap[rel]
    if e and e.kind == "file" then
      e.sha256 = digests[rel]
      if not e.sha256 then snap[rel] = nil end
    end
  end
end

-- The reader of the command's stdin: job.inputs' members (ferry's own files for the runtime dir) in front of
-- the tree's stream; nil when there is nothing to send. Returns it and a function giving the members' bytes.
local function stdin_reader(job, writer)
  local tree = writer and function() return writer:read() end
  if not (job.inputs and job.inputs.wrap) then return tree, function() return 0 end end
  return job.inputs.wrap(tree)
end

-- One command: `head` (clearing or deleting), the tar stream of `names` extracted (none when empty) with
-- job.inputs' members, job.inputs' lines, the marker and the listing. Returns {bytes, warnings, listed,
-- recorded = rel -> record | nil, stderr} or nil, message, code.
local function send_tree(sb, job, head, names)
  local writer, werr, wcode
  if #names > 0 then
    writer, werr, wcode = core.tar_writer(job.ws, names, { hash = true })
    if not writer then return nil, "prepare: cannot read the workspace: " .. werr, wcode end
  end
  local inputs = job.inputs
  job.progress:phase("sync", snapshot.tar_estimate(job.snap, names) + (inputs and inputs.bytes or 0))
  local binary = sb:is_binary()
  local read, input_bytes = stdin_reader(job, writer)
  local script = remote.sync_script(job.remote_dir, { first = job.first_line,
    head = job.head_lines and head .. "\n" .. job.head_lines or head, extract = read ~= nil,
    after = inputs and inputs.after, keep = job.keep, patterns = job.patterns, binary = binary })
  local stream = read and transfer.guarded(read)
  local sent = 0
  local res, err, code = sb:pipe_in(script, stream and stream.read or "", {
    what = "sync to " .. job.remote_dir,
    on_progress = function(n)
      job.progress:advance(n - sent)
      sent = n
    end,
  })
  local synced, digests = { bytes = input_bytes(), warnings = {}, stderr = res and res.stderr }, {}
  if writer then
    synced.bytes, synced.warnings, digests = synced.bytes + writer:bytes(), writer:warnings(), writer:digests()
    writer:close()
  end
  if stream and stream.failure then return nil, "prepare: reading the workspace: " .. stream.failure, "EIO" end
  if not res then return nil, "prepare: " .. err, code end
  if res.code ~= 0 or res.timed_out then
    return nil, "prepare: " .. remote.failure("sync to " .. job.remote_dir, res), "EIO"
  end
  record_digests(job.snap, names, digests)
  local out = res.stdout or ""
  -- a listing that does not decode or parse is left out: the next prepare is a full sync
  if not binary then out = core.b64_decode(out) or "" end
  synced.listed = remote.parse_listing(out)
  synced.recorded = synced.listed and delta.recorded_stats(synced.listed)
  return synced
end

-- The remote tree with hashes of what changed since the marker, or nil and why not.
local function list_remote(sb, remote_dir, keep, patterns)
  local parts = {}
  local res, err = sb:pipe_out(remote.list_script(remote_dir, keep, patterns),
    function(chunk) parts[#parts + 1] = chunk end, { what = "listing " .. remote_dir })
  if not res then return nil, err end
  if res.code ~= 0 or res.timed_out then return nil, remote.failure("listing " .. remote_dir, res) end
  local listed = remote.parse_listing(table.concat(parts))
  if not listed then return nil, "listing " .. remote_dir .. ": malformed output" end
  return listed
end

-- A delta sync, or nil and why it cannot be done (then the full sync runs); errors after the sandbox
-- changed are returned as nil, nil, message, code.
local function delta_sync(sb, job, base)
  local listed, why = list_remote(sb, job.remote_dir, job.keep, job.patterns)
  if not listed then return nil, why end
  local plan = delta.plan(listed, job.snap, job.names, base)
  local head = remote.delete_lines(plan.delete)
  if #head > MAX_DELTA_SCRIPT then return nil, #plan.delete .. " paths to delete (the script would be too long)" end
  local synced, err, code = send_tree(sb, job, head, plan.send)
  if not synced then return nil, nil, err, code end
  -- the listing taken after the delta must show the local tree (a race with the sandbox, or a bug, would
  -- not): else the full sync puts it right
  local odd = synced.listed and delta.disagreement(synced.listed, job.snap)
  if odd then return nil, "after the delta, " .. odd .. " differed in the sandbox" end
  synced.delta, synced.delta_files, synced.delta_deleted = true, plan.changed, #plan.delete
  return synced
end

--- Sync the workspace: a delta from the earlier prepare's state `base` (ferry.delta.usable_base's) when it
--- fits, else a full sync (clear all but the preserved names, send everything).
---@param sb table  the sandbox
---@param job table  ws, snap, names (the local snapshot and its walk order), remote_dir, keep (preserved
---                  names), patterns (excludes), progress, first_line (run first in the sync command),
---                  head_lines (more lines run before the extraction, or nil), inputs (nil, or files for
---                  the runtime dir in the same command: {wrap(read_tree) -> read, bytes (the members in
---                  front of the tree's stream; nil when there is no file), after (lines run in a subshell
---                  after the extraction), bytes (an estimate)})
---@param base table|nil
---@param fallback string|nil  why there is no base
---@return table|nil synced  {bytes, warnings (the tar writer's), recorded (the listing's records, nil when
---                          the sandbox could not list), stderr (of the sync command), delta = true|false,
---                          delta_files, delta_deleted, delta_fallback (why an earlier state was not used)}
---@return string|nil err, string|nil code
function M.run(sb, job, base, fallback)
  if base then
    local synced, why, err, code = delta_sync(sb, job, base)
    if synced then return synced end
    if err then return nil, err, code end
    fallback = why
  end
  local synced, err, code = send_tree(sb, job, remote.clear_lines(job.keep), job.names)
  if not synced then return nil, err, code end
  synced.delta, synced.delta_fallback = false, fallback
  return synced
end

return M
