--- ferry.state: the state file that lets `ferry restore` (in another process) finish what prepare began.
--
-- A JSON object (lua-cjson): version, provider (the provider string), remote_dir, runtime_dir, adapter,
-- workspace, excludes, preserve, assets (key -> remote dir), baseline (rel -> {kind, mode, size, sha256,
-- target}), remote_stat (rel -> what the sandbox's listing said after the sync), local_stat (rel -> quick
-- record of a local file: "<mode> <size> <inode> <mtime> <sha256>", see ferry.snapshot.quick_records),
-- created_at, updated_at. It is written atomically (a temp file beside it, then rename) with mode
-- 0600, so a reader sees the old or the new file, never a half. Paths, file names and link targets are
-- stored verbatim (they are data: a name that looks like a token is still a name); the provider string is
-- redacted (M.redactor) and environment values are never stored.
--
-- Default location: $XDG_STATE_HOME/ferry/<16 hex of sha256(provider "\n" remote_dir)>.json, with
-- $XDG_STATE_HOME defaulting to ~/.local/state. The workspace itself is never written by prepare.
local core = require "ferry.core"
local cjson = require "cjson"
local redact = require "ferry.redact"
local util = require "ferry.util"

local M = {}

M.VERSION = 1

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

--- Write the state table to `path` atomically (mode 0600), creating its directory (0700) when missing.
---@param path string
---@param state table
---@return true|nil, string|nil err, string|nil code
function M.write(path, state)
  local ok, text = pcall(cjson.encode, state)
  if not ok then return nil, "state: cannot encode: " .. tostring(text), "EINVAL" end
  local dir, base = util.split_path(path)
  local made, err, code = make_dirs(dir)
  if not made then return nil, err, code end
  local wrote, werr, wcode = core.fs_safe_write(dir, base, text .. "\n", 384) -- 0600
  if not wrote then return nil, "state: " .. werr, wcode end
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

--- Read a state file. Errors: "state: cannot read <path>: <reason>" (ENOENT...), "state: <path> is not a
--- ferry state file: <reason>" (EINVAL), "state: <path> has version N, this ferry reads 1" (EINVAL).
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
  if not ok or type(state) ~= "table" then
    return nil, "state: " .. path .. " is not a ferry state file: " .. tostring(ok and "not an object" or state),
      "EINVAL"
  end
  if state.version ~= M.VERSION then
    return nil, string.format("state: %s has version %s, this ferry reads %d", path, tostring(state.version),
      M.VERSION), "EINVAL"
  end
  for _, k in ipairs { "provider", "remote_dir", "workspace" } do
    if type(state[k]) ~= "string" then
      return nil, "state: " .. path .. " is not a ferry state file: no " .. k, "EINVAL"
    end
  end
  if type(state.baseline) ~= "table" then state.baseline = {} end
  for rel, entry in pairs(state.baseline) do
    if type(rel) ~= "string" or type(entry) ~= "table" then
      return nil, "state: " .. path .. " is not a ferry state file: baseline entry " .. tostring(rel)
        .. " is not an object", "EINVAL"
    end
    integer_fields(entry)
  end
  for _, k in ipairs { "excludes", "preserve" } do
    if type(state[k]) ~= "table" then state[k] = {} end
  end
  if type(state.assets) ~= "table" then state.assets = {} end
  if type(state.local_stat) ~= "table" then state.local_stat = nil end
  return state
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
