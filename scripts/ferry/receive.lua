--- ferry.receive: what restore receives from the sandbox. The remote workspace comes as one tar stream
-- (ferry.remote's restore script) into a spool file; the sandbox's tar exit code and warnings are judged
-- (a non-zero exit is never taken as success); the files its tar read while they changed (GNU tar's "file
-- changed as we read it", "File shrank by N bytes; padding with zeros") are fetched again once, by one more
-- command, and any still torn are left out and reported; then the entries are scanned (core.tar_scan).
local core = require "ferry.core"
local guard = require "ferry.guard"
local remote = require "ferry.remote"

local M = {}

-- Stream one sandbox command's stdout into the file `spool`, at most `limit` bytes. Returns the command's
-- result and the bytes received, or nil, message, code.
local function stream(sb, script, what, spool, limit, progress)
  local f, ferr = io.open(spool, "wb")
  if not f then return nil, "restore: spool " .. spool .. ": " .. tostring(ferr), "EIO" end
  local written, overflow, write_err, reported = 0, false, nil, 0
  local res, err, code = sb:pipe_out(script, function(chunk)
    if overflow or write_err then return end
    written = written + #chunk
    if written > limit then
      overflow = true
      return
    end
    local ok, werr = f:write(chunk)
    if not ok then write_err = werr end
  end, {
    what = what,
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
  return res, res.received or written
end

-- The names tar reported torn, or nil, message, code when its exit says anything else went wrong.
local function judged(res, what)
  local torn, other = remote.torn_reports(res.stderr)
  if res.timed_out or (res.code ~= 0 and res.code ~= 1) or (res.code == 1 and (#other > 0 or #torn == 0)) then
    return nil, "restore: " .. remote.failure(what, res), "EIO"
  end
  return torn
end

local function scan(spool, max_bytes)
  local entries, err, code = core.tar_scan(spool, { max_bytes = max_bytes })
  if entries then
    for _, e in ipairs(entries) do e.spool = spool end
    return entries
  end
  if code == "EFBIG" then return nil, "restore refused: " .. err, "EFBIG" end
  return nil, "restore: bad archive from the sandbox: " .. err, code
end

-- rel -> index of the file entries among `entries`.
local function files_by_rel(entries)
  local at = {}
  for i, e in ipairs(entries) do
    local rel = e.kind == "file" and guard.normalise(e.name)
    if rel and rel ~= "" then at[rel] = i end
  end
  return at
end

-- The torn files' rels (sorted), from the names tar reported: only files carry bytes that can be torn.
local function torn_files(names, at)
  local rels, seen = {}, {}
  for _, name in ipairs(names) do
    local rel = guard.normalise(name)
    if rel and at[rel] and not seen[rel] then
      seen[rel] = true
      rels[#rels + 1] = rel
    end
  end
  table.sort(rels)
  return rels
end

-- Fetch the torn files again. Returns rel -> entry for those that came back whole (false for one gone from
-- the sandbox since), and the rels still torn (all of them when the second read failed).
local function refetch(sb, st, spool_dir, rels, opts)
  local script = remote.refetch_script(st.remote_dir, rels)
  if not script then return {}, rels end
  local what = "reading " .. #rels .. " changed file(s) again from " .. st.remote_dir
  local spool = spool_dir .. "/again.tar"
  local res = stream(sb, script, what, spool, opts.limit, opts.progress)
  local names = res and judged(res, what)
  local entries = names and scan(spool, opts.max_bytes)
  if not entries then return {}, rels end
  local by_rel, torn_again = {}, {}
  for _, e in ipairs(entries) do
    local rel = guard.normalise(e.name)
    if rel and rel ~= "" then by_rel[rel] = e end
  end
  for _, name in ipairs(names) do
    local rel = guard.normalise(name)
    if rel then torn_again[rel] = true end
  end
  local whole, still = {}, {}
  for _, rel in ipairs(rels) do
    local e = by_rel[rel]
    if e and e.kind == "file" and torn_again[rel] then
      still[#still + 1] = rel
    else
      whole[rel] = e or false
    end
  end
  return whole, still
end

--- Receive the remote workspace of state `st` into `spool_dir`. opts: limit (bytes of the stream), max_bytes
--- (content of the archive), progress, script (ferry.remote.restore_script's opts: lines run first in the
--- same command, and the members they leave). Returns {entries (core.tar_scan's list, each with `spool`: the file
--- it is read from), received (bytes), torn (rels of the files read while they changed, twice, left out)}
--- or nil, message, code.
---@param sb table
---@param st table
---@param spool_dir string
---@param opts table
---@return table|nil got, string|nil err, string|nil code
function M.pull(sb, st, spool_dir, opts)
  opts.progress:phase("restore")
  local what = "reading " .. st.remote_dir .. " from the sandbox"
  local res, received, rcode = stream(sb, remote.restore_script(st.remote_dir, st.preserve, st.excludes, opts.script),
    "restore from " .. st.remote_dir, spool_dir .. "/remote.tar", opts.limit, opts.progress)
  if not res then return nil, received, rcode end
  if remote.restore_dir_missing(res) then
    return nil, "restore: " .. st.remote_dir .. " does not exist in the sandbox; nothing restored", "ENOENT"
  end
  local names, jerr, jcode = judged(res, what)
  if not names then return nil, jerr, jcode end
  opts.progress:phase("finalize")
  local entries, serr, scode = scan(spool_dir .. "/remote.tar", opts.max_bytes)
  if not entries then return nil, serr, scode end
  local at = files_by_rel(entries)
  local torn = torn_files(names, at)
  if #torn > 0 then
    local whole, still = refetch(sb, st, spool_dir, torn, opts)
    for rel, e in pairs(whole) do entries[at[rel]] = e end
    for _, rel in ipairs(still) do entries[at[rel]] = false end
    torn = still
    local kept = {}
    for _, e in ipairs(entries) do
      if e then kept[#kept + 1] = e end
    end
    entries = kept
  end
  return { entries = entries, received = received, torn = torn }
end

return M
