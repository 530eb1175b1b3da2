--- ferry.receive: what restore receives from the sandbox. The remote workspace comes as one tar stream
-- (ferry.remote's restore script) into a spool file; the sandbox's tar exit code and warnings are judged
-- (a non-zero exit is never taken as success); the files its tar read while they changed (GNU tar's "file
-- changed as we read it", "File shrank by N bytes; padding with zeros") are fetched again once, by one more
-- command, and any still torn are left out and reported; then the archive is scanned into a tree
-- (core.tar_scan_tree, with ferry.guard's options).
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

local function scan(spool, opts)
  local tree, info, code = core.tar_scan_tree(spool, opts.scan)
  if tree then return tree, info end
  if code == "EFBIG" then return nil, "restore refused: " .. info, "EFBIG" end
  return nil, "restore: bad archive from the sandbox: " .. info, code
end

-- The torn files' rels (sorted), from the names tar reported: only files carry bytes that can be torn.
local function torn_files(names, tree)
  local rels, seen = {}, {}
  for _, name in ipairs(names) do
    local rel = guard.normalise(name)
    local e = rel and not seen[rel] and tree:get(rel)
    if e and e.kind == "file" then
      seen[rel] = true
      rels[#rels + 1] = rel
    end
  end
  table.sort(rels)
  return rels
end

-- Fetch the torn files again. Returns the second archive's tree (nil when the second read failed) and
-- the rels still torn (all of them when it failed).
local function refetch(sb, st, spool_dir, rels, opts)
  local script = remote.refetch_script(st.remote_dir, rels)
  if not script then return nil, rels end
  local what = "reading " .. #rels .. " changed file(s) again from " .. st.remote_dir
  local spool = spool_dir .. "/again.tar"
  local res = stream(sb, script, what, spool, opts.limit, opts.progress)
  local names = res and judged(res, what)
  local again = names and scan(spool, opts)
  if not again then return nil, rels end
  local torn_again = {}
  for _, name in ipairs(names) do
    local rel = guard.normalise(name)
    if rel then torn_again[rel] = true end
  end
  local still = {}
  for _, rel in ipairs(rels) do -- torn again, or no file any more: the host keeps its version
    local e = again:get(rel)
    if e and (e.kind ~= "file" or torn_again[rel]) then still[#still + 1] = rel end
  end
  return again, still
end

-- The torn files into the tree: those that came back whole take the second read's entry (read from its
-- spool, under its name: `from`), those gone from the sandbox since leave, those still torn leave too
-- (restore then keeps the host's version).
local function mend(tree, torn, again, still, spool)
  local from = {}
  local torn_still = {}
  for _, rel in ipairs(still) do torn_still[rel] = true end
  for _, rel in ipairs(torn) do
    local e = again and not torn_still[rel] and again:get(rel)
    local at = tree:get(rel).ino -- its place in the first archive, which ferry.guard orders by
    tree:remove(rel)
    if e and e.kind == "file" then
      tree:add(rel, { kind = "file", mode = e.mode, size = e.size, sha256 = e.sha256, mtime_ns = e.mtime_ns, ino = at })
      from[rel] = { spool = spool, name = e.name or rel }
    end
  end
  return from
end

--- Receive the remote workspace of state `st` into `spool_dir`. opts: limit (bytes of the stream), scan
--- (core.tar_scan_tree's options: ferry.guard.scan_options), progress, script (ferry.remote.restore_script's
--- opts: lines run first in the same command, and the members they leave). Returns {tree (the scan's),
--- info (its info: refusals, members), spool (the archive the tree's entries are read from), from (rel ->
--- {spool, name} of the entries read from another archive: files fetched again), received (bytes), torn
--- (rels of the files read while they changed, twice, left out)} or nil, message, code.
---@param sb table
---@param st table
---@param spool_dir string
---@param opts table
---@return table|nil got, string|nil err, string|nil code
function M.pull(sb, st, spool_dir, opts)
  opts.progress:phase("restore")
  local what = "reading " .. st.remote_dir .. " from the sandbox"
  local spool = spool_dir .. "/remote.tar"
  local res, received, rcode = stream(sb, remote.restore_script(st.remote_dir, st.preserve, st.excludes, opts.script),
    "restore from " .. st.remote_dir, spool, opts.limit, opts.progress)
  if not res then return nil, received, rcode end
  if remote.restore_dir_missing(res) then
    return nil, "restore: " .. st.remote_dir .. " does not exist in the sandbox; nothing restored", "ENOENT"
  end
  local names, jerr, jcode = judged(res, what)
  if not names then return nil, jerr, jcode end
  opts.progress:phase("finalize")
  local tree, info, scode = scan(spool, opts)
  if not tree then return nil, info, scode end
  local torn, from = torn_files(names, tree), {}
  if #torn > 0 then
    local again, still = refetch(sb, st, spool_dir, torn, opts)
    from = mend(tree, torn, again, still, spool_dir .. "/again.tar")
    torn = still
  end
  return { tree = tree, info = info, spool = spool, from = from, received = received, torn = torn }
end

return M
