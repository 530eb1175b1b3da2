--- The bridge verbs (README "Bridge"): `bridge serve` runs the HTTP bridge server; `bridge leases` lists the
--- leases recorded in a state dir; `bridge release` ends the lease of a bridge provider string.
local registry = require "ferry.cli.registry"
local options = require "ferry.cli.options"

local EXIT = registry.EXIT
local define, fail, usage = registry.define, registry.fail, registry.usage
local M = {}

local SUBCOMMANDS = { "serve", "leases", "release" }

local HELP = [[
usage: ferry bridge serve --listen HOST:PORT --key ID=FILE... --sandbox TEMPLATE --state-dir DIR [OPTIONS]
       ferry bridge leases --state-dir DIR [--json]
       ferry bridge release -p PROVIDER
Serve sandboxes over the signed HTTP bridge protocol, list the leases a server recorded, or end a lease.
See ferry bridge serve --help.
]]

local function positive(value, option)
  if value == nil then return nil end
  local n = tonumber(value)
  if not n or n <= 0 or not value:match("^%d+$") then
    usage(option .. " expects a whole number > 0, got '" .. value .. "'")
  end
  return math.tointeger(n)
end

-- "HOST:PORT" or "[V6]:PORT" -> host, port.
local function listen_address(value)
  if not value then usage("missing --listen HOST:PORT") end
  local host, port = value:match("^%[([%x:.]+)%]:(%d+)$")
  if not host then host, port = value:match("^([%d.]+):(%d+)$") end
  if not host or tonumber(port) > 65535 then
    usage("--listen expects HOST:PORT (an IP address), got '" .. value .. "'")
  end
  return host, tonumber(port)
end

local function read_keys(list)
  if #list == 0 then usage("missing --key ID=FILE (the file holds the secret: at least 32 bytes)") end
  local protocol = require "ferry.bridge.protocol"
  local keys = {}
  for _, word in ipairs(list) do
    local id, file = word:match("^([^=]+)=(.+)$")
    if not id or not id:match(protocol.KEY_ID_PATTERN) then usage("--key expects ID=FILE, got '" .. word .. "'") end
    local secret, err = protocol.read_key(file)
    if not secret then fail(err) end
    keys[id] = secret
  end
  return keys
end

define("bridge serve", [[
usage: ferry bridge serve --listen HOST:PORT --key ID=FILE... --sandbox TEMPLATE --state-dir DIR [OPTIONS]
Serve the sandboxes of TEMPLATE over the signed HTTP bridge protocol (README "Bridge"). Runs until SIGTERM or
SIGINT, then stops gracefully: no new requests, running commands finish (or are killed after the grace),
leases are recorded, the audit log is flushed.
  --listen HOST:PORT      address to listen on (port 0: any free port; the line on stderr names it)
  --key ID=FILE           a key id and the file holding its secret (>= 32 bytes); repeatable
  --sandbox TEMPLATE      provider string in which {lease} is replaced by the lease id, e.g. bwrap:/srv/ferry/{lease};
                          the word holding {lease}, when an absolute path, is a dir created per lease
  --state-dir DIR         leases are recorded here (one JSON file each) and survive a restart
  --public-host NAME      the Host requests must be signed for (default: the listen address)
  --prefix /PATH          serve under /PATH/v1/... (behind a proxy that keeps the path)
  --lease-ttl SEC         a lease's ttl and the most a client may ask for (default 3600)
  --max-leases N          active leases at most (default 100)
  --audit-log FILE        one JSON line per request appended to FILE
  --tls-cert FILE, --tls-key FILE   serve HTTPS
  --idle-timeout SEC      a connection gets this long to send a request (default 10)
  --max-requests N        requests served at once (default 512; more get 429)
  --max-connections N     open connections at most (default 1024)
  --shutdown-grace SEC    on SIGTERM/SIGINT, running commands get this long before they are killed (default 10)
]], { options = {
  { names = { "--listen" }, key = "listen", value = "HOST:PORT" },
  { names = { "--key" }, key = "keys", value = "ID=FILE", multi = true },
  { names = { "--sandbox" }, key = "sandbox", value = "TEMPLATE" },
  { names = { "--state-dir" }, key = "state_dir", value = "DIR" },
  { names = { "--public-host" }, key = "public_host", value = "NAME" },
  { names = { "--prefix" }, key = "prefix", value = "/PATH" },
  { names = { "--lease-ttl" }, key = "lease_ttl", value = "SEC" },
  { names = { "--max-leases" }, key = "max_leases", value = "N" },
  { names = { "--audit-log" }, key = "audit_log", value = "FILE" },
  { names = { "--tls-cert" }, key = "tls_cert", value = "FILE" },
  { names = { "--tls-key" }, key = "tls_key", value = "FILE" },
  { names = { "--idle-timeout" }, key = "idle_timeout", value = "SEC" },
  { names = { "--max-requests" }, key = "max_requests", value = "N" },
  { names = { "--max-connections" }, key = "max_connections", value = "N" },
  { names = { "--shutdown-grace" }, key = "shutdown_grace", value = "SEC" },
}, max_args = 0 }, function(o)
  local host, port = listen_address(o.listen)
  if not o.sandbox then usage("missing --sandbox TEMPLATE (e.g. bwrap:/srv/ferry/{lease})") end
  if not o.sandbox:find("{lease}", 1, true) then
    usage("--sandbox TEMPLATE must hold {lease}, got '" .. o.sandbox .. "'")
  end
  if not o.state_dir then usage("missing --state-dir DIR") end
  if (o.tls_cert == nil) ~= (o.tls_key == nil) then usage("--tls-cert and --tls-key go together") end
  if o.prefix and not o.prefix:match("^/[%w._~/-]*[%w._~-]$") then
    usage("--prefix expects /PATH, got '" .. o.prefix .. "'")
  end
  local keys = read_keys(o.keys)
  local idle = positive(o.idle_timeout, "--idle-timeout")
  local server, err = require("ferry.bridge.server").start {
    host = host, port = port, keys = keys, template = o.sandbox, state_dir = o.state_dir, public_host = o.public_host,
    prefix = o.prefix, lease_ttl_s = positive(o.lease_ttl, "--lease-ttl"),
    max_leases = positive(o.max_leases, "--max-leases"),
    audit_log = o.audit_log, tls_cert = o.tls_cert, tls_key = o.tls_key, idle_timeout_ms = idle and idle * 1000,
    max_requests = positive(o.max_requests, "--max-requests"),
    max_connections = positive(o.max_connections, "--max-connections"),
  }
  if not server then fail(err) end
  io.stderr:write(string.format("ferry bridge: listening on %s:%d as %s%s (state %s)\n", host, server.port,
    server.public_host, o.tls_cert and " (https)" or "", o.state_dir))
  io.stderr:flush()
  -- serve until SIGTERM or SIGINT, then shut down gracefully (a second signal does not cut that short)
  local task, core = require "ferry.task", require "ferry.core"
  local grace = o.shutdown_grace == "0" and 0 or positive(o.shutdown_grace, "--shutdown-grace") or 10
  local got
  task.await(function(wake)
    local function on_signal(name)
      if got then return end
      got = name
      io.stderr:write("ferry bridge: ", name, ": shutting down (running commands get ", grace, " s)\n")
      task.spawn(function()
        server:shutdown(grace * 1000)
        wake()
      end)
    end
    server.watchers = { core.signal_watch("SIGTERM", on_signal), core.signal_watch("SIGINT", on_signal) }
  end)
  for _, w in ipairs(server.watchers) do w:stop() end
  io.stderr:write("ferry bridge: stopped\n")
  return EXIT.ok
end)

