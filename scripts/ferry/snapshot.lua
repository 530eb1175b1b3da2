--- ferry.snapshot: a local directory tree as tables, for the small trees (assets, references), and the keys a
-- restore checks a host path against right before it writes there.
--
-- A snapshot maps a '/'-separated relative path to {kind = "file"|"dir"|"symlink", mode = permission bits
-- (& 0777), size, sha256 (files), target (symlinks)} — the shape ferry.merge compares. It is core.tree_walk's
-- walk (readdir and lstat in C): it never follows a symlink, never enters an excluded directory, and leaves
-- out what a tar stream cannot carry (fifos, sockets, devices: listed in info.skipped) and the temp files or
-- links a killed ferry left behind: a name core.TEMP_PREFIX .. "<run token>-<hex>" whose run token the caller
-- says is a dead run's (opts.temp_tokens, from ferry.workspace_lock), listed in info.temps so restore can
-- clean them up. Any other name, one that only looks like a temp name included, is the user's. The
-- workspace itself is walked into a tree (prepare, restore), never into tables.
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

--- The quick-check key of a file's lstat (or stat): permission bits, size, inode and mtime, the mtime exact
--- (%.17g gives back the same double). rsync's quick check, plus the inode: a file renamed over another
--- can bring an old mtime along.
---@param st table  core.fs_lstat's table, or a tree entry (mode, size, ino, mtime)
---@return string
function M.quick_key(st)
  return string.format("%o %d %d %.17g", st.mode & MODE_MASK, st.size or 0, st.ino, st.mtime)
end

--- The key of what is at a path, as core.tar_extract's `expect` and core.fs_safe_remove compare it right
--- before they replace or remove it: "<kind> <quick key>".
---@param st table  core.fs_lstat's table, or a tree entry
---@return string
function M.expect_key(st)
  return st.kind .. " " .. M.quick_key(st)
end

--- A tree entry (core.tree's get) as a snapshot entry.
---@param e table
---@return table
function M.entry(e)
  if e.kind == "symlink" then return { kind = "symlink", target = e.target } end
  local out = { kind = e.kind, mode = e.mode & MODE_MASK }
  if e.kind == "file" then out.size, out.sha256 = e.size, e.sha256 end
  return out
end

--- A tree as a snapshot to look up (never to iterate): view[rel] is M.entry of the tree's entry, or nil.
---@param tree table
---@return table
function M.view(tree)
  local cache = {}
  return setmetatable({}, { __index = function(_, rel)
    local e = cache[rel]
    if e == nil then
      local got = tree:get(rel)
      e = got and M.entry(got) or false
      cache[rel] = e
    end
    return e or nil
  end })
end

--- Snapshot the tree under `root` (a directory; a symlink to one is followed, nothing below it is).
---@param root string
---@param opts table|nil  matcher = fn(rel, is_dir) -> excluded (ferry.excludes.compile); hash = false to
---                       skip the SHA-256 of files; follow_symlinks = true describes (and enters) what each
---                       symlink points to, as core.tar_writer's follow_symlinks archives it; temp_tokens = set
---                       of run tokens whose temp files are leftovers (true: any run's)
---@return table|nil snapshot, string[]|string names_or_err, table|string info_or_code
--- names: every path in walk order (a directory before its contents), for core.tar_writer;
--- info: {files, dirs, symlinks, bytes, hashed (files read to hash), skipped = {rel...}, temps = {rel...}}.
--- Errors: nil, "snapshot <root>: not a directory", "ENOTDIR" and the walk's errors after "snapshot <root>: ".
function M.take(root, opts)
  opts = opts or {}
  local t, info, code = core.tree_walk(root, { exclude = opts.matcher, hash = opts.hash ~= false,
    follow_symlinks = opts.follow_symlinks, temp_tokens = opts.temp_tokens })
  if not t then
    if code == "ENOTDIR" then return nil, "snapshot " .. root .. ": not a directory", code end
    return nil, "snapshot " .. root .. ": " .. info, code
  end
  local snap, names = {}, {}
  for rel, kind, mode, size, sha256, target in t:iter(nil, "kind mode size sha256 target") do
    snap[rel] = M.entry { kind = kind, mode = mode, size = size, sha256 = sha256, target = target }
    names[#names + 1] = rel
  end
  return snap, names, info
end

-- A file can be written again within the clock tick of its last write and keep its mtime (the racy-git
-- problem; some filesystems keep 2 s). A write after the walk began gets an mtime past this margin.
M.RACY_SECONDS = 2

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
