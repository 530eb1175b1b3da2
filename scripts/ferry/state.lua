--- ferry.state: the state file that lets `ferry restore` (in another process) finish what prepare began.
--
-- A small JSON object (lua-cjson) and the trees beside it. The JSON: version (2), provider (the provider
-- string), remote_dir, runtime_dir, adapter, workspace, excludes, preserve, assets (key -> remote dir), git,
-- references, created_at, restored_at, pending_removals, sync (the marker ferry left in the sandbox: {id}),
-- and trees = {baseline = <checksum>, remote = <checksum> | nil}, the SHA-256 each tree file's header
-- carries. The trees (core.tree_*, compact, in path order) are files of their own named after the JSON and
-- their checksum, `<state>.baseline-<16 hex>.tree` and `<state>.remote-<16 hex>.tree`:
--   baseline  what the sandbox holds as ferry last saw it (kind, mode, size, sha256, link target), with the
--             lstat of the local file that matches it (mode, size, inode, mtime, device) and when that walk
--             began (taken_at): a later walk trusts the digest of a file whose lstat did not move
--   remote    the sandbox's own lstat of each entry (kind, mode, size, mtime, inode, device) when the marker
--             was left, what a delta's listing is compared with (nil when the sandbox could not list)
-- Every file is written atomically (a temp file beside it, then rename) with mode 0600; the trees first, the
-- JSON last, then the trees it no longer names are removed: a reader always finds the trees its JSON names,
-- and a tree whose checksum is not the one recorded is refused. Paths, file names and link targets are
-- stored verbatim (they are data: a name that looks like a token is still a name); the provider string is
-- redacted (M.redactor) and environment values are never stored. A version 1 state (everything in the JSON)
-- is still read: its baseline becomes a tree, and it has no remote tree (the next prepare is a full sync).
--
-- Default location: $XDG_STATE_HOME/ferry/<16 hex of sha256(provider "\n" remote_dir)>.json, with
-- $XDG_STATE_HOME defaulting to ~/.local/state. The workspace itself is never written by prepare.
local core = require "ferry.core"
local cjson = require "cjson"
local redact = require "ferry.redact"
local util = require "ferry.util"

local M = {}

M.VERSION = 2
local TREES = { "baseline", "remote" }

--- The directory holding default state files.
---@return string
function M.dir()
  local xdg = os.getenv("XDG_STATE_HOME")
  if xdg and xdg:sub(1, 1) == "/" then return xdg .. "/ferry" end
  local home = os.getenv("HOME")
  if not home or home == "" then return "/tmp/ferry-state-" .. (os.getenv("USER") or "user") end
  return home .. "/.local/state/ferry"
end

--- The default state path of a provider string and remote dir.
---@param provider string
---@param remote_dir string
---@return string
function M.default_path(provider, remote_dir)
  return M.dir() .. "/" .. core.sha256(provider .. "\n" .. remote_dir):sub(1, 16) .. ".json"
end

--- mkdir -p with mode 0700 for the parts created; existing parts (symlinks included) are used as they are.
--- Errors: "state: <dir> is not a directory" ENOTDIR and the core's mkdir errors after "state: ".
---@param dir string
---@return true|nil, string|nil err, string|nil code
local function make_dirs(dir)
  local st = core.fs_stat(dir)
  if st then
    if st.kind ~= "dir" then return nil, "state: " .. dir .. " is not a directory", "ENOTDIR" end
    return true
  end
  local parent, base = util.split_path(dir)
  if parent ~= dir then
    local ok, err, code = make_dirs(parent)
    if not ok then return nil, err, code end
  end
  local ok, err, code = core.fs_safe_mkdir(parent, base, 448) -- 0700
  if not ok then return nil, "state: " .. err, code end
  return true
end

M.make_dirs = make_dirs

