--- ferry.bridge.leases: the bridge server's leases. A lease is a sandbox (the --sandbox template with
-- {lease} replaced by its id) owned by the key that acquired it. Each is one small JSON file in the state dir,
-- written atomically, so the leases and their sandboxes survive a restart of the server (even kill -9).
-- A lease that ends (released, or expired and reaped) leaves a tombstone so that its owner hears "expired"
-- rather than "not found"; tombstones go after a week.
local core = require "ferry.core"
local ferry = require "ferry"
local protocol = require "ferry.bridge.protocol"

local M = {}

local TOMBSTONE_S = 7 * 24 * 3600
local FILE_MODE = tonumber("600", 8)

local Store = {}
Store.__index = Store

-- The host dir a template names for a lease: the word holding {lease}, when it is an absolute path.
local function lease_dir(template, id)
  local word = template:match("(/[^%s'\"]*{lease}[^%s'\"]*)")
  return word and (word:gsub("{lease}", id)) or nil
end

--- Open the store in `dir` (created, mode 0700) and load every lease file. opts: template (the --sandbox
--- provider string), ttl_s (default and maximum lease ttl), max_leases, now (clock in seconds, for specs).
--- Returns the store or nil, message, code.
---@param dir string
---@param opts table
function M.open(dir, opts)
  local made = ferry.proc.run { argv = { "mkdir", "-p", "-m", "700", dir } }
  if not made or made.code ~= 0 then
    return nil, "state dir " .. dir .. ": " .. (made and made.stderr:gsub("%s+$", "") or "cannot create"), "EIO"
  end
  local s = setmetatable({ dir = dir, template = opts.template, ttl_s = opts.ttl_s, max_leases = opts.max_leases,
    now = opts.now or os.time, leases = {}, live = {} }, Store)
  local names, err, code = core.fs_readdir(dir)
  if not names then return nil, "state dir " .. dir .. ": " .. err, code end
  for _, name in ipairs(names) do
    local id = name:match("^(%x+)%.json$")
    local text = id and io.open(dir .. "/" .. name, "rb")
    if text then
      local lease = protocol.decode(text:read("a") or "")
      text:close()
      if lease and lease.id == id then
        for _, k in ipairs { "ttl_s", "created_at", "renewed_at", "expires_at", "ended_at" } do
          lease[k] = protocol.int(lease[k]) or lease[k]
        end
        s.leases[id] = lease
      end
    end
  end
  return s
end

--- Write a lease's file (atomically, mode 0600).
function Store:save(lease)
  return core.fs_safe_write(self.dir, lease.id .. ".json", protocol.encode(lease), FILE_MODE)
end

--- The number of active leases.
function Store:active_count()
  local n = 0
  for _, l in pairs(self.leases) do if l.state == "active" then n = n + 1 end end
  return n
end

--- The active lease of `owner` named `name`, if any.
function Store:find_name(owner, name)
  for _, l in pairs(self.leases) do
    if l.state == "active" and l.owner == owner and l.name == name then return l end
  end
end

--- Every lease of `owner` (all owners when nil), sorted by creation time.
function Store:list(owner)
  local out = {}
  for _, l in pairs(self.leases) do
    if owner == nil or l.owner == owner then out[#out + 1] = l end
  end
  table.sort(out, function(a, b)
    return a.created_at < b.created_at or (a.created_at == b.created_at and a.id < b.id)
  end)
  return out
end

--- A new active lease of `owner`. f: name, issue, run, ttl_s. Returns it or nil, message, code.
function Store:create(owner, f)
  if self.max_leases and self:active_count() >= self.max_leases then
    return nil, string.format("the bridge holds %d leases, its maximum", self.max_leases), "too_many_leases"
  end
  local id = protocol.new_id(10)
  local now = self.now()
  local ttl = math.min(f.ttl_s or self.ttl_s, self.ttl_s)
  local lease = { id = id, owner = owner, name = f.name, issue = f.issue, run = f.run, ttl_s = ttl,
    created_at = now, renewed_at = now, expires_at = now + ttl, state = "active",
    sandbox = (self.template:gsub("{lease}", id)), dir = lease_dir(self.template, id) }
  local ok, err = self:save(lease)
  if not ok then return nil, "cannot record the lease: " .. err, "internal" end
  self.leases[id] = lease
  return lease
end

--- Push a lease's expiry to now + its ttl (the file is rewritten only when that moved by a tenth of the ttl,
--- so a busy lease does not cost a write per request).
function Store:touch(lease, ttl_s)
  local now = self.now()
  if ttl_s then lease.ttl_s = math.min(ttl_s, self.ttl_s) end
  local expires = now + lease.ttl_s
  local moved = expires - lease.expires_at
  lease.renewed_at, lease.expires_at = now, expires
  if ttl_s or moved * 10 >= lease.ttl_s then self:save(lease) end
