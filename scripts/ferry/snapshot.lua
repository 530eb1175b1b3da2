--- ferry.snapshot: walk a local directory tree and describe every path the runtime moves.
--
-- A snapshot maps a '/'-separated relative path to {kind = "file"|"dir"|"symlink", mode = permission bits
-- (& 0777), size, sha256 (files), target (symlinks)} — the shape ferry.merge compares. The walk never follows
-- a symlink, never enters an excluded directory, and leaves out what a tar stream cannot carry (fifos,
-- sockets, devices: listed in info.skipped) and the temp files or links a killed ferry left behind: a name
-- core.TEMP_PREFIX .. "<run token>-<hex>" whose run token the caller says is a dead run's (opts.temp_tokens,
-- from ferry.workspace_lock), listed in info.temps so restore can clean them up. Any other name, one that
-- only looks like a temp name included, is the user's.
-- It also defines the quick record, "<quick key> <sha256>", that lets a later walk trust a file's digest
-- without reading the file.
local core = require "ferry.core"

local M = {}

local MODE_MASK = 511 -- 0777: setuid, setgid and sticky never travel
local TEMP_NAME = "^" .. core.TEMP_PREFIX:gsub("%p", "%%%0") .. "(%x+)%-%x+$"

--- The run token in the name of a temp file made by core.fs_safe_* or core.tar_extract
--- (".ferry-tmp-<16 hex run token>-<16 hex>"), or nil for any other name.
---@param name string  a basename
---@return string|nil
function M.temp_token(name)
  local token = name:match(TEMP_NAME)
  return token and #token == #core.TEMP_TOKEN and #name == #core.TEMP_PREFIX + 2 * #core.TEMP_TOKEN + 1 and token
    or nil
end

--- True for the name of a temp file of a run whose token is in `tokens` (a set; `true` for any run).
---@param name string  a basename
---@param tokens table|boolean|nil
function M.is_temp_name(name, tokens)
  local token = tokens and M.temp_token(name)
  return token ~= nil and (tokens == true or tokens[token] == true)
end

local function join(root, rel)
  if rel == "" then return root end
  return root .. "/" .. rel
end

--- The quick-check key of a file's lstat (or stat): permission bits, size, inode and mtime, the mtime exact
--- (%.17g gives back the same double). rsync's quick check, plus the inode: a file renamed over another
--- can bring an old mtime along.
---@param st table  core.fs_lstat's table
---@return string
function M.quick_key(st)
  return string.format("%o %d %d %.17g", st.mode & MODE_MASK, st.size, st.ino, st.mtime)
end

--- The key of what is at a path, as core.tar_extract's `expect` and core.fs_safe_remove compare it right
--- before they replace or remove it: "<kind> <quick key>".
---@param st table  core.fs_lstat's table
---@return string
function M.expect_key(st)
  return st.kind .. " " .. M.quick_key(st)
end

--- The quick record of a file: its quick key and the sha256 of its content, "<quick key> <sha256>".
---@param st table  core.fs_lstat's table
---@param sha256 string  64 hex digits
---@return string
function M.quick_record(st, sha256)
  return M.quick_key(st) .. " " .. sha256
end

