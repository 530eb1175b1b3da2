--- Provider `ssh://[USER@]HOST[:PORT][?Option=Value&...]`: commands run on HOST over ssh.
-- Query keys are OpenSSH option names passed as `-o Option=Value` (values URL-decoded, then read by ssh as
-- an ssh_config line: a path holding spaces is written in double quotes, %22); they come before
-- ferry's defaults, so they win (ssh keeps the first value of an option), and the user's ssh config applies
-- as usual. Defaults: BatchMode=yes (never prompt), ConnectTimeout=10, LogLevel=ERROR (no "Permanently
-- added" chatter on stderr), ServerAliveInterval=15.
--
-- One connection per sandbox, shared by every command (OpenSSH connection sharing): the probe at open time
-- starts the master, its socket lives in a private 0700 directory, it outlives an idle spell by at most
-- ControlPersist (60 s) and a later command starts it again; close() ends it with `ssh -O exit`.
-- The remote command is ONE string `sh -c '<script>'`: ssh joins its arguments with spaces and the remote
-- login shell parses them again, so the script is quoted once for that shell.
local core = require "ferry.core"
local proc = require "ferry.proc"
local util = require "ferry.provider_util"

local M = {}

M.usage = "ssh://[USER@]HOST[:PORT][?Option=Value&...]"
M.help = "commands run on HOST over one shared ssh connection; query keys are OpenSSH -o options"

local CONNECT_TIMEOUT_S = 10
local PERSIST = "60s"

-- Short and fixed rather than $TMPDIR: a unix socket path must fit in 108 bytes (the name is 40 hex digits).
local CONTROL_PREFIX = "/tmp/ferry-ssh-"

-- Query "A=1&B=x%20y" -> list of {key, value}; option names are letters and digits, as OpenSSH spells them.
local function parse_query(query)
  local options = {}
  for pair in query:gmatch("[^&]+") do
    local key, value = pair:match("^([^=]*)=(.*)$")
    if not key then return nil, "expected Option=Value in the query, got '" .. pair .. "'" end
    if not key:match("^%a%w*$") then return nil, "'" .. key .. "' is not an ssh option name" end
    value = util.url_decode(value)
    if value == "" or value:find("[%c]") then
      return nil, "the value of " .. key .. " must be non-empty and without control characters"
    end
    options[#options + 1] = { key, value }
  end
  return options
end

--- Parse the text after "ssh:" ("//[user@]host[:port][?query]"). Returns {user, host, port, options, name}
--- or nil and a message. `name` is the display form ssh://[user@]host[:port], without the query.
---@param arg string
---@return table|nil target, string|nil err
function M.parse(arg)
  local rest = (arg or ""):gsub("^//", "")
  local authority, query = rest:match("^([^?]*)%??(.*)$")
  local user, hostport = authority:match("^(.*)@([^@]*)$")
  hostport = hostport or authority
  local host, port
  local bracketed, after = hostport:match("^%[([^%]]*)%](.*)$") -- [ipv6]:port
  if bracketed then
    host, port = bracketed, after:match("^:(.*)$")
    if after ~= "" and not port then return nil, "unexpected '" .. after .. "' after the host" end
  elseif select(2, hostport:gsub(":", "")) == 1 then
    host, port = hostport:match("^(.*):(.*)$")
  else
    host = hostport -- a name, or a bare IPv6 address
  end
  if host == "" then return nil, "expected ssh://[USER@]HOST[:PORT], got no host" end
  if host:find("^%-") or host:find("[%s/@]") then return nil, "'" .. host .. "' is not a host name" end
  if user then
    user = util.url_decode(user)
    if user == "" or user:find("^%-") or user:find("[%c%s]") then return nil, "'" .. user .. "' is not a user name" end
  end
  local portnum = port and tonumber(port:match("^%d+$") or "")
  if port and not (portnum and portnum >= 1 and portnum <= 65535) then
    return nil, "expected a port number from 1 to 65535 after ':', got '" .. port .. "'"
  end
  local options, err = parse_query(query)
  if not options then return nil, err end
  local shown = host:find(":", 1, true) and "[" .. host .. "]" or host
  local name = "ssh://" .. (user and user .. "@" or "") .. shown .. (portnum and ":" .. portnum or "")
  return { user = user, host = host, port = portnum, options = options, name = name }
end

local Ssh = {}
Ssh.__index = Ssh

-- ssh's options and the destination, shared by every invocation (commands, probe, -O exit, -G).
local function base_argv(t, control_dir)
  local argv = { "ssh", "-T" }
  local given = {}
  local function option(key, value)
    if given[key:lower()] then return end
    given[key:lower()] = true
    argv[#argv + 1] = "-o"
    argv[#argv + 1] = key .. "=" .. value
  end
  for _, kv in ipairs(t.options) do
    argv[#argv + 1] = "-o"
    argv[#argv + 1] = kv[1] .. "=" .. kv[2]
    given[kv[1]:lower()] = true
  end
  option("BatchMode", "yes")
  option("ConnectTimeout", tostring(CONNECT_TIMEOUT_S))
  option("LogLevel", "ERROR")
  option("ServerAliveInterval", "15")
  option("ControlMaster", "auto")
  option("ControlPath", control_dir .. "/%C")
  option("ControlPersist", PERSIST)
  if t.user then table.move({ "-l", t.user }, 1, 2, #argv + 1, argv) end
  if t.port then table.move({ "-p", tostring(t.port) }, 1, 2, #argv + 1, argv) end
  return argv
end

--- The argv that runs `script` with sh on the host (through the shared connection).
---@param script string
---@return string[]
function Ssh:command(script)
  return util.with(self.argv, "--", self.host, "sh -c " .. core.sh_quote(script))
end

-- The user ssh logs in as: the URL's, else what the ssh config resolves (`ssh -G` makes no connection).
function Ssh:login_user()
  if self.user then return self.user end
  local res = proc.run { argv = util.with(self.argv, "-G", "--", self.host), timeout_ms = 10000 }
  local user = res and res.code == 0 and res.stdout:match("\nuser ([^\n]+)")
  return user or os.getenv("USER") or "?"
end

--- Explain a failed ssh run (exit 255) as "<name>: <reason>", with an errno-like code; nil when stderr does
--- not look like ssh's own failure (the remote command may exit 255 itself).
---@param res table  a proc.run result
---@return string|nil message, string|nil code
function Ssh:explain(res)
  if not res or res.code ~= 255 then return nil end
  local err = res.stderr or ""
  local name = self.name
  if err:find("REMOTE HOST IDENTIFICATION HAS CHANGED", 1, true) or err:find("Host key for .- has changed") then
    return name .. ": host key does not match known_hosts (the host was reinstalled, or someone is in the "
      .. "middle): check the host's key, then remove the old one with ssh-keygen -R", "EHOSTKEY"
  end
  local keytype = err:match("No (%S+) host key is known for")
  if keytype or err:find("Host key verification failed", 1, true) then
    return name .. ": host key is not in known_hosts and StrictHostKeyChecking is on: add it (ssh-keyscan) "
      .. "or pass ?StrictHostKeyChecking=accept-new", "EHOSTKEY"
  end
  if err:find("Permission denied", 1, true) or err:find("Too many authentication failures", 1, true) then
    return string.format("%s: authentication refused for user %s: check IdentityFile/agent", name,
      self:login_user()), "EACCES"
  end
  local reason = err:match("connect to host .- port %d+: ([^\r\n]+)")
    or err:match("Could not resolve hostname [^:]+: ([^\r\n]+)")
    or err:match("(Connection timed out during banner exchange)")
    or err:match("kex_exchange_identification: ([^\r\n]+)")
    or err:match("(Connection closed by [^\r\n]+)")
    or err:match("(Connection reset by [^\r\n]+)")
  if reason then
    local code = reason:find("timed out", 1, true) and "ETIMEDOUT"
      or reason:find("refused", 1, true) and "ECONNREFUSED" or "EHOSTUNREACH"
    return string.format("%s: cannot connect: %s (connect timeout %d s)", name, reason, self.connect_timeout), code
  end
  local bad_option = err:match("command%-line line %d+: ([^\r\n]+)") or err:match("(Bad configuration option[^\r\n]*)")
  if bad_option then
    return name .. ": ssh refused an option: " .. bad_option .. " (a value holding spaces must be quoted as in "
      .. "ssh_config, e.g. IdentityFile=%22/path/with space%22)", "EINVAL"
  end
  if err:find("Control socket", 1, true) or err:find("mux_client", 1, true) then
    return name .. ": the shared connection failed: " .. util.tail(err), "EIO"
  end
  return nil
end

-- One command through the connection: starts the master, and tells an unreachable host, refused
-- credentials or a wrong host key from a working sandbox.
local function probe(p, opts)
  local timeout = p.connect_timeout * 1000 + 30000
  local res, err, code = util.probe(p, opts, timeout)
  if not res then
    return util.start_error(p.name, err, code, { program = "ssh", install = " (apt-get install openssh-client)" })
  end
  if res.timed_out then
    return nil, string.format("%s: cannot connect: no answer within %d s", p.name, timeout // 1000), "ETIMEDOUT"
  end
  if util.answered(res) then return true end
  local msg, mcode = p:explain(res)
  if msg then return nil, msg, mcode end
  return nil, string.format("%s: a probe command failed with exit code %s%s; check that `ssh %s true` works",
    p.name, tostring(res.code or res.signal), util.stderr_note(res), p.host), "EIO"
end

--- End the shared connection and remove its socket directory. Safe to call twice.
function Ssh:close()
  if not self.control_dir then return end
  -- cleanup: it runs on the way out of an interrupted ferry too
  proc.run { argv = util.with(self.argv, "-O", "exit", "--", self.host), timeout_ms = 10000, cleanup = true }
  core.fs_remove_tree(self.control_dir)
  self.control_dir = nil
end

--- Open the provider: parse the URL, make the private socket directory and, unless opts.probe == false,
--- run one probe command that also starts the shared connection.
---@param arg string  the text after "ssh:" (//[user@]host[:port][?query])
---@param opts table|nil  probe (bool), on_exec
---@return table|nil provider, string|nil err, string|nil code
function M.open(arg, opts)
  opts = opts or {}
  local t, perr = M.parse(arg)
  if not t then return nil, "ssh:" .. (arg or "") .. ": " .. perr, "EINVAL" end
  local control_dir, derr, dcode = core.fs_mkdtemp(CONTROL_PREFIX)
  if not control_dir then
    return nil, t.name .. ": cannot make a directory for the connection socket: " .. derr, dcode
  end
  local connect_timeout = CONNECT_TIMEOUT_S
  for _, kv in ipairs(t.options) do
    if kv[1]:lower() == "connecttimeout" then connect_timeout = tonumber(kv[2]) or connect_timeout end
  end
  local p = setmetatable({
    name = t.name,
    host = t.host,
    user = t.user,
    port = t.port,
    argv = base_argv(t, control_dir),
    control_dir = control_dir,
    connect_timeout = connect_timeout,
    caps = { stdin = true, binary = true },
    default_remote_dir = nil,
    scratch_dir = "/tmp",
  }, Ssh)
  return util.checked(p, opts, probe)
end

return M