--- The file of a state's tree: `<path>.<which>-<16 hex of its checksum>.tree`.
---@param path string  the state file
---@param which string  "baseline" or "remote"
---@param sum string  the tree's checksum (64 hex digits)
---@return string
function M.tree_path(path, which, sum)
  return path .. "." .. which .. "-" .. sum:sub(1, 16) .. ".tree"
end

local function write_json(path, state)
  local ok, text = pcall(cjson.encode, state)
  if not ok then return nil, "state: cannot encode: " .. tostring(text), "EINVAL" end
  local dir, base = util.split_path(path)
  local wrote, werr, wcode = core.fs_safe_write(dir, base, text .. "\n", 384) -- 0600
  if not wrote then return nil, "state: " .. werr, wcode end
  return true
end

-- Remove the tree files of `path` that its JSON no longer names (an earlier write's, or a killed one's).
local function remove_stale_trees(path, sums)
  local dir, base = util.split_path(path)
  local keep = {}
  for _, which in ipairs(TREES) do
    if sums[which] then keep[select(2, util.split_path(M.tree_path(path, which, sums[which])))] = true end
  end
  for _, name in ipairs(core.fs_readdir(dir) or {}) do
    if name:sub(1, #base + 1) == base .. "." and name:sub(-5) == ".tree" and not keep[name] then
      local which = name:sub(#base + 2):match("^(%a+)%-%x+%.tree$")
      if which == "baseline" or which == "remote" then core.fs_safe_remove(dir, name) end
    end
  end
end

--- Write the state to `path` (mode 0600; its directory made 0700 when missing): the trees given in `trees`
--- ({baseline = tree, remote = tree | false}: false drops the remote tree, nil keeps the one recorded) first,
--- then the JSON recording their checksums in state.trees, then the tree files it no longer names are removed.
---@param path string
---@param state table
---@param trees table|nil
---@return true|nil, string|nil err, string|nil code
function M.write(path, state, trees)
  local dir = util.split_path(path)
  local made, err, code = make_dirs(dir)
  if not made then return nil, err, code end
  local sums = {}
  for _, which in ipairs(TREES) do sums[which] = type(state.trees) == "table" and state.trees[which] or nil end
  for _, which in ipairs(TREES) do
    local t = trees and trees[which]
    if t == false then
      sums[which] = nil
    elseif t then
      -- named after its checksum, which the write gives: written beside, then renamed
      local tmp = path .. "." .. which .. ".tree-new"
      local ok, sum, wcode = t:write(tmp, 384)
      if not ok then return nil, "state: " .. sum, wcode end
      local final = M.tree_path(path, which, sum)
      local moved, merr = os.rename(tmp, final)
      if not moved then
        os.remove(tmp)
        return nil, "state: cannot write " .. final .. ": " .. tostring(merr), "EIO"
      end
      sums[which] = sum
    end
  end
  if not sums.baseline then error("state.write: no baseline tree to record", 2) end
  state.trees = { baseline = sums.baseline, remote = sums.remote }
  state.version = M.VERSION
  state.baseline, state.local_stat, state.remote_stat = nil, nil, nil -- a version 1 state's, now in the trees
  local ok, werr, wcode = write_json(path, state)
  if not ok then return nil, werr, wcode end
  remove_stale_trees(path, sums)
  return true
end

--- The mark a prepare leaves while it changes a sandbox's remote dir, for whatever state file it writes:
--- <state dir>/unfinished/<16 hex of sha256(provider "\n" remote_dir)>, the provider string as the state file
--- records it (redacted).
---@param provider string
---@param remote_dir string
---@return string
function M.unfinished_path(provider, remote_dir)
  return M.dir() .. "/unfinished/" .. core.sha256(provider .. "\n" .. remote_dir):sub(1, 16)
end

--- Mark a prepare that is about to change the sandbox (the mark holds its pid and the remote dir).
---@return true|nil, string|nil err, string|nil code
function M.mark_unfinished(provider, remote_dir)
  local dir, base = util.split_path(M.unfinished_path(provider, remote_dir))
  local made, err, code = make_dirs(dir)
  if not made then return nil, err, code end
  local wrote, werr, wcode = core.fs_safe_write(dir, base, "pid " .. core.getpid() .. "\n" .. remote_dir .. "\n",
    384)
  if not wrote then return nil, "state: " .. werr, wcode end
  return true
end

--- The prepare finished: the sandbox holds the whole workspace and its state file says so.
function M.clear_unfinished(provider, remote_dir)
  os.remove(M.unfinished_path(provider, remote_dir))
end

--- The mark's path when the last prepare into that sandbox's remote dir did not finish (killed, or failed
--- after it began changing the sandbox), else nil.
---@return string|nil
function M.unfinished(provider, remote_dir)
  local path = M.unfinished_path(provider, remote_dir)
  return core.fs_lstat(path) and path or nil
end

local function integer_fields(entry)
  for _, k in ipairs { "mode", "size" } do
    if entry[k] ~= nil then entry[k] = math.tointeger(entry[k]) or entry[k] end
  end
end

local function not_state(path, why)
  return nil, "state: " .. path .. " is not a ferry state file: " .. why, "EINVAL"
end

-- A version 1 state's baseline, checked (rel -> object); nil and why not.
local function check_v1_baseline(path, state)
  if type(state.baseline) ~= "table" then state.baseline = {} end
  for rel, entry in pairs(state.baseline) do
    if type(rel) ~= "string" or type(entry) ~= "table" then
      return not_state(path, "baseline entry " .. tostring(rel) .. " is not an object")
    end
    integer_fields(entry)
  end
  return state
end

--- Read a state file's JSON (the trees stay on disk: M.trees). Errors: "state: cannot read <path>: <reason>"
--- (ENOENT...), "state: <path> is not a ferry state file: <reason>" (EINVAL), "state: <path> has version N,
--- this ferry reads 1 and 2" (EINVAL).
---@param path string
---@return table|nil state, string|nil err, string|nil code
function M.read(path)
  local f, err = io.open(path, "rb")
  if not f then
    local st = core.fs_lstat(path)
    local why = tostring(err) -- io.open's "<path>: <reason>": the path once
    if why:sub(1, #path + 2) == path .. ": " then why = why:sub(#path + 3) end
    return nil, "state: cannot read " .. path .. ": " .. why, st and "EACCES" or "ENOENT"
  end
  local text = f:read("a")
  f:close()
  local ok, state = pcall(cjson.decode, text)
  if not ok or type(state) ~= "table" then return not_state(path, tostring(ok and "not an object" or state)) end
  if state.version ~= 1 and state.version ~= M.VERSION then
    local v = math.type(state.version) == "float" and math.tointeger(state.version) or state.version
    return nil, string.format("state: %s has version %s, this ferry reads 1 and %d", path, tostring(v), M.VERSION),
      "EINVAL"
  end
  for _, k in ipairs { "provider", "remote_dir", "workspace" } do
    if type(state[k]) ~= "string" then return not_state(path, "no " .. k) end
  end
  for _, k in ipairs { "excludes", "preserve" } do
    if type(state[k]) ~= "table" then state[k] = {} end
  end
  if type(state.assets) ~= "table" then state.assets = {} end
  if state.version == 1 then return check_v1_baseline(path, state) end
  local sums = type(state.trees) == "table" and state.trees or {}
  for _, which in ipairs(TREES) do
    local sum = sums[which]
    if sum ~= nil and (type(sum) ~= "string" or not sum:match("^%x+$") or #sum ~= 64) then
      return not_state(path, "trees." .. which .. " is not a checksum")
    end
  end
  if not sums.baseline then return not_state(path, "no baseline tree") end
  state.trees = { baseline = sums.baseline:lower(), remote = sums.remote and sums.remote:lower() }
  if type(state.sync) ~= "table" or type(state.sync.id) ~= "string" then state.sync = nil end
  return state
end

local V1_KINDS = { file = true, dir = true, symlink = true }

-- A version 1 state's baseline as a tree (no lstat of the local files: a later walk reads every file).
local function v1_baseline(path, state)
  local t = core.tree_new()
  for rel, e in pairs(state.baseline) do
    local why = not V1_KINDS[e.kind] and "kind must be file, dir or symlink"
      or e.kind == "file" and type(e.sha256) ~= "string" and "file without sha256"
      or e.kind == "symlink" and type(e.target) ~= "string" and "symlink without target" or nil
    local ok, err = why == nil, why
    if ok then
      ok, err = pcall(t.add, t, rel, { kind = e.kind, mode = math.type(e.mode) == "integer" and e.mode & 4095
        or nil, size = math.type(e.size) == "integer" and e.size >= 0 and e.size or nil, sha256 = e.sha256,
        target = e.kind == "symlink" and e.target or nil })
    end
    if not ok then return not_state(path, "baseline entry " .. rel .. ": " .. tostring(err)) end
  end
  return t
end

--- One tree of a state M.read returned, `which` ("baseline" or "remote"), checked against the checksum the
--- JSON recorded: nil, nil when the state has no such tree (a version 1 state gives its baseline as a tree
--- and no remote tree). Errors: "state: <tree file>: <reason>" (the file missing or unreadable), "state: <tree
--- file> is not the tree <path> recorded (checksum mismatch)" (EINVAL), and the tree's own "corrupt tree:
--- ...".
---@param path string
---@param state table
---@param which string
---@return table|nil tree, string|nil err, string|nil code
function M.tree(path, state, which)
  if state.version == 1 then
    if which == "baseline" then return v1_baseline(path, state) end
    return nil
  end
  local sum = state.trees[which]
  if not sum then return nil end
  local file = M.tree_path(path, which, sum)
  local t, got, code = core.tree_read(file)
  if not t then return nil, "state: " .. (got:find(file, 1, true) and got or file .. ": " .. got), code end
  if got ~= sum then
    return nil, "state: " .. file .. " is not the tree " .. path .. " recorded (checksum mismatch)", "EINVAL"
  end
  return t
end

--- Both trees of a state: the baseline and the remote tree (nil when there is none), or nil, message, code.
---@return table|nil baseline, table|string|nil remote_or_err, string|nil code
function M.trees(path, state)
  local baseline, err, code = M.tree(path, state, "baseline")
  if not baseline then return nil, err, code end
  local remote_tree, rerr, rcode = M.tree(path, state, "remote")
  if rerr then return nil, rerr, rcode end
  return baseline, remote_tree
end

-- The fields of a state record or a result that hold free text (commands, messages): the only ones redacted.
-- Everything else is data that must come back as it went: paths, file names and link targets (a workspace
-- named like a token must still restore), digests, counts.
local FREE_TEXT = { provider = true, warnings = true, install_warning = true, refused = true, error = true,
  message = true }

--- The redactors of prepare and restore: `fn(s)` for a string (ferry.redact.new(secrets)) and
--- `record(value)` for a state record or a result: a shallow copy with its free-text fields (provider,
--- warnings, install_warning, refused, error, message) redacted, or the table itself when nothing needs it.
---@param secrets table|nil
---@return fun(s: any): any fn, fun(value: any): any record
function M.redactor(secrets)
  local fn = redact.new(secrets or {})
  return fn, function(value)
    if type(value) ~= "table" then return fn(value) end
    local copy
    for key in pairs(FREE_TEXT) do
      local v = value[key]
      local r = v ~= nil and redact.table(v, fn) or v
      if r ~= v then
        if not copy then
          copy = {}
          for k, x in pairs(value) do copy[k] = x end
        end
        copy[key] = r
      end
    end
    return copy or value
  end
end

return M
