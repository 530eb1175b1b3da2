--- Provider `ssh://[USER@]HOST[:PORT][?Option=Value&...]`: commands run on HOST over ssh.
-- Query keys are OpenSSH option names passed as `-o Option=Value` (values URL-decoded, then read by ssh as
-- an ssh_config line: a path holding spaces is written in double quotes, %22); they come before
-- ferry's defaults, so they win (ssh keeps the first value of an option), and the user's ssh config applies
-- as usual. Defaults: BatchMode=yes (never prompt), ConnectTimeout=10, LogLevel=ERROR (no "Permanently
-- added" chatter on stderr), ServerAliveInterval=15, ControlPersist=10m.
--
-- One connection per user and destination, shared by every command of every ferry process (OpenSSH
-- connection sharing, ControlMaster=auto): the first command starts the master, which outlives the ferry
-- process by at most ControlPersist idle time, so the next `ferry` invocation pays no handshake. Its socket
-- lives in a private runtime dir ($XDG_RUNTIME_DIR/ferry, else /tmp/ferry-<uid>), which must be a directory
-- of the user with mode 0700 (made so when missing; anything else is refused); the socket is named by a hash
-- of the destination and the options, so a master for another destination or other options is never reused.
-- At open, a socket that is not the user's socket is removed and one whose master is gone (`ssh -O check`
-- fails) too: the next command starts a new master. close() leaves the master to its ControlPersist.
-- The remote command is ONE string `sh -c '<script>'`: ssh joins its arguments with spaces and the remote
-- login shell parses them again, so the script is quoted once for that shell.
local core = require "ferry.core"
local proc = require "ferry.proc"
local util = require "ferry.provider_util"

local M = {}

M.usage = "ssh://[USER@]HOST[:PORT][?Option=Value&...]"
M.help = "commands run on HOST over one shared ssh connection; query keys are OpenSSH -o options"

local CONNECT_TIMEOUT_S = 10
local PERSIST = "10m"
local SOCKET_NAME_HEX = 24 -- a unix socket path must fit in 108 bytes
local PRIVATE_MODE = tonumber("700", 8)

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

-- ssh's options and the destination, shared by every invocation (commands, probe, -O check, -G); the socket's
-- name is a hash of them without the ControlPath (`path`, nil for that hash).
local function base_argv(t, path)
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
  if path then option("ControlPath", path) end
  option("ControlPersist", PERSIST)
  if t.user then table.move({ "-l", t.user }, 1, 2, #argv + 1, argv) end
  if t.port then table.move({ "-p", tostring(t.port) }, 1, 2, #argv + 1, argv) end
  return argv
end

-- The private runtime dir holding the connection sockets: `dir` when given (specs), else
-- $XDG_RUNTIME_DIR/ferry, else /tmp/ferry-<uid>. Made with mode 0700 when missing; an existing one must be
-- a directory (not a symlink) owned by the user with mode 0700. Returns the path or nil, message, code.
local function runtime_dir(dir)
  local uid = core.getuid()
  if not dir then
    local xdg = os.getenv("XDG_RUNTIME_DIR")
    dir = (xdg and xdg:sub(1, 1) == "/") and xdg:gsub("/+$", "") .. "/ferry" or "/tmp/ferry-" .. uid
  end
  local st = core.fs_lstat(dir)
  if not st then
    local parent, leaf = dir:match("^(.*)/([^/]+)$")
    local ok, err, code = core.fs_safe_mkdir(parent == "" and "/" or parent, leaf, PRIVATE_MODE)
    if not ok and code ~= "EEXIST" then return nil, "cannot make the ssh socket dir " .. dir .. ": " .. err, code end
    st = core.fs_lstat(dir)
  end
  local wrong = not st and "missing"
    or st.kind ~= "dir" and ("a " .. st.kind)
    or st.uid ~= uid and ("owned by uid " .. st.uid .. ", not " .. uid)
    or st.mode ~= PRIVATE_MODE and string.format("mode %04o, not 0700", st.mode)
  if wrong then
    return nil, string.format("the ssh socket dir %s is %s: it must be a directory of its own user with mode "
      .. "0700 (others could use or replace the shared connection); remove it or fix it", dir, wrong), "EACCES"
  end
  return dir
end

-- The control socket's path: the runtime dir, then a hash of ssh's options and the destination.
local function control_path(argv, host, dir)
  local key = table.concat(argv, "\0") .. "\0" .. host
  return dir .. "/" .. core.sha256(key):sub(1, SOCKET_NAME_HEX)
end

-- Make sure the socket at p.control_path is a live master of this user or absent: a file that is not the
-- user's socket, or a socket whose master does not answer `ssh -O check`, is removed (the next command
-- starts a new master). Returns true or nil, message, code.
local function settle_socket(p)
  local path = p.control_path
  local st = core.fs_lstat(path)
  if not st then return true end
  if st.kind == "socket" and st.uid == core.getuid() then
    local res = proc.run { argv = util.with(p.argv, "-O", "check", "--", p.host), timeout_ms = 10000 }
    if res and res.code == 0 then return true end
  end
  local ok, err = os.remove(path)
  if not ok and core.fs_lstat(path) then
    return nil, p.name .. ": cannot replace the stale ssh socket " .. path .. ": " .. tostring(err), "EACCES"
  end
  return true
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

--- Nothing to release: the shared connection outlives the sandbox by its ControlPersist idle time (the next
--- ferry process reuses it). M.disconnect ends it.
function Ssh.close() end

--- End the shared connection now (`ssh -O exit`); true when a master was there and exited.
---@return boolean
function Ssh:disconnect()
  -- cleanup: it runs on the way out of an interrupted ferry too
  local res = proc.run { argv = util.with(self.argv, "-O", "exit", "--", self.host), timeout_ms = 10000,
    cleanup = true }
  return res ~= nil and res.code == 0
end

--- Open the provider: parse the URL, check the private socket dir (opts.control_dir overrides where it is),
--- replace a stale or foreign socket and, unless opts.probe == false, run one probe command (which starts the
--- shared connection when none is there).
---@param arg string  the text after "ssh:" (//[user@]host[:port][?query])
---@param opts table|nil  probe (bool), on_exec, control_dir
---@return table|nil provider, string|nil err, string|nil code
function M.open(arg, opts)
  opts = opts or {}
  local t, perr = M.parse(arg)
  if not t then return nil, "ssh:" .. (arg or "") .. ": " .. perr, "EINVAL" end
  local dir, derr, dcode = runtime_dir(opts.control_dir)
  if not dir then return nil, t.name .. ": " .. derr, dcode end
  local connect_timeout = CONNECT_TIMEOUT_S
  for _, kv in ipairs(t.options) do
    if kv[1]:lower() == "connecttimeout" then connect_timeout = tonumber(kv[2]) or connect_timeout end
  end
  local path = control_path(base_argv(t), t.host, dir)
  local argv = base_argv(t, path)
  local p = setmetatable({
    name = t.name,
    host = t.host,
    user = t.user,
    port = t.port,
    argv = argv,
    control_path = path,
    connect_timeout = connect_timeout,
    caps = { stdin = true, binary = true, costly = true },
    default_remote_dir = nil,
    scratch_dir = "/tmp",
  }, Ssh)
  local ok, serr, scode = settle_socket(p)
  if not ok then return nil, serr, scode end
  return util.checked(p, opts, probe)
end

return M
