--- The verbs that work on a sandbox directly (README "Sandbox verbs"): exec, put, get, ls.
local registry = require "ferry.cli.registry"
local options = require "ferry.cli.options"
local report = require "ferry.cli.report"

local EXIT = registry.EXIT
local define, fail, usage, say = registry.define, registry.fail, registry.usage, registry.say
local M = {}

-- Run fn(sb) on a sandbox opened on o.provider (o.no_session: no session), closing it whatever happens.
local function with_sandbox(o, fn)
  local sb, err = require("ferry").open(o.provider, { session = options.session(o) })
  if not sb then fail(err) end
  local res = table.pack(pcall(fn, sb))
  sb:close()
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

---------------------------------------------------------------------------------------------------------------
-- exec

local function read_stdin_option(value)
  if value == nil then return nil end
  if value == "-" then
    return function() return io.stdin:read(65536) end
  end
  local f, err = io.open(value, "rb")
  if not f then fail("--stdin: " .. err) end
  return function()
    local chunk = f:read(1024 * 1024) -- each chunk is one frame (one `dd`) in the sandbox: read big ones
    if not chunk then f:close() end
    return chunk
  end
end

local NAME_VALUE = "^([%a_][%w_]*)=(.*)$"

-- The variables of --env-file FILE (lines NAME=VALUE, the value the rest of the line as it is; blank lines
-- and lines starting with # are skipped), then of each --env (which win). A bad line is a usage error naming
-- FILE:LINE; a file that cannot be read fails.
local function parse_env(list, file)
  local env = {}
  if file then
    local f, oerr = io.open(file, "rb")
    if not f then fail("--env-file " .. oerr) end
    local text = f:read("a")
    f:close()
    local n = 0
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
      n = n + 1
      local body = line:match("^%s*(.-)$")
      if body ~= "" and body:sub(1, 1) ~= "#" then
        -- the line itself is not quoted back: it may hold a secret
        local k, v = body:match(NAME_VALUE)
        if not k then usage(string.format("--env-file %s:%d: expected NAME=VALUE", file, n)) end
        if v:find("\0", 1, true) then
          usage(string.format("--env-file %s:%d: the value contains a NUL byte", file, n))
        end
        env[k] = v
      end
    end
  end
  local given, err = options.key_values(list, NAME_VALUE, "--env", "NAME=VALUE")
  if err then usage(err) end
  for k, v in pairs(given or {}) do env[k] = v end
  return next(env) and env or nil
end

local function parse_timeout(value)
  if value == nil then return nil end
  local sec = tonumber(value)
  if not sec or sec <= 0 or not value:match("^[%d.]+$") then
    usage("--timeout expects a number of seconds > 0, got '" .. value .. "'")
  end
  return math.floor(sec * 1000 + 0.5)
end

-- A sink for a command's output stream. Raw bytes unless secrets are named: then whole lines go through the
-- redactor (a secret split across two chunks is still caught), the last partial line when the stream ends.
local function stream_to(file, redacting)
  local pending = ""
  local sink = {}
  function sink.write(chunk)
    if not redacting then
      file:write(chunk)
    else
      pending = pending .. chunk
      local cut = pending:match(".*\n()")
      if not cut then return end
      file:write(registry.redact(pending:sub(1, cut - 1)))
      pending = pending:sub(cut)
    end
    file:flush()
  end
  function sink.close()
    if pending ~= "" then file:write(registry.redact(pending)) end
    pending = ""
    file:flush()
  end
  return sink
end

-- The --pass-env variables: NAME = this process's value (a usage error for a bad name, a failure when unset).
local function pass_env(names, env)
  for _, name in ipairs(names) do
    if not name:match("^[%a_][%w_]*$") then usage("--pass-env expects a variable name, got '" .. name .. "'") end
    local v = os.getenv(name)
    if v == nil then fail("--pass-env " .. name .. ": not set in this environment") end
    env = env or {}
    env[name] = v
  end
  return env
end

-- With --state FILE: the provider, and the launch of the prepare that wrote FILE (ferry.launch).
local function state_launch(path)
  local st, err = require("ferry.state").read(path)
  if not st then fail(err) end
  local l, why = require("ferry.launch").from_state(st)
  if not l then fail("state " .. path .. ": " .. why) end
  return st.provider, l
end

-- The command, cwd and environment of an exec: as given, or as the state's launch says (its env, then
-- --env-file/--env, then --pass-env; its PATH dirs first; its cwd unless --cwd).
local function exec_plan(o)
  local env = pass_env(o.pass_env, parse_env(o.env, o.env_file))
  if not o.state then return o.provider, o.args, o.cwd, env end
  local provider, l = state_launch(o.state)
  local merged = {}
  for k, v in pairs(l.env) do merged[k] = v end
  for k, v in pairs(env or {}) do merged[k] = v end
  return provider, require("ferry.launch").script(l, o.args), o.cwd or l.cwd, next(merged) and merged or nil
