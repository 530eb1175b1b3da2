--- Provider `bridge+http://HOST:PORT[/PREFIX]?key_id=ID&key_file=FILE[&lease=ID][&name=N][&issue=I][&run=R]
-- [&ttl=SEC]` (and `bridge+https://...&cacert=FILE`): a sandbox behind a ferry HTTP bridge (`ferry bridge
-- serve`, or the Cloudflare Worker speaking the same protocol; README "Bridge").
--
-- Opening acquires a lease, or recovers one: `lease=ID` names it (an ended lease is an error: "lease ID
-- expired"); without it the lease named `name` (default: derived from the key id and the issue/run labels)
-- is recovered while active, else a new one is made. So the same provider string reaches the same sandbox,
-- as bwrap:DIR does. The provider's name and spec carry `lease=ID`. The lease is renewed while the provider is
-- open and never released implicitly (a prepare's lease must outlive its process for the restore); it ends
-- at its ttl, or with provider:release() / `ferry bridge release -p PROVIDER`.
local core = require "ferry.core"
local protocol = require "ferry.bridge.protocol"
local bridge_client = require "ferry.bridge.client"
local util = require "ferry.provider_util"

local M = {}

M.usage = "bridge+http://HOST:PORT[/PREFIX]?key_id=ID&key_file=FILE[&lease=ID]"
M.help = "a sandbox behind a ferry HTTP bridge (ferry bridge serve, or its Cloudflare Worker); "
  .. "also bridge+https://...&cacert=FILE; more keys: name, issue, run, ttl"

local KEYS = { key_id = true, key_file = true, lease = true, name = true, issue = true, run = true, ttl = true,
  cacert = true }
local KEY_ORDER = { "key_id", "key_file", "lease", "name", "issue", "run", "ttl", "cacert" }
local FORM = "bridge+http://HOST:PORT[/PREFIX]?key_id=ID&key_file=FILE"

local Bridge = {}
Bridge.__index = Bridge

-- scheme, authority, prefix, params from "http://h:p/prefix?k=v&..."; nil, message when malformed.
local function parse(arg)
  local scheme, authority, prefix, query = (arg or ""):match("^(https?)://([^/?#]+)([^?#]*)%??([^#]*)$")
  if not scheme then return nil, "expected " .. FORM .. ", got 'bridge+" .. tostring(arg) .. "'" end
  if not (authority:match("^[%w.-]+:%d+$") or authority:match("^%[[%x:.]+%]:%d+$")
      or authority:match("^[%w.-]+$")) then
    return nil, "expected HOST:PORT after " .. scheme .. "://, got '" .. authority .. "'"
  end
  prefix = prefix:gsub("/+$", "")
  if prefix ~= "" and not prefix:match("^/[%w._~/-]+$") then return nil, "bad path prefix '" .. prefix .. "'" end
  local params = {}
  for pair in query:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]+)=(.*)$")
    if not k or not KEYS[k] then
      return nil, "unknown key '" .. (k or pair) .. "' (known: key_id, key_file, lease, name, issue, run, ttl, cacert)"
    end
    params[k] = util.url_decode(v)
  end
  for _, k in ipairs { "key_id", "key_file" } do
    if not params[k] or params[k] == "" then return nil, "missing " .. k .. "= (" .. FORM .. ")" end
  end
  if params.ttl and not params.ttl:match("^%d+$") then return nil, "ttl must be a number of seconds" end
  if params.lease and not params.lease:match(protocol.ID_PATTERN) then
    return nil, "bad lease id '" .. params.lease .. "'"
  end
  return scheme, authority:lower(), prefix, params
end

-- The provider string with its parameters (lease=ID included once known).
local function spec_of(scheme, authority, prefix, params)
  local q = {}
  for _, k in ipairs(KEY_ORDER) do
    if params[k] then q[#q + 1] = k .. "=" .. params[k]:gsub("[^%w._~/-]", function(c)
      return string.format("%%%02X", c:byte()) end) end
  end
  return "bridge+" .. scheme .. "://" .. authority .. prefix .. "?" .. table.concat(q, "&")
end

--- Run `script` in the lease (see ferry.bridge.client exec); popts as ferry.proc.run's.
function Bridge:exec(script, popts)
  popts = popts or {}
  return self.client:exec(self.lease_id, { script = script, env = popts.env, cwd = popts.cwd }, popts)
end

-- Renew the lease every third of its ttl while the provider is open.
function Bridge:schedule_renewal()
  local every = math.max(500, math.floor(self.ttl_s * 1000 / 3))
  self.renewal = core.timer(every, function()
    if self.closed then return end
    require("ferry.task").spawn(function()
      local ok, err = self.client:call("POST", "/leases/" .. self.lease_id .. "/renew", {}, { lease = self.lease_id })
      if not ok and self.log then self.log("warn", err) end
      if not self.closed then self:schedule_renewal() end
    end)
  end)
end

--- Stop renewing the lease (it lives on until its ttl: release() ends it).
function Bridge:close()
  self.closed = true
  if self.renewal then self.renewal:stop() end
end

--- End the lease now: its sandbox is removed on the bridge. Returns true or nil, message, code.
function Bridge:release()
  self:close()
  local ok, err, code = self.client:call("DELETE", "/leases/" .. self.lease_id, nil, { lease = self.lease_id })
  if not ok then return nil, err, code end
  return true
end

--- Open: acquire or recover the lease. opts: log.
---@param arg string  "http://HOST:PORT[/PREFIX]?..." (what follows "bridge+")
---@param opts table|nil
function M.open(arg, opts)
  opts = opts or {}
  local scheme, authority, prefix, params = parse(arg)
  if not scheme then return nil, "bridge: " .. authority, "EINVAL" end
  local secret, kerr, kcode = protocol.read_key(params.key_file)
  if not secret then return nil, "bridge: " .. kerr, kcode end
  local client = bridge_client.new { scheme = scheme, authority = authority, prefix = prefix, key_id = params.key_id,
    secret = secret, cacert = params.cacert }
  local body, err, code
  if params.lease then
    body, err, code = client:call("GET", "/leases/" .. params.lease, nil, { lease = params.lease })
  else
    local name = params.name or ("auto-" .. core.sha256(params.key_id .. "\n" .. (params.issue or "") .. "\n"
      .. (params.run or "")):sub(1, 16))
    body, err, code = client:call("POST", "/leases", { name = name, issue = params.issue, run = params.run,
      ttl_s = params.ttl and tonumber(params.ttl) or nil }, { lease = name })
  end
  if not body then return nil, err, code end
  local lease = body.lease or {}
  if type(lease.id) ~= "string" or not lease.id:match(protocol.ID_PATTERN) then
    return nil, client.label .. ": the bridge answered without a lease id", "EIO"
  end
  params.lease = lease.id
  local spec = spec_of(scheme, authority, prefix, params)
  local p = setmetatable({
    name = spec, spec = spec, client = client, lease_id = lease.id, ttl_s = protocol.int(lease.ttl_s) or 3600,
    caps = { stdin = true, binary = true, costly = true },
    default_remote_dir = protocol.field(lease, "remote_dir"),
    scratch_dir = protocol.field(lease, "scratch_dir") or "/tmp",
    log = opts.log,
  }, Bridge)
  p:schedule_renewal()
  return p
end

return M
