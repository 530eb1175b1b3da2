--- ferry.client: a sandbox reachable only by running commands (README "Lua API"): opening it on a provider
-- (with the persistent session where commands are costly), running commands, and streaming bytes in and out;
-- the file operations are ferry.files'.
--
-- Every operation is one shell script run through the provider with cwd /. Bytes travel the fastest way the
-- channel allows: raw on stdin/stdout when it is 8-bit clean; base64 on stdin when it is not; base64 chunks
-- of at most 96 KiB inside the scripts themselves when there is no stdin. Every transfer is checked by
-- length. Raw input through the channel's wrapper or the session is counted by the relay that feeds the
-- command's stdin in the sandbox (ferry.channel), which reports the count after the command. Otherwise the
-- sandbox counts what it read or wrote with `tee /dev/fd/5 | wc -c` in the same command and reports it in a
-- status line after the data ("::ferry:: rc=N\nCOUNT"), which the client strips.
--
-- The framing and the encodings are in ferry.transfer. On a channel with stdin every command runs under the
-- wrapper of ferry.channel: its environment travels on stdin (never on a command line), it runs in a process
-- group of its own, and closing its stdin stops it inside the sandbox (a timeout, an interrupt, a dead ferry).
--
-- A provider (providers/<name>.lua: scripts/README.md "Writing a provider") gives provider:command(script), an
-- argv running `sh -c script`, or provider:exec(script, popts) (then every command goes through it).
local channel = require "ferry.channel"
local core = require "ferry.core"
local files = require "ferry.files"
local proc = require "ferry.proc"
local policy = require "ferry.policy"
local provider_util = require "ferry.provider_util"
local transfer = require "ferry.transfer"
local util = require "ferry.util"

local M = {}

local RAW_CHUNK = 72 * 1024  -- encodes to exactly 96 KiB of base64: one command each without stdin

local q = core.sh_quote
local tail = util.tail
local prelude = transfer.prelude

local Sandbox = {}
Sandbox.__index = Sandbox

-- nil, "<what>: <why>", code for a command that failed.
local function command_error(res, what)
  if res.timed_out then return nil, what .. ": timed out", "ETIMEDOUT" end
  local why = provider_util.why(res)
  return nil, what .. ": " .. why, why:find("Permission denied", 1, true) and "EACCES" or "EIO"
end

--- True when the channel is 8-bit clean (caps.binary): bytes travel raw, not as base64.
---@return boolean
function Sandbox:is_binary()
  return self.caps.binary == true
end

--- How data goes in: "raw" (stdin, 8-bit clean), "b64" (base64 on stdin) or "chunks" (base64 in scripts).
function Sandbox:input_mode()
  if not self.caps.stdin then return "chunks" end
  return self:is_binary() and "raw" or "b64"
end

--- The provider's default remote dir (e.g. /sandbox/workspace for bwrap), or nil when it has none.
---@return string|nil
function Sandbox:default_remote_dir()
  return self.remote_dir_default
end

--- Call fn(argv, script) before every command the sandbox runs from now on, as opts.on_exec of ferry.open
--- is; returns a function that stops it (prepare and restore count their commands this way).
---@param fn fun(argv: string[]|nil, script: string)
---@return fun()
function Sandbox:watch(fn)
  if type(fn) ~= "function" then error("watch: expected a function, got " .. type(fn), 2) end
  local watcher = { fn = fn }
  self.watchers[watcher] = true
  return function() self.watchers[watcher] = nil end
end

