--- ferry.files: the file operations of a sandbox (README "Sandbox operations"): write, read, put, get, ls,
-- mkdir, rm, each one shell script (ferry.file_scripts) run through the client's pipe_in, pipe_out or
-- run_script. M.install(Sandbox) adds them to the client's sandbox class.
local core = require "ferry.core"
local provider_util = require "ferry.provider_util"
local scripts = require "ferry.file_scripts"
local transfer = require "ferry.transfer"
local util = require "ferry.util"

local M = {}

local READ_BLOCK = 256 * 1024

-- Exit codes the operation scripts use to say what is wrong before any data moved.
local ENOENT, EISDIR, ESHORT, EFBIG, ENOTDIR = scripts.ENOENT, scripts.EISDIR, scripts.ESHORT, scripts.EFBIG,
  scripts.ENOTDIR

local tail = util.tail
local word, prelude = transfer.word, transfer.prelude

local Sandbox = {}

-- A name for a temp file no other write uses.
local function temp_name()
  return core.TEMP_PREFIX .. util.unique_hex(16)
end

-- Caller misuse raises, naming the operation.
local function need_path(path, op)
  if type(path) ~= "string" or path == "" then
    error(op .. ": expected a non-empty path string, got " .. (type(path) == "string" and '""' or type(path)), 3)
  end
end

-- nil, "<what>: <why>", code for a command that failed.
local function command_error(res, what)
  if res.timed_out then return nil, what .. ": timed out", "ETIMEDOUT" end
  local why = provider_util.why(res)
  return nil, what .. ": " .. why, why:find("Permission denied", 1, true) and "EACCES" or "EIO"
end

local function run_opts(opts)
  return { timeout_ms = opts.timeout_ms, kill_grace_ms = opts.kill_grace_ms }
end

local function status_error(res, what, path)
  if res.code == ENOENT then return nil, path .. ": no such file", "ENOENT" end
  if res.code == EISDIR then return nil, path .. ": is a directory", "EISDIR" end
  if res.code == ENOTDIR then return nil, path .. ": not a directory", "ENOTDIR" end
  return command_error(res, what)
end