local function age(seconds)
  if seconds < 0 then return "-" .. age(-seconds) end
  if seconds < 120 then return seconds .. "s" end
  if seconds < 7200 then return math.floor(seconds / 60) .. "m" end
  return math.floor(seconds / 3600) .. "h"
end

define("bridge leases", [[
usage: ferry bridge leases --state-dir DIR [--json]
List the leases recorded in a bridge server's state dir: id, state, key, name, issue, run, time left, sandbox.
]], { options = { { names = { "--state-dir" }, key = "state_dir", value = "DIR" }, options.JSON }, max_args = 0 },
function(o)
  if not o.state_dir then usage("missing --state-dir DIR") end
  local core = require "ferry.core"
  local protocol = require "ferry.bridge.protocol"
  local names, err = core.fs_readdir(o.state_dir)
  if not names then fail(err) end
  local list = {}
  for _, name in ipairs(names) do
    local f = name:match("^%x+%.json$") and io.open(o.state_dir .. "/" .. name, "rb")
    if f then
      local lease = protocol.decode(f:read("a") or "")
      f:close()
      if lease then list[#list + 1] = lease end
    end
  end
  table.sort(list, function(a, b) return (a.created_at or 0) < (b.created_at or 0) end)
  local now = os.time()
  for _, l in ipairs(list) do
    if o.json then
      io.stdout:write(protocol.encode(l), "\n")
    else
      io.stdout:write(table.concat({ l.id, l.state or "?", l.owner or "-", l.name or "-", l.issue or "-", l.run or "-",
        l.state == "active" and age((l.expires_at or now) - now) or "-", l.sandbox or "-" }, "  "), "\n")
    end
  end
  return EXIT.ok
end)

define("bridge release", [[
usage: ferry bridge release -p PROVIDER
End the lease of a bridge provider string (bridge+http://...&lease=ID): the bridge removes its sandbox.
]], { options = { options.PROVIDER }, max_args = 0 }, function(o)
  if not o.provider then usage("missing -p PROVIDER") end
  if not o.provider:match("^bridge%+") then usage("-p expects a bridge+http(s):// provider string") end
  local sb, err = require("ferry").open(o.provider)
  if not sb then fail(err) end
  local ok, rerr = sb.provider:release()
  sb:close()
  if not ok then fail(rerr) end
  io.stdout:write("released lease ", sb.provider.lease_id, "\n")
end)

registry.verb("bridge", HELP, function(args)
  local sub = args[1]
  local known = false
  for _, s in ipairs(SUBCOMMANDS) do known = known or s == sub end
  if not known then
    return registry.usage_error("bridge: " .. (sub and ("unknown subcommand '" .. sub .. "'") or "missing a subcommand")
      .. " (serve, leases, release)")
  end
  local v = registry.verbs["bridge " .. sub]
  if args[2] == "--help" or args[2] == "-h" then
    io.stdout:write(v.help)
    return EXIT.ok
  end
  return v.fn(table.move(args, 2, #args, 1, {}))
end)

return M
