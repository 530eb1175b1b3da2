--- ferry.util: the small helpers the engine library shares: path pieces, the tail of a command's output for
-- a message, unique ids, absolute paths.
local core = require "ferry.core"

local M = {}

--- The parent of a '/'-separated relative path; `top` (default nil) for a path of one component.
---@param rel string
---@param top string|nil
---@return string|nil
function M.parent_of(rel, top)
  return rel:match("^(.*)/[^/]*$") or top
end

--- A path's directory and last component: "a/b" -> "a", "b"; "/b" -> "/", "b"; "b" -> ".", "b".
---@param path string
---@return string dir, string base
function M.split_path(path)
  local dir, base = path:match("^(.*)/([^/]+)$")
  if not dir then return ".", path end
  return dir == "" and "/" or dir, base
end

--- `path` without trailing slashes ("/" gives "").
---@param path string
---@return string
function M.trim_slashes(path)
  return (path:gsub("/+$", ""))
end

--- `path` as an absolute path: relative ones are taken from the current directory ($PWD when it is that
--- directory, else what `pwd` prints).
---@param path string
---@return string
function M.absolute(path)
  if path:sub(1, 1) == "/" then return path end
  local pwd = os.getenv("PWD")
  local here, there = core.fs_stat("."), pwd and core.fs_stat(pwd)
  if not (here and there and here.ino == there.ino and here.dev == there.dev) then
    local p = io.popen("pwd", "r")
    pwd = p and p:read("l")
    if p then p:close() end
  end
  if path == "." then return pwd end
  return pwd .. "/" .. path:gsub("^%./", "")
end

--- The whole content of the file at `path`, or nil when it cannot be opened.
---@param path string
---@return string|nil
function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

--- `list`, sorted in place.
---@param list table
---@return table
function M.sorted(list)
  table.sort(list)
  return list
end

--- The end of a command's output for a message: its last `lines` non-blank lines (but those matching
--- `skip`) joined by `sep`, cut to `max` bytes, keeping the end (or, with cut = "start", the start).
--- The defaults (3 lines, "; ", the last 400 bytes) are those of provider errors.
---@param text string|nil
---@param opts table|nil  lines, sep, max, cut ("end"|"start"), skip (a Lua pattern)
---@return string
function M.tail(text, opts)
  opts = opts or {}
  local keep, max = opts.lines or 3, opts.max or 400
  local lines = {}
  for line in (text or ""):gmatch("[^\r\n]+") do
    if line:match("%S") and not (opts.skip and line:find(opts.skip)) then lines[#lines + 1] = line end
  end
  local out = table.concat(lines, opts.sep or "; ", math.max(1, #lines - keep + 1))
  if #out <= max then return out end
  return opts.cut == "start" and out:sub(1, max) or out:sub(-max)
end

local id_count = 0

--- `n` (at most 64) hex digits no other call, in this process or another, returns: a SHA-256 of the
--- time, the pid, a counter and a random number.
---@param n integer
---@return string
function M.unique_hex(n)
  id_count = id_count + 1
  return core.sha256(string.format("%d:%d:%d:%s", core.time_ms(), core.getpid(), id_count,
    tostring(math.random()))):sub(1, n)
end

return M