-- Run one full script: through provider:exec, under the wrapper of ferry.channel (stdin: popts.env, the
-- sandbox command's environment, and popts.stdin travel on it), or as `sh -c script` without stdin.
-- Watchers see the argv (nil for provider:exec) and the script it runs with `sh -c` (the wrapper's).
function Sandbox:run_script(script, popts)
  local provider, env = self.provider, popts.env
  local argv, shown, run = nil, script, function() return provider:exec(script, popts) end
  if not provider.exec then
    popts.env = nil -- never the local process's environment
    if self.caps.stdin then
      argv, shown, run = channel.prepare_run(provider, script, popts, env, self:is_binary())
    else
      argv = provider:command(script)
      popts.argv = argv
      run = function() return proc.run(popts) end
    end
  end
  for watcher in pairs(self.watchers) do watcher.fn(argv, shown) end
  if self.on_exec then self.on_exec(argv, shown) end
  if self.log then self.log("debug", self.name .. ": " .. script:sub(1, 200)) end
  return run()
end

local function run_opts(opts, extra)
  local p = {
    timeout_ms = opts.timeout_ms, kill_grace_ms = opts.kill_grace_ms, on_stderr = opts.on_stderr,
    on_spawn = opts.on_spawn, max_output = opts.max_output, env = opts.env,
  }
  for k, v in pairs(extra) do p[k] = v end
  return p
end

--- Run a shell script (string) or an argv (list, quoted with sh.join) in the sandbox, cwd / unless opts.cwd.
--- Returns the ferry.proc.run result. opts: stdin (string or reader), env (NAME = string or number, false
--- unsets; the values travel on the command's stdin, never on a command line), cwd, timeout_ms (stops the
--- command's process group in the sandbox: its stdin closes, then TERM, KILL after kill_grace_ms),
--- kill_grace_ms, max_output, on_stdout, on_stderr.
---@param cmd string|string[]
---@param opts table|nil
---@return table|nil result, string|nil err, string|nil code
function Sandbox:exec(cmd, opts)
  opts = opts or {}
  channel.check_exec(opts, self.caps.stdin or self.provider.exec ~= nil, self.name)
  local script
  if type(cmd) == "table" then
    script = core.sh_join(cmd)
  elseif type(cmd) == "string" then
    script = cmd
  else
    error("exec: expected a script (string) or an argv (list), got " .. type(cmd), 2)
  end
  if opts.stdin ~= nil and self:input_mode() ~= "raw" then
    return self:pipe_in(script, opts.stdin, {
      env = opts.env, cwd = opts.cwd, timeout_ms = opts.timeout_ms, on_stdout = opts.on_stdout,
      on_stderr = opts.on_stderr, check = false, what = "exec",
    })
  end
  return self:run_script(prelude(opts) .. script,
    run_opts(opts, { stdin = opts.stdin, on_stdout = opts.on_stdout, stream_stdin = true }))
end

-- Run a wrapped script with the status line parsed off its stdout. Returns the result (code = the script's
-- exit code, stdout = what it printed unless opts.on_stdout) or nil, message, code.
function Sandbox:run_with_status(full, emit, b64, opts, what, stdin)
  local parts = {}
  local sink = transfer.status_sink(emit or function(c) parts[#parts + 1] = c end, b64)
  local res, err, code = self:run_script(full, run_opts(opts, { stdin = stdin, on_stdout = sink.push }))
  if not res then return nil, what .. ": " .. err, code end
  if res.timed_out then return res end
  local rc, count = sink.finish()
  if sink.err then return nil, what .. ": " .. sink.err, "EIO" end
  if not rc then
    return nil, string.format("%s: the sandbox command ended without its status line (exit code %s)%s", what,
      tostring(res.code or res.signal), tail(res.stderr) ~= "" and (": " .. tail(res.stderr)) or ""), "EIO"
  end
  res.code, res.count, res.delivered = rc, count, sink.bytes
  if not emit then res.stdout = table.concat(parts) end
  return res
end

-- pipe_in without stdin: base64 chunks appended to a scratch file, one command each; the last command also
-- decodes the file into the script.
function Sandbox:pipe_in_chunks(script, read, opts, what)
  local scratch = q((self.provider.scratch_dir or "/tmp") .. "/.ferry-in-" .. util.unique_hex(16) .. ".b64")
  local pieces = transfer.rechunk(read, RAW_CHUNK)
  local piece, first = pieces() or "", true
  while true do
    local nxt = pieces()
    local append = "(umask 077 && printf %s " .. q(core.b64_encode(piece)) .. (first and " > " or " >> ")
      .. scratch .. ") || exit 1\n"
    if nxt == nil then
      local full = prelude(opts) .. append .. transfer.wrap_in(script, "base64 -d < " .. scratch .. " | ")
        .. "rm -f " .. scratch .. '\nexit "$ferry_rc"\n'
      return self:run_with_status(full, opts.on_stdout, false, opts, what)
    end
    local res, err, code = self:run_script(prelude(opts) .. append, run_opts(opts, {}))
    if not res or res.code ~= 0 then
      self:run_script("rm -f " .. scratch, {})
      if not res then return nil, what .. ": " .. err, code end
      return command_error(res, what)
    end
    piece, first = nxt, false
  end
end

-- pipe_in on an 8-bit clean channel that counts the input it relays (the channel's wrapper, the session):
-- the script runs as it is, reading the bytes raw; res.count is the relay's count.
function Sandbox:pipe_in_counted(script, read, opts, what)
  local parts = {}
  local res, err, code = self:run_script(prelude(opts) .. script, run_opts(opts, {
    stdin = read, on_stdout = opts.on_stdout or function(c) parts[#parts + 1] = c end,
  }))
  if not res then return nil, what .. ": " .. err, code end
  if not opts.on_stdout then res.stdout = table.concat(parts) end
  res.count = res.input_bytes
  return res
end

--- True when the channel reports how many bytes of a command's input it relayed in the sandbox: commands
--- run under ferry.channel's wrapper, or through the session.
---@return boolean
function Sandbox:counts_input()
  if self.provider.exec then return self.provider.session ~= nil end
  return self.caps.stdin == true
end

--- Run `script` with the bytes of `reader` (a function returning chunks then nil, or a string) on its stdin.
--- Raw in one command when the channel is 8-bit clean; base64 on stdin (decoded by `base64 -d`) when it is
--- not; base64 chunks of at most 96 KiB, one command each, when there is no stdin. The sandbox counts the
--- bytes it relayed to the script (the bytes the script read, where the channel does not count them itself);
--- a difference from what was sent fails with "EIO" (unless opts.check == false).
--- opts: on_progress(bytes_sent), on_stdout, env, cwd, timeout_ms, what (names the operation in errors).
--- Returns the result: code (the script's exit code), stdout, stderr, sent, count (bytes the sandbox took).
---@param script string
---@param reader function|string
---@param opts table|nil
---@return table|nil result, string|nil err, string|nil code
function Sandbox:pipe_in(script, reader, opts)
  opts = opts or {}
  if not transfer.is_reader(reader) then error("pipe_in: expected a reader function or a string", 2) end
  if type(reader) == "string" then reader = transfer.string_reader(reader) end
  local what = opts.what or "pipe_in"
  local counter = transfer.counting(reader, opts.on_progress)
  local mode = self:input_mode()
  local res, err, code
  if mode == "chunks" then
    res, err, code = self:pipe_in_chunks(script, counter.read, opts, what)
  elseif mode == "raw" and self:counts_input() then
    res, err, code = self:pipe_in_counted(script, counter.read, opts, what)
  else
    local decode = mode == "b64" and "base64 -d | " or ""
    local stdin = mode == "b64" and transfer.b64_lines(counter.read) or counter.read
    local full = prelude(opts) .. transfer.wrap_in(script, decode) .. 'exit "$ferry_rc"\n'
    res, err, code = self:run_with_status(full, opts.on_stdout, false, opts, what, stdin)
  end
  if not res then return nil, err, code end
  res.sent = counter.n
  if res.code == 0 and not res.timed_out and opts.check ~= false and res.count ~= counter.n then
    if res.count == nil then
      return nil, string.format("%s: sent %d bytes but the sandbox command ended before its input did", what,
        counter.n), "EIO"
    end
    return nil, string.format("%s: sent %d bytes but the sandbox read %d", what, counter.n, res.count), "EIO"
  end
  return res
end

--- Run `script` and give its stdout, as raw bytes, to on_chunk(bytes) (decoded from base64 when the channel
--- is not 8-bit clean). on_chunk must not yield. The sandbox counts the bytes the script wrote; a
--- difference from what arrived fails with "EIO". opts: on_progress(bytes_received), env, cwd, timeout_ms.
--- Returns the result: code (the script's exit code), stderr, received, count (bytes the script wrote).
---@param script string
---@param on_chunk fun(bytes: string)
---@param opts table|nil
---@return table|nil result, string|nil err, string|nil code
function Sandbox:pipe_out(script, on_chunk, opts)
  opts = opts or {}
  if type(on_chunk) ~= "function" then error("pipe_out: expected an on_chunk function", 2) end
  local what = opts.what or "pipe_out"
  local b64 = not self:is_binary()
  local received = 0
  local emit = function(bytes)
    received = received + #bytes
    on_chunk(bytes)
    if opts.on_progress then opts.on_progress(received) end
  end
  local full = prelude(opts) .. transfer.wrap_out(script, b64 and " | base64" or "") .. 'exit "$ferry_rc"\n'
  local res, err, code = self:run_with_status(full, emit, b64, opts, what)
  if not res then return nil, err, code end
  res.received = received
  if res.code == 0 and not res.timed_out and res.count ~= received then
    return nil, string.format("%s: received %d bytes but the sandbox sent %d", what, received, res.count), "EIO"
  end
  return res
end

--- Release the provider (idempotent).
function Sandbox:close()
  if self.closed then return end
  self.closed = true
  if self.provider.close then self.provider:close() end
end

--- Open a sandbox on a provider string: "local", "bwrap:DIR", "cmd:ARGV...", or any provider found by
--- ferry.policy ("NAME" or "NAME:ARG").
--- opts: caps (overrides what the provider declares, e.g. {binary=false} to force base64), on_exec(argv,
--- script) called before every command, log(level, message), probe (false skips a provider's probe),
--- session (every command goes through one long-lived shell in the sandbox, see ferry.session; the default
--- where the provider declares caps.costly, a new command being expensive: ssh, docker, podman, kubectl;
--- false opts out, true opts in elsewhere).
---@param spec string
---@param opts table|nil
---@return table|nil sandbox, string|nil err, string|nil code
function M.open(spec, opts)
  opts = opts or {}
  if type(spec) ~= "string" then error("ferry.open: expected a provider string, got " .. type(spec), 2) end
  -- "NAME+SCHEME:REST" (bridge+http://...) opens provider NAME with "SCHEME:REST"
  local name, arg = spec:match("^([%w_][%w_%-]*)%+(%a[%w+.-]*:.*)$")
  if not name then name, arg = spec:match("^([%w_][%w_%-]*):(.*)$") end
  if not name then name = spec:match("^([%w_][%w_%-]*)$") end
  local mod, lerr, lcode
  if name then mod, lerr, lcode = policy.load("providers", name) end
  if not mod and lcode and lcode ~= "ENOENT" then return nil, "provider '" .. name .. "': " .. lerr, lcode end
  if not mod then
    return nil, string.format("unknown provider '%s': known providers are %s (see ferry providers)",
      name or spec, policy.known("providers", { "local", "bwrap", "cmd" })), "EINVAL"
  end
  local provider, err, code = mod.open(arg, opts)
  if not provider then return nil, err, code end
  local caps = {}
  for k, v in pairs(provider.caps or {}) do caps[k] = v end
  for k, v in pairs(opts.caps or {}) do caps[k] = v end
  local session = opts.session
  if session == nil then session = caps.costly == true end
  -- a provider with its own exec (the bridge) already keeps its sandbox's shell: session applies to commands
  if session and not provider.exec then require("ferry.session").wrap(provider, { on_exec = opts.on_exec }) end
  return setmetatable({
    provider = provider,
    name = provider.name or spec,
    spec = provider.spec or spec,
    caps = caps,
    remote_dir_default = provider.default_remote_dir,
    on_exec = opts.on_exec,
    watchers = {},
    log = opts.log,
  }, Sandbox)
end

files.install(Sandbox)
M.Sandbox = Sandbox

return M
