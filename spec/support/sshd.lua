--- A real sshd on 127.0.0.1 for the specs: a free port, a generated host key and client key, public-key
-- authentication only (UsePAM no), an unprivileged test user, a known_hosts file for the client. The daemon
-- runs in the foreground as a process of the spec (its own process group) and logs to a file at VERBOSE, so a
-- spec can count the TCP connections it accepted.
--
--   local server = sshd.start()
--   server:url { StrictHostKeyChecking = "yes" }  -- ssh://ferrytest@127.0.0.1:PORT?IdentityFile=...&...
--   server:accepted()                             -- connections authenticated so far
--   server:stop()
local ferry = require "ferry"
local helpers = require "support.helpers"
local core = require "ferry.core"

local M = {}

local SSHD = "/usr/sbin/sshd"
local TEST_USER = "ferrytest"
local START_TIMEOUT_MS = 10000

local function run(argv)
  local res, err = ferry.proc.run { argv = argv, timeout_ms = 30000 }
  assert(res, err)
  return res
end

local function must(argv)
  local res = run(argv)
  assert(res.code == 0, table.concat(argv, " ") .. " failed: " .. res.stderr)
  return res.stdout
end

local read_file, write_file = helpers.read_file, helpers.write_file

-- Signal a process, or a whole process group when `pid` is negative (procps kill: dash's builtin cannot).
local function kill(pid, signal)
  run { "kill", "-s", signal, "--", tostring(pid) }
end

local function current_user()
  return (must { "id", "-un" }:gsub("%s+$", ""))
end

-- Root runs the daemon with privilege separation and logs in as an unprivileged user made for the specs;
-- anyone else can only log in as themselves. useradd leaves the password field locked ("!"), and sshd
-- without PAM refuses locked accounts even for public keys: "*" means "no password" without locking.
local function login_user()
  if current_user() ~= "root" then return current_user() end
  if run({ "id", "-u", TEST_USER }).code ~= 0 then
    must { "useradd", "-m", "-s", "/bin/sh", TEST_USER }
  end
  must { "usermod", "-p", "*", TEST_USER }
  return TEST_USER
end

local function keygen(path, comment)
  must { "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path }
  return (read_file(path .. ".pub"):gsub("%s+$", ""))
end

--- A new key pair in the server's directory (e.g. one the server does not know). Returns the private key path.
function M.new_key(server, name)
  local path = server.dir .. "/" .. name
  keygen(path, name)
  return path
end

local function config_text(s, port)
  return table.concat({
    "ListenAddress 127.0.0.1",
    "Port " .. port,
    "HostKey " .. s.dir .. "/host_ed25519",
    "PidFile " .. s.dir .. "/sshd.pid",
    "AuthorizedKeysFile " .. s.dir .. "/authorized_keys",
    "AllowUsers " .. s.user,
    "UsePAM no",
    "StrictModes no",
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PermitRootLogin prohibit-password",
    "LogLevel VERBOSE",
    "MaxSessions 100",
    "MaxStartups 100",
    s.extra_config or "",
    "",
  }, "\n")
end

local function free_port_candidate()
  return 20000 + math.random(0, 39999)
end

-- Start the daemon on `port`; returns the task running it and its pid once it listens, or nil and the
-- reason when it could not bind or did not come up.
local function launch(s, port)
  write_file(s.config, config_text(s, port))
  write_file(s.log, "")
  local pid
  local runner = ferry.spawn(function()
    return ferry.proc.run {
      argv = { SSHD, "-D", "-f", s.config, "-E", s.log },
      on_spawn = function(p) pid = p end,
    }
  end)
  local deadline = core.now_ms() + START_TIMEOUT_MS
  while core.now_ms() < deadline do
    local log = read_file(s.log) or ""
    if log:find("Server listening on 127.0.0.1 port " .. port, 1, true) then return runner, pid end
    if runner.done then return nil, log end
    ferry.sleep(20)
  end
  kill(-pid, "KILL")
  ferry.wait(runner)
  return nil, "sshd did not listen within " .. START_TIMEOUT_MS .. " ms: " .. (read_file(s.log) or "")
end

local Server = {}
Server.__index = Server

--- Start a server. Returns a table with host, port, user, key (client private key), known_hosts, dir, log.
--- opts.config: more sshd_config lines (e.g. {"SetEnv PATH=/fake/bin:/usr/bin:/bin"}).
function M.start(opts)
  assert(core.fs_stat(SSHD), SSHD .. " is missing: apt-get install openssh-server")
  math.randomseed(core.getpid() * 1000 + os.time())
  local dir = assert(core.fs_mkdtemp("/tmp/ferry-sshd-"))
  -- The login user reads authorized_keys itself: the directory must be reachable for it.
  must { "chmod", "0755", dir }
  if current_user() == "root" then must { "mkdir", "-p", "/run/sshd" } end
  local s = setmetatable({
    dir = dir, host = "127.0.0.1", user = login_user(),
    config = dir .. "/sshd_config", log = dir .. "/sshd.log",
    key = dir .. "/client_ed25519", known_hosts = dir .. "/known_hosts",
    extra_config = opts and opts.config and table.concat(opts.config, "\n") or nil,
  }, Server)
  local host_pub = keygen(dir .. "/host_ed25519", "ferry-spec-host")
  write_file(dir .. "/authorized_keys", keygen(s.key, "ferry-spec-client") .. "\n")
  must { "chmod", "0644", dir .. "/authorized_keys" }
  s.host_pub = host_pub
  local why
  for _ = 1, 10 do -- a random port may be taken: try another
    local port = free_port_candidate()
    local runner, pid_or_err = launch(s, port)
    if runner then
      s.port, s.runner, s.pid = port, runner, pid_or_err
      write_file(s.known_hosts, string.format("[127.0.0.1]:%d %s\n", port, host_pub))
      return s
    end
    why = pid_or_err
    if not why:find("Address already in use", 1, true) then break end
  end
  M.remove(s)
  error("cannot start sshd: " .. why)
end

--- The ssh options that reach this server with its client key and known_hosts, merged with `extra`.
function Server:options(extra)
  local opts = {
    IdentityFile = self.key,
    IdentitiesOnly = "yes",
    UserKnownHostsFile = self.known_hosts,
    GlobalKnownHostsFile = "/dev/null",
    StrictHostKeyChecking = "yes",
  }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return opts
end

local function url_escape(s)
  return (s:gsub("[^%w%-%._~/]", function(c) return string.format("%%%02X", c:byte()) end))
end

--- The ferry provider string for this server: ssh://USER@127.0.0.1:PORT?Option=Value&...
function Server:url(extra, port)
  local opts = self:options(extra)
  local keys = {}
  for k in pairs(opts) do keys[#keys + 1] = k end
  table.sort(keys)
  local query = {}
  for _, k in ipairs(keys) do
    local v = opts[k]
    if v:find("%s") then v = '"' .. v .. '"' end -- ssh reads the value as an ssh_config line
    query[#query + 1] = k .. "=" .. url_escape(v)
  end
  return string.format("ssh://%s@127.0.0.1:%d?%s", self.user, port or self.port, table.concat(query, "&"))
end

--- argv of a plain `ssh` (a new connection each time) to this server running `command`.
function Server:ssh_argv(command)
  local argv = { "ssh", "-T", "-o", "BatchMode=yes", "-p", tostring(self.port), "-l", self.user }
  for k, v in pairs(self:options()) do
    argv[#argv + 1] = "-o"
    argv[#argv + 1] = k .. "=" .. v
  end
  argv[#argv + 1] = "127.0.0.1"
  argv[#argv + 1] = command
  return argv
end

--- How many connections the server has authenticated so far (one "Accepted publickey" line each).
function Server:accepted()
  local n = 0
  for _ in (read_file(self.log) or ""):gmatch("Accepted publickey") do n = n + 1 end
  return n
end

-- Pids whose parent is `pid` (the per-connection sshd processes start their own sessions, so killing the
-- daemon's process group does not reach them).
local function children_of(pid)
  local out = {}
  for _, name in ipairs(core.fs_readdir("/proc") or {}) do
    local stat = name:match("^%d+$") and read_file("/proc/" .. name .. "/stat")
    local ppid = stat and stat:match("^%d+ %b() %S+ (%d+)")
    if ppid and tonumber(ppid) == pid then out[#out + 1] = tonumber(name) end
  end
  return out
end

--- Stop the daemon and its connections, and remove its directory.
function Server:stop()
  if self.pid then
    for _, child in ipairs(children_of(self.pid)) do kill(child, "TERM") end
    kill(-self.pid, "TERM")
    ferry.wait(self.runner)
    self.pid = nil
  end
  M.remove(self)
end

function M.remove(s)
  if s.dir then core.fs_remove_tree(s.dir) end
  s.dir = nil
end

return M