--- Write bytes (a string, or a reader function with opts.size when known) to a file: to a temp name in the
--- same directory, renamed into place once its length is checked; missing parent dirs are created first
--- (mkdir -p, with the sandbox's umask). opts: mode (integer), on_progress.
--- One command when the size is known (two for a reader without opts.size: write, then rename).
--- Errors: "write <path>: <parent> is not a directory" ENOTDIR (a parent exists and is no directory),
--- "<path>: is a directory" EISDIR, "write <path>: the sandbox wrote N of M bytes" EIO.
---@param path string
---@param data string|function
---@param opts table|nil
---@return true|nil ok, string|nil err, string|nil code
function Sandbox:write(path, data, opts)
  need_path(path, "write")
  opts = opts or {}
  if not transfer.is_reader(data) then error("write: expected a string or a reader function", 2) end
  if path:sub(-1) == "/" then return nil, path .. ": not a file path", "EINVAL" end
  local size = type(data) == "string" and #data or opts.size
  local dir = util.split_path(path)
  local tmp = (dir == "/" and "" or dir) .. "/" .. temp_name()
  local what = "write " .. path
  local res, err, code = self:pipe_in(scripts.write(path, tmp, size, opts.mode), data,
    { on_progress = opts.on_progress, timeout_ms = opts.timeout_ms, what = what })
  if not res or res.code ~= 0 or res.timed_out then
    -- the script may not have cleaned up (a reader without size, a stopped command): best effort
    self:run_script(prelude({}) .. "rm -f " .. word(tmp), { cleanup = true })
  end
  if not res then return nil, err, code end
  if res.code == ENOTDIR then
    return nil, string.format("%s: %s is not a directory", what, tail(res.stderr)), "ENOTDIR"
  end
  if res.code == ESHORT then
    return nil, string.format("%s: the sandbox wrote %s of %d bytes", what, tail(res.stderr), size), "EIO"
  end
  if res.code ~= 0 or res.timed_out then return status_error(res, what, path) end
  if size then return true end
  local mv = "mv -f " .. word(tmp) .. " " .. word(path) .. " || { rm -f " .. word(tmp) .. "; exit 1; }"
  local r2, err2, code2 = self:run_script(prelude(opts) .. mv, run_opts(opts))
  if not r2 then return nil, what .. ": " .. err2, code2 end
  if r2.code ~= 0 then return command_error(r2, what) end
  return true
end

-- Stream a remote file to emit(bytes); returns true or nil, message, code.
function Sandbox:read_to(path, emit, opts)
  need_path(path, "read")
  opts = opts or {}
  local max = opts.max_bytes
  if max ~= nil and (math.type(max) ~= "integer" or max < 0) then
    error("read: opts.max_bytes must be an integer >= 0", 3)
  end
  local what = "read " .. path
  local res, err, code = self:pipe_out(scripts.read(path, max), emit,
    { on_progress = opts.on_progress, timeout_ms = opts.timeout_ms, what = what })
  if not res then return nil, err, code end
  if res.code == EFBIG then
    return nil, string.format("%s is %s bytes, over the %d byte limit", path, tail(res.stderr), max), "EFBIG"
  end
  if res.code ~= 0 or res.timed_out then return status_error(res, what, path) end
  return true
end

--- Read a whole file. opts: max_bytes (checked before anything is sent), on_progress, timeout_ms.
--- Errors: "<path>: no such file" ENOENT, "<path> is N bytes, over the M byte limit" EFBIG,
--- "<path>: is a directory" EISDIR.
---@param path string
---@param opts table|nil
---@return string|nil bytes, string|nil err, string|nil code
function Sandbox:read(path, opts)
  local parts = {}
  local ok, err, code = self:read_to(path, function(c) parts[#parts + 1] = c end, opts)
  if not ok then return nil, err, code end
  return table.concat(parts)
end

--- Copy a local file into the sandbox (one command on an 8-bit clean channel); keeps its permission bits
--- unless opts.mode; missing parent dirs of remote_path are created (see write).
---@param local_path string
---@param remote_path string
---@param opts table|nil  mode, on_progress, timeout_ms
---@return true|nil ok, string|nil err, string|nil code
function Sandbox:put(local_path, remote_path, opts)
  need_path(remote_path, "put")
  need_path(local_path, "put")
  opts = opts or {}
  local f, err = io.open(local_path, "rb")
  if not f then return nil, "put " .. local_path .. ": " .. tostring(err), "ENOENT" end
  local size = f:seek("end")
  f:seek("set")
  local mode = opts.mode
  if not mode then
    local st = core.fs_stat(local_path)
    mode = st and st.mode & 4095 or nil
  end
  local reader = function() return f:read(READ_BLOCK) end
  local ok, werr, code = self:write(remote_path, reader,
    { size = size, mode = mode, on_progress = opts.on_progress, timeout_ms = opts.timeout_ms })
  f:close()
  return ok, werr, code
end

--- Copy a sandbox file to a local path (written to a temp name beside it, renamed once complete).
---@param remote_path string
---@param local_path string
---@param opts table|nil  max_bytes, on_progress, timeout_ms
---@return true|nil ok, string|nil err, string|nil code
function Sandbox:get(remote_path, local_path, opts)
  need_path(remote_path, "get")
  need_path(local_path, "get")
  local tmp = local_path .. temp_name()
  local f, err = io.open(tmp, "wb")
  if not f then return nil, "get " .. local_path .. ": " .. tostring(err), "EIO" end
  local ok, rerr, code = self:read_to(remote_path, function(c) assert(f:write(c)) end, opts)
  local closed, cerr = f:close()
  if ok and not closed then ok, rerr, code = nil, "get " .. local_path .. ": " .. tostring(cerr), "EIO" end
  if ok then
    local renamed, mverr = os.rename(tmp, local_path)
    if renamed then return true end
    rerr, code = "get " .. local_path .. ": " .. tostring(mverr), "EIO"
  end
  os.remove(tmp)
  return nil, rerr, code
end

--- List a directory: entries {name, kind ("file"|"dir"|"symlink"|"fifo"|"socket"|"char"|"block"), size,
--- mode} sorted by name, symlinks not followed. Errors: "<dir>: no such directory" ENOENT,
--- "<dir>: not a directory" ENOTDIR.
---@param dir string
---@param opts table|nil  timeout_ms
---@return table[]|nil entries, string|nil err, string|nil code
function Sandbox:ls(dir, opts)
  need_path(dir, "ls")
  opts = opts or {}
  local parts = {}
  local what = "ls " .. dir
  local res, err, code = self:pipe_out(scripts.ls(dir), function(c) parts[#parts + 1] = c end,
    { timeout_ms = opts.timeout_ms, what = what })
  if not res then return nil, err, code end
  if res.code == ENOENT then return nil, dir .. ": no such directory", "ENOENT" end
  if res.code ~= 0 or res.timed_out then return status_error(res, what, dir) end
  local entries = {}
  for rec in table.concat(parts):gmatch("([^%z]+)%z") do
    local e = scripts.parse_ls_entry(rec)
    if not e then return nil, what .. ": cannot parse the listing entry " .. string.format("%q", rec), "EIO" end
    entries[#entries + 1] = e
  end
  table.sort(entries, function(a, b) return a.name < b.name end)
  return entries
end

--- Create a directory and its missing parents (ok when it exists). opts.mode sets its permission bits.
---@param path string
---@param opts table|nil  mode
---@return true|nil ok, string|nil err, string|nil code
function Sandbox:mkdir(path, opts)
  need_path(path, "mkdir")
  opts = opts or {}
  local script = "mkdir -p " .. word(path)
  if opts.mode then script = script .. string.format(" && chmod %o %s", opts.mode, word(path)) end
  local res, err, code = self:run_script(prelude({}) .. script, run_opts(opts))
  if not res then return nil, "mkdir " .. path .. ": " .. err, code end
  if res.code ~= 0 then return command_error(res, "mkdir " .. path) end
  return true
end

--- Remove a file, a symlink or a directory tree (ok when missing). Refuses "/".
---@param path string
---@return true|nil ok, string|nil err, string|nil code
function Sandbox:rm(path, opts)
  need_path(path, "rm")
  opts = opts or {}
  if path:match("^[/.]*$") then
    return nil, "rm: refusing to remove '" .. path .. "'", "EINVAL"
  end
  local res, err, code = self:run_script(prelude({}) .. "rm -rf " .. word(path), run_opts(opts))
  if not res then return nil, "rm " .. path .. ": " .. err, code end
  if res.code ~= 0 then return command_error(res, "rm " .. path) end
  return true
end


--- Add the file operations to the client's sandbox class.
---@param class table
function M.install(class)
  for name, fn in pairs(Sandbox) do class[name] = fn end
end

return M