end

define("exec", [[
usage: ferry exec -p PROVIDER [--cwd DIR] [--env K=V]... [--env-file FILE] [--pass-env NAME]... [--timeout SEC]
                  [--stdin FILE|-] [--no-session] -- CMD [ARG...]
       ferry exec --state FILE [the options above but -p] -- CMD [ARG...]
Run CMD with its arguments in the sandbox, streaming its stdout and stderr, and exit with its exit code.
  -p, --provider PROVIDER  local, bwrap:DIR, cmd:ARGV... (see ferry providers)
  --state FILE             run CMD the way the prepare that wrote FILE says its agent runs: in its sandbox,
                           in the remote workspace, with the launch's environment (its agent's config dirs)
                           and its dirs first on PATH (see the launch field of ferry prepare --json)
  --cwd DIR                working directory in the sandbox (default /)
  --env K=V                set an environment variable (repeatable; the value is on ferry's own command line)
  --env-file FILE          set the variables of FILE: lines NAME=VALUE (the rest of the line, as it is),
                           blank lines and # comments skipped; --env wins
  --pass-env NAME          pass this process's variable NAME (an API key) to the command (repeatable); its
                           value is a secret: never on a command line, replaced by *** in the output
  --timeout SEC            stop the command in the sandbox after SEC seconds and exit 124
  --stdin FILE|-           feed FILE (or this process's stdin) to the command; default: no input
  --secret-env NAME        replace the value of env NAME by *** in the output (repeatable)
]] .. options.NO_SESSION_HELP .. [[
The first word that is not an option starts the command; `--` makes that explicit. The values reach the
sandbox on the command's stdin, never on a command line. The command's own output is passed on raw (as ssh
does); ferry's messages escape what a terminal could act on. Ctrl-C or SIGTERM stops the command in the
sandbox, then ferry exits 130 or 143.
Exit: the command's code (128+N when killed by signal N), 124 on timeout, 1 when it could not run, 2 usage.
]], {
  options = { options.PROVIDER, options.SECRET_ENV, options.NO_SESSION,
    { names = { "--cwd" }, key = "cwd", value = "DIR" },
    { names = { "--env" }, key = "env", value = "K=V", multi = true },
    { names = { "--env-file" }, key = "env_file", value = "FILE" },
    { names = { "--timeout" }, key = "timeout", value = "SEC" },
    { names = { "--stdin" }, key = "stdin", value = "FILE" },
    { names = { "--state" }, key = "state", value = "FILE" },
    { names = { "--pass-env" }, key = "pass_env", value = "NAME", multi = true },
  },
  stop_at_positional = true, secrets = true, min_args = 1, operands = "CMD",
}, function(o)
  if o.provider and o.state then usage("-p and --state cannot be used together") end
  if not o.provider and not o.state then usage("missing -p PROVIDER (or --state FILE)") end
  local timeout_ms = parse_timeout(o.timeout)
  local provider, cmd, cwd, env = exec_plan(o)
  local stdin = read_stdin_option(o.stdin)
  local redacting = #o.secret_env > 0 or #o.pass_env > 0
  local out, errout = stream_to(io.stdout, redacting), stream_to(io.stderr, redacting)
  local r, err = with_sandbox({ provider = provider, no_session = o.no_session }, function(sb)
    return sb:exec(cmd, {
      cwd = cwd, env = env, stdin = stdin, timeout_ms = timeout_ms,
      on_stdout = out.write, on_stderr = errout.write,
    })
  end)
  out.close()
  errout.close()
  if not r then fail(err) end
  if r.timed_out then
    say(io.stderr, "ferry: exec: ", o.args[1], ": timed out after ", o.timeout, " s\n")
    return EXIT.timeout
  end
  return r.code
end)

---------------------------------------------------------------------------------------------------------------
-- put, get, ls

define("put", [[
usage: ferry put -p PROVIDER [--no-session] LOCAL REMOTE
Copy the local file LOCAL to REMOTE in the sandbox (written to a temp name, then renamed into place; missing
parent dirs of REMOTE are created).
]] .. options.NO_SESSION_HELP, {
  options = { options.PROVIDER, options.NO_SESSION }, min_args = 2, max_args = 2, operands = "LOCAL REMOTE",
}, function(o)
  if not o.provider then usage("missing -p PROVIDER") end
  local src, dst = o.args[1], o.args[2]
  local f, oerr = io.open(src, "rb")
  if not f then fail(oerr) end
  f:close()
  local ok, err = with_sandbox(o, function(sb) return sb:put(src, dst) end)
  if not ok then fail(err) end
end)

define("get", [[
usage: ferry get -p PROVIDER [--max-bytes N] [--no-session] REMOTE LOCAL
Copy the sandbox file REMOTE to LOCAL ("-" for stdout).
  --max-bytes N            refuse a file over N bytes (suffix K, M or G for KiB, MiB, GiB)
]] .. options.NO_SESSION_HELP, {
  options = { options.PROVIDER, options.MAX_BYTES, options.NO_SESSION }, min_args = 2, max_args = 2,
  operands = "REMOTE LOCAL",
}, function(o)
  if not o.provider then usage("missing -p PROVIDER") end
  local max_bytes, berr = options.max_bytes(o.max_bytes)
  if berr then usage(berr) end
  local src, dst = o.args[1], o.args[2]
  with_sandbox(o, function(sb)
    if dst ~= "-" then
      local ok, err = sb:get(src, dst, { max_bytes = max_bytes })
      if not ok then fail(err) end
      return
    end
    local data, err = sb:read(src, { max_bytes = max_bytes })
    if not data then fail(err) end
    io.stdout:write(data)
  end)
end)

local KIND_LETTER = { file = "-", dir = "d", symlink = "l", fifo = "p", socket = "s", char = "c", block = "b" }

--- One `ls` line: kind letter, octal mode, size, name (dirs end with "/").
---@param e table  an entry of sb:ls: name, kind, mode, size
---@return string
function M.format_entry(e)
  local mode = e.mode and string.format("%04o", e.mode) or "----"
  local suffix = e.kind == "dir" and "/" or ""
  return string.format("%s %s %12s %s%s", KIND_LETTER[e.kind] or "?", mode, tostring(e.size or 0),
    report.printable(e.name), suffix)
end

define("ls", [[
usage: ferry ls -p PROVIDER [--no-session] REMOTE_DIR
List a sandbox directory: one line per entry with its kind (- file, d dir, l symlink, ...), mode, size and
name (control characters escaped as \n, \t, \xNN).
]] .. options.NO_SESSION_HELP, {
  options = { options.PROVIDER, options.NO_SESSION }, min_args = 1, max_args = 1, operands = "REMOTE_DIR",
}, function(o)
  if not o.provider then usage("missing -p PROVIDER") end
  local list, err = with_sandbox(o, function(sb) return sb:ls(o.args[1]) end)
  if not list then fail(err) end
  for _, e in ipairs(list) do io.stdout:write(M.format_entry(e), "\n") end
end)

return M