-- The sha256 a quick record vouches for, when `st` still gives its key.
local function vouched_sum(record, st)
  if type(record) ~= "string" then return nil end
  local key = M.quick_key(st)
  if #record ~= #key + 65 or record:byte(#key + 1) ~= 32 or record:find(key, 1, true) ~= 1
      or record:find("%X", #key + 2) then
    return nil
  end
  return record:sub(#key + 2)
end

local function describe(path, rel, st, state)
  local entry = { kind = st.kind, mode = st.mode & MODE_MASK }
  if state.stats and st.kind ~= "dir" then state.stats[rel] = st end
  if st.kind == "file" then
    entry.size = st.size
    if state.hash then
      local sum = vouched_sum(state.known[rel], st)
      if not sum then
        local err, code
        sum, err, code = core.sha256_file(path)
        if not sum then return nil, err, code end
        state.info.hashed = state.info.hashed + 1
      end
      entry.sha256 = sum
    end
  elseif st.kind == "symlink" then
    local target, err, code = core.fs_readlink(path)
    if not target then return nil, err, code end
    entry.target = target
    entry.mode = nil
  end
  return entry
end

local COUNTERS = { file = "files", dir = "dirs", symlink = "symlinks" } -- the kinds a tar stream carries

-- lstat, or with follow_symlinks a stat that falls back to lstat for a dangling link (archived as the link).
local function inspect(path, follow)
  if not follow then return core.fs_lstat(path) end
  local st, err, code = core.fs_stat(path)
  if not st and code == "ENOENT" then return core.fs_lstat(path) end
  return st, err, code
end

local function walk(root, rel, state)
  local names, err, code = core.fs_readdir(join(root, rel))
  if not names then
    if code == "ENOENT" or code == "ENOTDIR" then return true end -- vanished while we walked
    return nil, err, code
  end
  for _, name in ipairs(names) do
    local child = rel == "" and name or rel .. "/" .. name
    local path = join(root, child)
    local st, serr, scode = inspect(path, state.follow)
    if not st then
      if scode ~= "ENOENT" then return nil, serr, scode end
    elseif (st.kind == "file" or st.kind == "symlink") and M.is_temp_name(name, state.temp_tokens) then
      state.info.temps[#state.info.temps + 1] = child
    elseif not (state.matcher and state.matcher(child, st.kind == "dir")) then
      if not COUNTERS[st.kind] then
        state.info.skipped[#state.info.skipped + 1] = child
      else
        local entry, derr, dcode = describe(path, child, st, state)
        if not entry then
          if dcode ~= "ENOENT" then return nil, derr, dcode end
        else
          state.snap[child] = entry
          state.names[#state.names + 1] = child
          local counter = COUNTERS[st.kind]
          state.info[counter] = state.info[counter] + 1
          if st.kind == "file" then state.info.bytes = state.info.bytes + st.size end
          if st.kind == "dir" then
            local id = st.dev .. ":" .. st.ino
            if state.follow and state.open_dirs[id] then
              return nil, path .. ": symlink loop", "ELOOP"
            end
            state.open_dirs[id] = true
            local ok, werr, wcode = walk(root, child, state)
            state.open_dirs[id] = nil
            if not ok then return nil, werr, wcode end
          end
        end
      end
    end
  end
  return true
end

--- Snapshot the tree under `root` (a directory; a symlink to one is followed, nothing below it is).
---@param root string
---@param opts table|nil  matcher = fn(rel, is_dir) -> excluded (ferry.excludes.compile); hash = false to
---                       skip the SHA-256 of files; known = rel -> quick record (M.quick_records): a file
---                       whose lstat still gives the record's key takes its sha256 unread; stats = true
---                       keeps each file's and symlink's lstat table in info.stats; follow_symlinks = true
---                       describes (and enters) what each symlink points to, as core.tar_writer's
---                       follow_symlinks archives it; temp_tokens = set of run tokens whose temp files are
---                       leftovers (true: any run's)
---@return table|nil snapshot, string[]|string names_or_err, table|string info_or_code
--- names: every path in walk order (a directory before its contents), for core.tar_writer;
--- info: {files, dirs, symlinks, bytes, hashed (files read to hash), skipped = {rel...}, temps = {rel...},
--- stats = {rel -> lstat} with opts.stats (files and symlinks)}.
--- Errors: nil, "snapshot <root>: not a directory", "ENOTDIR" and the core's lstat/readdir/hash errors.
function M.take(root, opts)
  opts = opts or {}
  local st, err, code = core.fs_stat(root)
  if not st then return nil, "snapshot " .. root .. ": " .. err, code end
  if st.kind ~= "dir" then return nil, "snapshot " .. root .. ": not a directory", "ENOTDIR" end
  local state = {
    snap = {}, names = {}, matcher = opts.matcher, hash = opts.hash ~= false, follow = opts.follow_symlinks,
    known = type(opts.known) == "table" and opts.known or {}, stats = opts.stats and {} or nil,
    temp_tokens = opts.temp_tokens,
    open_dirs = { [st.dev .. ":" .. st.ino] = true },
    info = { files = 0, dirs = 0, symlinks = 0, bytes = 0, hashed = 0, skipped = {}, temps = {} },
  }
  local ok, werr, wcode = walk(root, "", state)
  if not ok then return nil, "snapshot " .. root .. ": " .. werr, wcode end
  state.info.stats = state.stats
  return state.snap, state.names, state.info
end

-- A file can be written again within the clock tick of its last write and keep its mtime (the racy-git
-- problem; some filesystems keep 2 s). A write after the walk began gets an mtime past this margin.
local RACY_SECONDS = 2
M.RACY_SECONDS = RACY_SECONDS

--- Quick records of the files of `snap` whose sha256 a later walk may trust (opts.known of M.take):
--- rel -> "<quick key> <sha256>" of each file with a sha256 and a lstat table in `stats` (info.stats of
--- the walk that made `snap`), except a file modified less than 2 s before `taken_at` (the os.time() taken
--- before that walk) or later: a change made in the same clock tick could leave its mtime as it was, so
--- such a file is hashed again.
---@param snap table
---@param stats table
---@param taken_at integer
---@return table
function M.quick_records(snap, stats, taken_at)
  local out = {}
  for rel, st in pairs(stats) do
    local e = snap[rel]
    if e and e.kind == "file" and e.sha256 and st.mtime < taken_at - RACY_SECONDS then
      out[rel] = M.quick_record(st, e.sha256)
    end
  end
  return out
end

--- The approximate size of a tar stream of `snap`, or of its entries named in `names` (headers, padded
--- contents, end blocks): a progress total.
---@param snap table
---@param names string[]|nil
---@return integer
function M.tar_estimate(snap, names)
  local total = 1024
  local function add(rel, e)
    total = total + 512 + (#rel > 100 and 1024 or 0)
    if e.kind == "file" then total = total + ((e.size + 511) // 512) * 512 end
  end
  if names then
    for _, rel in ipairs(names) do add(rel, snap[rel]) end
  else
    for rel, e in pairs(snap) do add(rel, e) end
  end
  return total
end

--- The absolute path with every symlink resolved and no '.' or '..' components (like realpath(3)).
---@param path string  an absolute path
---@return string|nil resolved, string|nil err, string|nil code
function M.realpath(path)
  local pending, out, hops = {}, {}, 0
  for c in path:gmatch("[^/]+") do pending[#pending + 1] = c end
  local i = 1
  while i <= #pending do
    local c = pending[i]
    i = i + 1
    if c == ".." then
      out[#out] = nil
    elseif c ~= "." then
      local candidate = "/" .. table.concat(out, "/") .. (#out > 0 and "/" or "") .. c
      local st, err, code = core.fs_lstat(candidate)
      if not st then return nil, err, code end
      if st.kind == "symlink" then
        hops = hops + 1
        if hops > 40 then return nil, "realpath " .. path .. ": too many symlinks", "ELOOP" end
        local target, rerr, rcode = core.fs_readlink(candidate)
        if not target then return nil, rerr, rcode end
        if target:sub(1, 1) == "/" then out = {} end
        local rest = table.move(pending, i, #pending, 1, {})
        pending, i = {}, 1
        for t in target:gmatch("[^/]+") do pending[#pending + 1] = t end
        table.move(rest, 1, #rest, #pending + 1, pending)
      else
        out[#out + 1] = c
      end
    end
  end
  return "/" .. table.concat(out, "/")
end

--- Paths whose entries differ between two snapshots (kind, mode, sha256, target), sorted.
---@return string[]
function M.diff(a, b)
  local out, seen = {}, {}
  local function differs(x, y)
    if x == nil or y == nil then return x ~= y end
    return x.kind ~= y.kind or x.sha256 ~= y.sha256 or x.target ~= y.target or x.mode ~= y.mode
  end
  for rel, entry in pairs(a) do
    seen[rel] = true
    if differs(entry, b[rel]) then out[#out + 1] = rel end
  end
  for rel in pairs(b) do
    if not seen[rel] then out[#out + 1] = rel end
  end
  table.sort(out)
  return out
end

return M
