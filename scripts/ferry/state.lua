--- ferry.state: the state file that lets `ferry restore` (in another process) finish what prepare began.
--
-- A JSON object (lua-cjson): version, provider (the provider string), remote_dir, runtime_dir, adapter,
-- workspace, excludes, preserve, assets (key -> remote dir), baseline (rel -> {kind, mode, size, sha256,
-- target}), remote_stat (rel -> what the sandbox's listing said after the sync), local_stat (rel -> quick
-- record of a local file: "<mode> <size> <inode> <mtime> <sha256>", see ferry.snapshot.quick_records),
-- created_at, updated_at. It is written atomically (a temp file beside it, then rename) with mode
-- 0600, so a reader sees the old or the new file, never a half. It never holds a secret: prepare and restore
-- pass every string through M.redactor's redactor first and never store environment values.
--
-- Default location: $XDG_STATE_HOME/ferry/<16 hex of sha256(provider "\n" remote_dir)>.json, with
-- $XDG_STATE_HOME defaulting to ~/.local/state. The workspace itself is never written by prepare.
local core = require "ferry.core"
local cjson = require "cjson"
local redact = require "ferry.redact"
local snapshot = require "ferry.snapshot"
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

-- mkdir -p with mode 0700 for the parts created; existing parts (symlinks included) are used as they are.
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
    return nil, "state: cannot read " .. path .. ": " .. tostring(err), st and "EACCES" or "ENOENT"
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
  for _, entry in pairs(state.baseline) do integer_fields(entry) end
  for _, k in ipairs { "excludes", "preserve" } do
    if type(state[k]) ~= "table" then state[k] = {} end
  end
  if type(state.assets) ~= "table" then state.assets = {} end
  if type(state.local_stat) ~= "table" then state.local_stat = nil end
  return state
end

-- Strings ferry computed from lstat numbers and digests, never from a name, a file's text or the sandbox's
-- words: a file's sha256 in a snapshot and a quick record in local_stat. They carry no secret, so they skip
-- the redactor, which could only mangle them (a secret's characters can occur in a digest by chance). Most
-- of a state file's text is such strings.
local function computed(key, s, under)
  if key == "sha256" then return #s == 64 and not s:find("%X") end
  return under == "local_stat" and snapshot.is_quick_record(s)
end

--- The redactors of prepare and restore: `fn(s)` for a string (ferry.redact.new(secrets)) and
--- `record(value)` for a table (a state record, a result): a copy with every string redacted but the ones
--- ferry computed (digests, quick records), or the table itself when nothing needs redacting.
---@param secrets table|nil
---@return fun(s: any): any fn, fun(value: any): any record
function M.redactor(secrets)
  local fn = redact.new(secrets or {})
  return fn, function(value) return redact.table(value, fn, computed) end
end

return M