end

-- ---- the sandbox of a lease ----

--- The lease's opened sandboxes (server side): {session = sandbox through one long-lived shell, plain =
--- sandbox running one process per command, remote_dir, scratch_dir}, opened on first use. Returns it or
--- nil, message.
function Store:sandbox(lease)
  local live = self.live[lease.id]
  if live then return live end
  if lease.dir then
    local made = ferry.proc.run { argv = { "mkdir", "-p", "-m", "700", lease.dir } }
    if not made or made.code ~= 0 then return nil, "cannot create " .. lease.dir end
  end
  local plain, err = ferry.open(lease.sandbox, { session = false })
  if not plain then return nil, err end
  local session = ferry.open(lease.sandbox, { session = true, probe = false })
  local remote = plain.remote_dir_default
  if not remote and lease.dir then
    remote = lease.dir .. "/workspace"
    ferry.proc.run { argv = { "mkdir", "-p", remote } }
  end
  live = { plain = plain, session = session, remote_dir = remote, execs = {},
    scratch_dir = plain.provider.scratch_dir or "/tmp" }
  self.live[lease.id] = live
  if lease.remote_dir ~= remote or lease.scratch_dir ~= live.scratch_dir then
    lease.remote_dir, lease.scratch_dir = remote, live.scratch_dir
    self:save(lease)
  end
  return live
end

--- The sandbox a command should use: the session when it is free and the command has no stdin (one round
--- trip in the sandbox's shell), else a process of its own.
function M.pick(live, has_stdin)
  if has_stdin or not live.session or live.session_busy then return live.plain, false end
  live.session_busy = true
  return live.session, true
end

--- End a lease: kill its commands, close its sandboxes, remove its dir, leave a tombstone (state "released"
--- or "expired").
function Store:finish(lease, state)
  local live = self.live[lease.id]
  self.live[lease.id] = nil
  if live then
    for exec in pairs(live.execs) do exec:kill("the lease ended") end
    live.plain:close()
    if live.session then live.session:close() end
  end
  if lease.dir and lease.dir:match("^/.+/") then core.fs_remove_tree(lease.dir) end
  lease.state, lease.ended_at = state, self.now()
  self:save(lease)
end

--- Close every opened sandbox (the server stops; the leases and their dirs stay).
function Store:close_all()
  for id, live in pairs(self.live) do
    live.plain:close()
    if live.session then live.session:close() end
    self.live[id] = nil
  end
end

--- Reap: end the active leases past their expiry with no command running; delete old tombstones.
--- Returns the ids reaped.
function Store:reap()
  local now, reaped = self.now(), {}
  for id, lease in pairs(self.leases) do
    local live = self.live[id]
    if lease.state == "active" and lease.expires_at < now and not (live and next(live.execs)) then
      self:finish(lease, "expired")
      reaped[#reaped + 1] = id
    elseif lease.state ~= "active" and (lease.ended_at or 0) + TOMBSTONE_S < now then
      os.remove(self.dir .. "/" .. id .. ".json")
      self.leases[id] = nil
    end
  end
  return reaped
end

--- A lease as the protocol shows it (never the owner's secret; the owner's key id is fine).
function Store:public(lease)
  local live = self.live[lease.id]
  return { id = lease.id, name = lease.name, issue = lease.issue, run = lease.run, key = lease.owner,
    state = lease.state, ttl_s = lease.ttl_s, created_at = lease.created_at, expires_at = lease.expires_at,
    remote_dir = live and live.remote_dir or lease.remote_dir,
    scratch_dir = live and live.scratch_dir or lease.scratch_dir }
end

return M
