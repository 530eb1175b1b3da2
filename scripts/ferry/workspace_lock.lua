--- ferry.workspace_lock: one prepare or restore at a time per workspace, whatever state file each uses.
--
-- The lock is flock(2) on a file of ferry's own, <state dir>/locks/<dev>-<ino>.lock, keyed by the workspace
-- directory's device and inode (so every path to it, and every state file, meets the same lock). The kernel
-- releases it when the holder dies, however it dies. A file rather than the directory itself: flock on a
-- directory fd is refused where flock is emulated with POSIX locks (NFS), which need a writable fd, and the
-- holder's record has to live in a file the waiter can read anyway (prepare never writes the workspace).
--
-- The file holds the holder's record (JSON): pid, op, workspace, and temp_tokens, the run tokens
-- (core.TEMP_TOKEN) of the restores that may have left temp files in the workspace: a restore adds its own
-- before it writes and takes it out when it ends, so a token that stays is a run killed while writing, and
-- its temp files (".ferry-tmp-<token>-<hex>") are ferry's leftovers. Any other name is the user's file.
local cjson = require "cjson"
local core = require "ferry.core"
local state = require "ferry.state"
local task = require "ferry.task"

local M = {}

--- How long an operation waits for the lock by default (opts.lock_wait_ms of prepare and restore).
M.DEFAULT_WAIT_MS = 10000
local POLL_MS = 50

--- The directory of the lock files.
---@return string
function M.dir()
  return state.dir() .. "/locks"
end

local function read_record(path)
  local f = io.open(path, "rb")
  if not f then return {} end
  local text = f:read("a")
  f:close()
  local ok, rec = pcall(cjson.decode, text)
  return ok and type(rec) == "table" and rec or {}
end

local function write_record(path, rec)
  local f, err = io.open(path, "wb")
  if not f then return nil, "lock " .. path .. ": " .. tostring(err), "EIO" end
  local ok, werr = f:write(cjson.encode(rec), "\n")
  local closed, cerr = f:close()
  if not ok or not closed then return nil, "lock " .. path .. ": " .. tostring(werr or cerr), "EIO" end
  return true
end

local function token_list(set)
  local out = {}
  for t in pairs(set) do out[#out + 1] = t end
  table.sort(out)
  return out
end

local Lock = {}
Lock.__index = Lock

local function record(self, pid)
  local rec = { workspace = self.workspace, temp_tokens = token_list(self.tokens) }
  if pid then rec.pid, rec.op = pid, self.op end
  if #rec.temp_tokens == 0 then rec.temp_tokens = nil end
  return rec
end

--- Record this run's token before the first write into the workspace (restore): if the run dies, the next
--- one knows its temp files for what they are.
---@return true|nil, string|nil err, string|nil code
function Lock:claim_temps()
  self.tokens[core.TEMP_TOKEN] = true
  return write_record(self.path, record(self, core.getpid()))
end

--- The leftover temp files of these tokens are gone: stop recording them.
---@param tokens table  a set of tokens
function Lock:forget(tokens)
  for t in pairs(tokens) do
    if t ~= core.TEMP_TOKEN then self.tokens[t] = nil end
  end
  return write_record(self.path, record(self, core.getpid()))
end

--- Release the lock. This run's own temp files are gone (every write either landed or was removed), so its
--- token leaves the record; a dead run's token whose files were not all removed stays.
function Lock:release()
  if not self.lock then return end
  self.tokens[core.TEMP_TOKEN] = nil
  write_record(self.path, record(self, nil)) -- best effort: a stale token only keeps a leftover recognised
  self.lock:unlock()
  self.lock = nil
end

local function pid_of(path)
  local pid = math.tointeger(read_record(path).pid)
  return pid and tostring(pid) or "unknown"
end

--- Take the lock of `workspace` (an absolute path to a directory) for `op` ("prepare" or "restore"), waiting
--- up to opts.lock_wait_ms (default 10 s). Returns a lock: lock.temp_tokens (a set: the tokens of runs that
--- died while writing the workspace, whose temp files are leftovers), lock:claim_temps(), lock:forget(tokens),
--- lock:release(). Errors: "<workspace>: another ferry prepare/restore is running (pid N)" EBUSY; the lock
--- file's errors.
---@param workspace string
---@param op string
---@param opts table|nil  lock_wait_ms
---@return table|nil lock, string|nil err, string|nil code
function M.acquire(workspace, op, opts)
  local wait_ms = opts and opts.lock_wait_ms or M.DEFAULT_WAIT_MS
  if math.type(wait_ms) == nil or wait_ms < 0 then
    error("ferry." .. op .. ": opts.lock_wait_ms must be a number >= 0, got " .. tostring(wait_ms), 3)
  end
  local st, serr, scode = core.fs_stat(workspace)
  if not st then return nil, serr, scode end
  local made, merr, mcode = state.make_dirs(M.dir())
  if not made then return nil, merr, mcode end
  local path = string.format("%s/%d-%d.lock", M.dir(), st.dev, st.ino)
  local deadline = core.now_ms() + wait_ms
  local lock, err, code
  while true do
    lock, err, code = core.fs_lock(path)
    if lock or code ~= "EBUSY" then break end
    if core.now_ms() >= deadline then
      return nil, workspace .. ": another ferry prepare/restore is running (pid " .. pid_of(path) .. ")", "EBUSY"
    end
    task.sleep(math.min(POLL_MS, math.max(1, deadline - core.now_ms())))
  end
  if not lock then return nil, err, code end
  local self = setmetatable({ lock = lock, path = path, workspace = workspace, op = op, tokens = {} }, Lock)
  for _, t in ipairs(read_record(path).temp_tokens or {}) do
    if type(t) == "string" then self.tokens[t] = true end
  end
  self.temp_tokens = {}
  for t in pairs(self.tokens) do self.temp_tokens[t] = true end
  local wrote, werr, wcode = write_record(path, record(self, core.getpid()))
  if not wrote then
    lock:unlock()
    return nil, werr, wcode
  end
  return self
end

return M
