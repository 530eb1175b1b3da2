--- ferry.scratch: ferry's temp dirs (restore's spool), in $TMPDIR (default /tmp), named after the run that owns
-- them: ferry-<kind>-<pid>-<start token>-XXXXXX, the start token being 12 hex digits of the SHA-256 of the boot
-- id and the process's start time. A dir is removed on every way out of the operation that made it (its
-- return, a raised error, SIGINT/SIGTERM/SIGHUP: core.fs_mkdtemp's signal_cleanup); after a SIGKILL or a
-- crash the next operation's sweep removes it, because its owner is gone: no process has that pid with that
-- start time (a reused pid has another). A live run's dirs, and other users' dirs, are never touched.
local core = require "ferry.core"
local util = require "ferry.util"

local M = {}


local boot_id

--- The start token of the running process `pid`, or nil when there is none (or /proc cannot tell).
---@param pid integer
---@return string|nil
function M.start_token(pid)
  local stat = util.read_file("/proc/" .. pid .. "/stat")
  -- the command name (field 2) may hold spaces and ')': the fields after the last ')' start at field 3
  local rest = stat and stat:match("^.*%)%s+(.*)$")
  if not rest then return nil end
  local fields = {}
  for f in rest:gmatch("%S+") do fields[#fields + 1] = f end
  if fields[1] == "Z" or fields[1] == "X" then return nil end -- dead, not yet reaped
  local started = fields[20] -- field 22: start time, clock ticks after boot
  boot_id = boot_id or util.read_file("/proc/sys/kernel/random/boot_id") or ""
  return started and core.sha256(boot_id .. ":" .. started):sub(1, 12) or nil
end

local function tmpdir()
  local dir = os.getenv("TMPDIR")
  return dir and dir:sub(1, 1) == "/" and (dir:gsub("/+$", "")) or "/tmp"
end

--- A new temp dir of this run for `kind` ("restore"): path or nil, message, code.
---@param kind string
---@return string|nil path, string|nil err, string|nil code
function M.make(kind)
  local pid = core.getpid()
  return core.fs_mkdtemp(string.format("ferry-%s-%d-%s-", kind, pid, M.start_token(pid) or "0"),
    { signal_cleanup = true })
end

--- Remove a dir made by M.make: true or nil, message, code.
M.remove = core.fs_remove_tree

--- Remove the `kind` dirs in $TMPDIR that belong to this user and to a run that is gone. Returns the paths
--- removed and the messages of those that could not be.
---@param kind string
---@return string[] removed, string[] errors
function M.sweep(kind)
  local removed, errors = {}, {}
  local dir = tmpdir()
  local names = core.fs_readdir(dir)
  -- without /proc no owner can be told alive or gone: nothing is swept
  if not names or not M.start_token(core.getpid()) then return removed, errors end
  local uid = core.getuid()
  local pattern = "^ferry%-" .. kind:gsub("%p", "%%%0") .. "%-(%d+)%-(%x%x%x%x%x%x%x%x%x%x%x%x)%-[%w]+$"
  for _, name in ipairs(names) do
    local pid, token = name:match(pattern)
    if pid then
      local path = dir .. "/" .. name
      local st = core.fs_lstat(path)
      if st and st.kind == "dir" and st.uid == uid and M.start_token(tonumber(pid)) ~= token then
        local ok, err = M.remove(path)
        if ok then removed[#removed + 1] = path else errors[#errors + 1] = err end
      end
    end
  end
  return removed, errors
end

return M
