--- The sandbox verbs of the ferry command line (README "CLI"): exec, put, get, ls, prepare, restore,
--- adapters, providers. Loaded lazily by cli.main so that a broken verb here cannot break `ferry run`.
local cli = require "ferry.cli"

local EXIT = cli.EXIT
local M = {}

---------------------------------------------------------------------------------------------------------------
-- Option parsing

--- Parse command-line words against an option spec.
--- spec.options: list of {names = {"-p", "--provider"}, key = "provider", value = "PROVIDER" (nil for a flag),
--- multi = true (repeatable, collected in a list)}. spec.stop_at_positional: the first positional word ends
--- the options (for `exec`, whose command has options of its own). `--` always ends the options;
--- `--name=value` and `--name value` both work; "-" alone is a positional.
---@param args string[]
---@param spec table
---@return table|nil opts  option values by key, positionals in opts.args
---@return string|nil err  what is wrong, naming the option
function M.parse(args, spec)
  local by_name = {}
  for _, o in ipairs(spec.options) do
    for _, n in ipairs(o.names) do by_name[n] = o end
  end
  local opts, positional = {}, {}
  for _, o in ipairs(spec.options) do
    if o.multi then opts[o.key] = {} end
  end
  local i, only_positional = 1, false
  while i <= #args do
    local a = args[i]
    if only_positional or a == "-" or a:sub(1, 1) ~= "-" then
      positional[#positional + 1] = a
      if spec.stop_at_positional then only_positional = true end
    elseif a == "--" then
      only_positional = true
    else
      local name, inline = a, nil
      if a:sub(1, 2) == "--" then
        local eq = a:find("=", 3, true)
        if eq then name, inline = a:sub(1, eq - 1), a:sub(eq + 1) end
      end
      local o = by_name[name]
      if not o then return nil, "unknown option '" .. name .. "'" end
      local value = true
      if o.value then
        value = inline
        if value == nil then
          i = i + 1
          value = args[i]
        end
        if value == nil then return nil, "option " .. name .. " needs a " .. o.value end
      elseif inline ~= nil then
        return nil, "option " .. name .. " takes no value"
      end
      if o.multi then
        table.insert(opts[o.key], value)
      else
        opts[o.key] = value
      end
    end
    i = i + 1
  end
  opts.args = positional
  return opts
end

local SIZE_UNITS = { [""] = 1, K = 1024, M = 1024 ^ 2, G = 1024 ^ 3 }

--- A byte count: digits with an optional K, M or G (powers of 1024) suffix.
---@return integer|nil
function M.parse_size(s)
  local digits, unit = tostring(s):match("^(%d+)([KMG]?)i?B?$")
  if not digits then return nil end
  return math.tointeger(tonumber(digits) * SIZE_UNITS[unit])
end

---------------------------------------------------------------------------------------------------------------
-- Verb plumbing

local Failure = {} -- metatable marking an error raised by fail(): a message for the user, not a bug

-- Stop the verb with `ferry: <verb>: <message>` and `code`.
local function fail(message, code)
  error(setmetatable({ message = message, code = code or EXIT.failed }, Failure), 0)
end

local function usage(message)
  fail(message, EXIT.usage)
end

-- The redactor of the running verb: secrets never reach a terminal or a file.
local current_redact = function(s) return s end

local function say(file, ...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = current_redact(tostring(parts[i])) end
  file:write(table.concat(parts, "", 1, parts.n))
end

local PROVIDER = { names = { "-p", "--provider" }, key = "provider", value = "PROVIDER" }
local SECRET_ENV = { names = { "--secret-env" }, key = "secret_env", value = "NAME", multi = true }
local JSON = { names = { "--json" }, key = "json" }
local MAX_BYTES = { names = { "--max-bytes" }, key = "max_bytes", value = "N" }

--- Values of the environment variables named by --secret-env (unset or empty ones are skipped).
local function secret_values(names)
  local values = {}
  for _, name in ipairs(names or {}) do
    local v = os.getenv(name)
    if v and v ~= "" then values[#values + 1] = v end
  end
  return values
end

local function make_redact(names)
  return require("ferry.redact").new(secret_values(names))
end

--- Define a verb: parse its options (usage error on a bad one), check the positional count, run `fn(opts)`
--- and turn a fail() into `ferry: <verb>: <message>` on stderr with its exit code.
local function define(name, help, spec, fn)
  cli.verb(name, help, function(args)
    local opts, err = M.parse(args, spec)
    current_redact = function(s) return s end
    local ok, res = xpcall(function()
      if not opts then usage(err) end
      if spec.secrets then current_redact = make_redact(opts.secret_env) end
      local n = #opts.args
      if spec.min_args and n < spec.min_args then usage("missing " .. spec.operands) end
      if spec.max_args and n > spec.max_args then
        usage("unexpected argument '" .. opts.args[spec.max_args + 1] .. "'")
      end
      return fn(opts)
    end, function(e)
      if getmetatable(e) == Failure then return e end
      return debug.traceback(tostring(e), 2)
    end)
    io.stdout:flush()
    if ok then return res or EXIT.ok end
    if getmetatable(res) == Failure and res.code == EXIT.usage then
      -- Only words the user typed: not redacted, or "KEY=DIR" would read as a credential.
      io.stderr:write("ferry: ", name, ": ", res.message, "\n(see ferry ", name, " --help)\n")
      return res.code
    elseif getmetatable(res) == Failure then
      say(io.stderr, "ferry: ", name, ": ", res.message, "\n")
      return res.code
    end
    say(io.stderr, "ferry: ", name, ": ", res, "\n")
    return EXIT.failed
  end)
end

local function open_sandbox(provider)
  local sb, err = require("ferry").open(provider)
  if not sb then fail(err) end
  return sb
end

-- Run fn(sb) on a sandbox opened on `provider`, closing it whatever happens.
local function with_sandbox(provider, fn)
  local sb = open_sandbox(provider)
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
    local chunk = f:read(65536)
    if not chunk then f:close() end
    return chunk
  end
end

local function parse_env(list)
  local env = {}
  for _, kv in ipairs(list) do
    local k, v = kv:match("^([%a_][%w_]*)=(.*)$")
    if not k then usage("--env expects NAME=VALUE, got '" .. kv .. "'") end
    env[k] = v
  end
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
      file:write(current_redact(pending:sub(1, cut - 1)))
      pending = pending:sub(cut)
    end
    file:flush()
  end
  function sink.close()
    if pending ~= "" then file:write(current_redact(pending)) end
    pending = ""
    file:flush()
  end
  return sink
end

define("exec", [[
usage: ferry exec -p PROVIDER [--cwd DIR] [--env K=V]... [--timeout SEC] [--stdin FILE|-] -- CMD [ARG...]
Run CMD with its arguments in the sandbox, streaming its stdout and stderr, and exit with its exit code.
  -p, --provider PROVIDER  local, bwrap:DIR, cmd:ARGV... (see ferry providers)
  --cwd DIR                working directory in the sandbox (default /)
  --env K=V                set an environment variable (repeatable)
  --timeout SEC            kill the command after SEC seconds and exit 124
  --stdin FILE|-           feed FILE (or this process's stdin) to the command; default: no input
  --secret-env NAME        replace the value of env NAME by *** in the output (repeatable)
The first word that is not an option starts the command; `--` makes that explicit.
Exit: the command's code (128+N when killed by signal N), 124 on timeout, 1 when it could not run, 2 usage.
]], {
  options = { PROVIDER, SECRET_ENV,
    { names = { "--cwd" }, key = "cwd", value = "DIR" },
    { names = { "--env" }, key = "env", value = "K=V", multi = true },
    { names = { "--timeout" }, key = "timeout", value = "SEC" },
    { names = { "--stdin" }, key = "stdin", value = "FILE" },
  },
  stop_at_positional = true, secrets = true, min_args = 1, operands = "CMD",
}, function(o)
  if not o.provider then usage("missing -p PROVIDER") end
  local timeout_ms = parse_timeout(o.timeout)
  local env = parse_env(o.env)
  local stdin = read_stdin_option(o.stdin)
  local redacting = #o.secret_env > 0
  local out, errout = stream_to(io.stdout, redacting), stream_to(io.stderr, redacting)
  local r, err = with_sandbox(o.provider, function(sb)
    return sb:exec(o.args, {
      cwd = o.cwd, env = env, stdin = stdin, timeout_ms = timeout_ms,
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
usage: ferry put -p PROVIDER LOCAL REMOTE
Copy the local file LOCAL to REMOTE in the sandbox (written to a temp name, then renamed into place).
]], { options = { PROVIDER }, min_args = 2, max_args = 2, operands = "LOCAL REMOTE" }, function(o)
  if not o.provider then usage("missing -p PROVIDER") end
  local src, dst = o.args[1], o.args[2]
  local f, oerr = io.open(src, "rb")
  if not f then fail(oerr) end
  f:close()
  local ok, err = with_sandbox(o.provider, function(sb) return sb:put(src, dst) end)
  if not ok then fail(err) end
end)

define("get", [[
usage: ferry get -p PROVIDER [--max-bytes N] REMOTE LOCAL
Copy the sandbox file REMOTE to LOCAL ("-" for stdout).
  --max-bytes N   refuse a file over N bytes (suffix K, M or G for KiB, MiB, GiB)
]], { options = { PROVIDER, MAX_BYTES }, min_args = 2, max_args = 2, operands = "REMOTE LOCAL" }, function(o)
  if not o.provider then usage("missing -p PROVIDER") end
  local max_bytes
  if o.max_bytes then
    max_bytes = M.parse_size(o.max_bytes)
    if not max_bytes then usage("--max-bytes expects a byte count, got '" .. o.max_bytes .. "'") end
  end
  local src, dst = o.args[1], o.args[2]
  with_sandbox(o.provider, function(sb)
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

-- A name as one printable line: control characters and backslashes escaped.
local function printable(name)
  return (name:gsub("[%c\\]", function(c)
    if c == "\\" then return "\\\\" end
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    return string.format("\\x%02x", c:byte())
  end))
end

--- One `ls` line: kind letter, octal mode, size, name (dirs end with "/").
function M.format_entry(e)
  local mode = e.mode and string.format("%04o", e.mode) or "----"
  local suffix = e.kind == "dir" and "/" or ""
  return string.format("%s %s %12s %s%s", KIND_LETTER[e.kind] or "?", mode, tostring(e.size or 0),
    printable(e.name), suffix)
end

define("ls", [[
usage: ferry ls -p PROVIDER REMOTE_DIR
List a sandbox directory: one line per entry with its kind (- file, d dir, l symlink, ...), mode, size and
name (control characters escaped as \n, \t, \xNN).
]], { options = { PROVIDER }, min_args = 1, max_args = 1, operands = "REMOTE_DIR" }, function(o)
  if not o.provider then usage("missing -p PROVIDER") end
  local list, err = with_sandbox(o.provider, function(sb) return sb:ls(o.args[1]) end)
  if not list then fail(err) end
  for _, e in ipairs(list) do io.stdout:write(M.format_entry(e), "\n") end
end)

---------------------------------------------------------------------------------------------------------------
-- prepare, restore

local function list_or_empty(t)
  return type(t) == "table" and t or {}
end

local function copy_fields(r)
  local out = {}
  for k, v in pairs(r or {}) do
    if type(v) ~= "function" and type(v) ~= "userdata" then out[k] = v end
  end
  return out
end

--- The result object that --json prints last (as a progress "result" event): the runtime's result plus
--- fields common to both verbs: verb, ok, remote_dir, runtime_dir, asset_dirs, install_ran, bytes (moved),
--- state, and the lists changed, deleted, conflicts, refused (empty after a prepare).
---@param verb string  "prepare"|"restore"
---@param r table  the runtime's result
---@param st table|nil  the state file's record (restore: where the work came from)
---@return table
function M.result_object(verb, r, st)
  local out = copy_fields(r)
  out.verb, out.ok = verb, true
  st = st or {}
  out.provider = out.provider or st.provider
  out.remote_dir = out.remote_dir or st.remote_dir
  out.runtime_dir = out.runtime_dir or st.runtime_dir
  out.asset_dirs = out.asset_dirs or st.assets or {}
  out.install_ran = r.installed ~= nil
  out.bytes = r.bytes_sent or r.bytes_received or 0
  for _, k in ipairs { "changed", "deleted", "conflicts", "refused", "warnings" } do out[k] = list_or_empty(r[k]) end
  return out
end

local function progress_for(o)
  local progress = require "ferry.progress"
  local core = require "ferry.core"
  local tty = not o.json and core.isatty ~= nil and core.isatty(2)
  return progress.new { json = o.json and true or false, tty = tty, redact = current_redact,
    out = io.stdout, err = io.stderr }
end

local function parse_assets(list)
  local assets = {}
  for _, kv in ipairs(list) do
    local k, dir = kv:match("^([%w_%-%.]+)=(.+)$")
    if not k then usage("--asset expects KEY=DIR, got '" .. kv .. "'") end
    assets[k] = dir
  end
  return next(assets) and assets or nil
end

local function human_bytes(n)
  return require("ferry.progress").human(n or 0)
end

local function plural(n, word)
  return n .. " " .. word .. (n == 1 and "" or "s")
end

local INSTALL_TEXT = {
  none = "no install step", present = "already installed", installed = "installed",
  failed = "install failed (see the warning)", missing = "not installed and no install command",
}

local function human_prepare(r)
  local out = io.stdout
  say(out, "prepared ", r.workspace or "the workspace", " in ", r.provider or "the sandbox", " at ", r.remote_dir,
    "\n")
  say(out, "  adapter   ", r.adapter or "shell", ": ", INSTALL_TEXT[r.install_status] or tostring(r.install_status),
    "\n")
  say(out, "  sent      ", plural(r.files or 0, "file"), ", ", plural(r.dirs or 0, "dir"), ", ",
    plural(r.symlinks or 0, "symlink"), ": ", human_bytes(r.bytes), " in ", plural(r.commands or 0, "command"), "\n")
  local keys = {}
  for key in pairs(r.asset_dirs) do keys[#keys + 1] = key end
  table.sort(keys)
  for _, key in ipairs(keys) do say(out, "  asset     ", key, " -> ", r.asset_dirs[key], "\n") end
  if r.state then
    say(out, "  state     ", r.state, "\nbring the work back with: ferry restore --state ", r.state, "\n")
  end
end

local function human_restore(r)
  local out = io.stdout
  say(out, "restored ", r.remote_dir or "the sandbox's workspace", " into ", r.workspace or "the workspace", ": ",
    #r.changed, " changed, ", #r.deleted, " deleted, ", plural(#r.conflicts, "conflict"), " (",
    human_bytes(r.bytes), " in ", plural(r.commands or 0, "command"), ")\n")
  for _, path in ipairs(r.changed) do say(out, "  changed  ", printable(path), "\n") end
  for _, path in ipairs(r.deleted) do say(out, "  deleted  ", printable(path), "\n") end
  local copies = type(r.conflict_copies) == "table" and r.conflict_copies or {}
  for _, path in ipairs(r.conflicts) do
    say(out, "  conflict ", printable(path), ": kept yours; the sandbox's version is ",
      printable(copies[path] or path .. ".ferry-remote"), "\n")
  end
end

-- Finish the progress output and print the result: the JSON object as the last stdout line with --json,
-- warnings and a short summary for a human otherwise.
local function report(o, p, obj, human)
  p:finish(obj)
  if o.json then return end
  for _, w in ipairs(obj.warnings) do
    if w ~= obj.install_warning then say(io.stderr, "ferry: warning: ", w, "\n") end
  end
  human(obj)
end

-- A failed prepare/restore: with --json the last line is still a result object, {ok = false, error, code,
-- refused}; the message goes to stderr either way.
local function failed(o, p, verb, err, code, partial)
  local refused = partial and list_or_empty(partial.refused) or {}
  if o.json then
    p:finish { verb = verb, ok = false, error = err, code = code, refused = refused }
  else
    p:finish()
    for _, path in ipairs(refused) do say(io.stderr, "  refused  ", printable(path), "\n") end
  end
  fail(err)
end

---------------------------------------------------------------------------------------------------------------
-- --many: several sandboxes from a JSON list, at most --jobs at a time on one loop

local MANY = { names = { "--many" }, key = "many", value = "FILE" }
local JOBS = { names = { "--jobs" }, key = "jobs", value = "N" }
M.DEFAULT_JOBS = 8

local MANY_FIELDS = {
  prepare = { required = { "provider", "workspace", "state" }, optional = { "adapter", "remote_dir" } },
  restore = { required = { "state" }, optional = { "provider", "adapter", "workspace", "remote_dir" } },
}

--- The value of --jobs: an integer >= 1 (default 8).
---@return integer|nil jobs
---@return string|nil err
function M.parse_jobs(value)
  if value == nil then return M.DEFAULT_JOBS end
  local n = value:match("^%d+$") and math.tointeger(tonumber(value))
  if not n or n < 1 then return nil, "--jobs expects an integer >= 1, got '" .. value .. "'" end
  return n
end

--- Read a --many FILE: a JSON list of objects with the verb's fields (prepare: provider, workspace, state
--- required; adapter, remote_dir optional. restore: state required, the prepare fields allowed). Items are
--- numbered from 1 in messages.
---@param path string
---@param verb string  "prepare"|"restore"
---@return table|nil items
---@return string|nil err  "FILE: ..." naming the item index and the field
function M.load_many(path, verb)
  local f, oerr = io.open(path, "rb")
  if not f then return nil, "--many: " .. oerr end
  local text = f:read("a")
  f:close()
  local ok, list = pcall(require("cjson").decode, text)
  if not ok then return nil, "--many: " .. path .. ": not JSON: " .. tostring(list) end
  -- cjson reads {} and [] alike: only a text that starts with '[' is a list.
  if type(list) ~= "table" or not text:match("^%s*%[") then
    return nil, "--many: " .. path .. ": expected a JSON list of objects"
  end
  local fields = MANY_FIELDS[verb]
  local known = {}
  for _, k in ipairs(fields.required) do known[k] = true end
  for _, k in ipairs(fields.optional) do known[k] = true end
  for i, item in ipairs(list) do
    local where = "--many: " .. path .. ": item " .. i
    if type(item) ~= "table" then return nil, where .. ": expected an object" end
    for _, k in ipairs(fields.required) do
      if item[k] == nil then return nil, where .. ": missing field \"" .. k .. "\"" end
    end
    for k, v in pairs(item) do
      if not known[k] then return nil, where .. ": unknown field \"" .. tostring(k) .. "\"" end
      if type(v) ~= "string" or v == "" then
        return nil, where .. ": field \"" .. k .. "\" must be a non-empty string"
      end
    end
  end
  return list
end

-- The options that name one sandbox make no sense with --many: its FILE names them per item.
local function check_many_options(verb, o, single)
  if not o.many then
    if o.jobs then usage("--jobs needs --many FILE") end
    return nil
  end
  for _, name in ipairs(single) do
    if o[name[1]] then usage(name[2] .. " cannot be combined with --many (give it per item in FILE)") end
  end
  local jobs, err = M.parse_jobs(o.jobs)
  if not jobs then usage(err) end
  local items, lerr = M.load_many(o.many, verb)
  if not items then usage(lerr) end
  return items, jobs
end

-- What a --many summary line names a sandbox by: the workspace for prepare, the state file for restore.
local function many_line(verb, e)
  local name = verb == "prepare" and e.workspace or e.state
  local line = string.format("%s %s -> %s:%s (%s, %d ms)", e.ok and "ok" or "FAILED", tostring(name),
    tostring(e.provider or "?"), tostring(e.remote_dir or "?"), human_bytes(e.bytes), e.ms)
  if not e.ok then return line .. ": " .. tostring(e.error) end
  if e.conflicts and #e.conflicts > 0 then line = line .. ", " .. plural(#e.conflicts, "conflict") end
  return line
end

local function prepare_item(item, o)
  local r, err, code = require("ferry").prepare {
    provider = item.provider, adapter = item.adapter, workspace = item.workspace, remote_dir = item.remote_dir,
    state = item.state, excludes = o.exclude, assets = parse_assets(o.asset), secrets = secret_values(o.secret_env),
  }
  if not r then return { error = err, code = code } end
  local obj = M.result_object("prepare", r)
  obj.provider = item.provider
  return obj
end

local function restore_item(item, o, max_bytes)
  local r, err, code, partial = require("ferry").restore {
    state = item.state, max_bytes = max_bytes, allow_outside_symlinks = o.allow_outside_symlinks,
    secrets = secret_values(o.secret_env),
  }
  if not r then return { error = err, code = code, refused = partial and list_or_empty(partial.refused) or {} } end
  return M.result_object("restore", r, require("ferry.state").read(r.state or item.state))
end

-- The per-sandbox object: the verb's result, or {ok = false, error, code}, with what the item named filled in.
local function many_entry(verb, item, index, obj, raised, ms)
  local e = obj or { error = tostring(raised), code = "EFAULT" }
  e.verb, e.index, e.ms = verb, index, math.floor(ms + 0.5)
  e.ok = e.error == nil
  if verb == "restore" and not e.ok then
    local st = require("ferry.state").read(item.state) or {}
    e.provider, e.remote_dir, e.workspace = st.provider, st.remote_dir, st.workspace
  end
  for k, v in pairs(item) do
    if e[k] == nil then e[k] = v end
  end
  e.bytes = e.bytes or 0
  return e
end

--- Run `verb` over the items, at most `jobs` at once; print a line (or a JSON object with --json) per sandbox
--- as it finishes, then with --json {"event":"result","ok":...,"results":[...]} (in FILE order).
--- Exit 1 when any failed, else 3 when a restore had conflicts, else 0.
local function run_many(verb, o, items, jobs, run_item)
  local cjson = require "cjson"
  local core = require "ferry.core"
  local started = {}
  local entries = {}
  require("ferry.pool").run(items, jobs, function(item, i)
    started[i] = core.now_ms()
    return run_item(item)
  end, function(i, value, err)
    local e = many_entry(verb, items[i], i, value, err, core.now_ms() - started[i])
    entries[i] = e
    if o.json then
      local event = copy_fields(e)
      event.event = "sandbox"
      say(io.stdout, cjson.encode(event), "\n")
    else
      say(io.stdout, many_line(verb, e), "\n")
    end
    io.stdout:flush()
  end)
  local n_failed, conflicts = 0, 0
  for i = 1, #items do
    if not entries[i].ok then n_failed = n_failed + 1 end
    if entries[i].conflicts and #entries[i].conflicts > 0 then conflicts = conflicts + 1 end
  end
  if o.json then
    -- cjson writes an empty table as {}: the results list is joined by hand so that it is always a list.
    local encoded = {}
    for i, e in ipairs(entries) do encoded[i] = cjson.encode(e) end
    local head = cjson.encode { event = "result", verb = verb, ok = n_failed == 0, failed = n_failed }
    say(io.stdout, head:sub(1, -2), ',"results":[', table.concat(encoded, ","), "]}\n")
  else
    say(io.stdout, verb, " --many: ", #items - n_failed, " ok, ", n_failed, " failed",
      conflicts > 0 and (", " .. conflicts .. " with conflicts") or "", "\n")
  end
  if n_failed > 0 then return EXIT.failed end
  if conflicts > 0 then return EXIT.conflicts end
  return EXIT.ok
end

define("prepare", [[
usage: ferry prepare -p PROVIDER [-a ADAPTER] -w WORKSPACE [-r REMOTE_DIR] [--exclude PAT]... [--asset KEY=DIR]...
                     [--state FILE] [--json] [--secret-env NAME]...
       ferry prepare --many FILE [--jobs N] [--exclude PAT]... [--asset KEY=DIR]... [--json] [--secret-env NAME]...
Prepare a managed runtime in the sandbox: install the adapter's agent CLI unless it is already there, copy
the workspace in (minus excludes), copy the assets to REMOTE_DIR/.ferry-runtime/ADAPTER/KEY, and write the
state file that `ferry restore` needs.
  -p, --provider PROVIDER  local, bwrap:DIR, cmd:ARGV... (see ferry providers)
  -a, --adapter ADAPTER    the agent's policy (see ferry adapters); default shell
  -w, --workspace DIR      the host workspace to copy in
  -r, --remote-dir DIR     where it goes in the sandbox (default: the provider's, e.g. /sandbox/workspace)
  --exclude PAT            also leave out PAT (repeatable): a bare name matches at any depth, a leading /
                           anchors at the workspace root, * and ? within a name, ** any number of dirs,
                           a trailing / matches directories only
  --asset KEY=DIR          copy DIR to the runtime dir under KEY (repeatable)
  --state FILE             where to write the state (default: $XDG_STATE_HOME/ferry/<hash>.json)
  --json                   progress events as JSON lines on stdout; the result object is the last line
  --secret-env NAME        replace the value of env NAME by *** everywhere (repeatable)
  --many FILE              prepare several sandboxes from FILE, a JSON list of objects
                           {"provider", "workspace", "state", "adapter" (optional), "remote_dir" (optional)},
                           all on one loop; one failure does not stop the others. A line per sandbox as it
                           finishes: ok|FAILED WORKSPACE -> PROVIDER:REMOTE_DIR (BYTES, MS ms); with --json one
                           object per sandbox, then {"event":"result","ok":...,"results":[...]}
  --jobs N                 with --many: at most N sandboxes at a time (default 8)
Exit: 0 ok, 1 failed (with --many: any failed), 2 usage (with --many: a bad FILE, naming the item, from 1).
]], {
  options = { PROVIDER, SECRET_ENV, JSON, MANY, JOBS,
    { names = { "-a", "--adapter" }, key = "adapter", value = "ADAPTER" },
    { names = { "-w", "--workspace" }, key = "workspace", value = "DIR" },
    { names = { "-r", "--remote-dir" }, key = "remote_dir", value = "DIR" },
    { names = { "--exclude" }, key = "exclude", value = "PAT", multi = true },
    { names = { "--asset" }, key = "asset", value = "KEY=DIR", multi = true },
    { names = { "--state" }, key = "state", value = "FILE" },
  },
  secrets = true, max_args = 0,
}, function(o)
  local items, jobs = check_many_options("prepare", o, { { "provider", "-p" }, { "workspace", "-w" },
    { "remote_dir", "-r" }, { "adapter", "-a" }, { "state", "--state" } })
  if items then
    parse_assets(o.asset)
    return run_many("prepare", o, items, jobs, function(item) return prepare_item(item, o) end)
  end
  if not o.provider then usage("missing -p PROVIDER") end
  if not o.workspace then usage("missing -w WORKSPACE") end
  local assets = parse_assets(o.asset)
  local p = progress_for(o)
  local r, err, code = require("ferry").prepare {
    provider = o.provider, adapter = o.adapter, workspace = o.workspace, remote_dir = o.remote_dir,
    excludes = o.exclude, assets = assets, state = o.state, progress = p, secrets = secret_values(o.secret_env),
  }
  if not r then failed(o, p, "prepare", err, code) end
  local obj = M.result_object("prepare", r)
  obj.provider, obj.workspace = o.provider, obj.workspace or o.workspace
  report(o, p, obj, human_prepare)
end)

define("restore", [[
usage: ferry restore --state FILE [--json] [--secret-env NAME]... [--allow-outside-symlinks] [--max-bytes N]
       ferry restore --many FILE [--jobs N] [--json] [--secret-env NAME]... [--allow-outside-symlinks] [--max-bytes N]
Bring the sandbox's workspace back (state FILE from `ferry prepare`) and merge it into the host workspace
against the baseline taken at prepare: the sandbox's changes are taken, edits made on the host meanwhile are
kept, and a file changed on both sides keeps the host version with the sandbox's beside it as
PATH.ferry-remote (a conflict). An entry that would write outside the workspace (absolute, .., through a
symlink), a link, device or fifo is refused and nothing is written.
  --state FILE               the state file written by ferry prepare
  --json                     progress events as JSON lines on stdout; the result object is the last line
  --secret-env NAME          replace the value of env NAME by *** everywhere (repeatable)
  --allow-outside-symlinks   accept symlinks whose target is outside the workspace
  --max-bytes N              refuse an archive over N bytes of content (K, M, G suffixes; default 1G)
  --many FILE                restore several sandboxes from FILE, a JSON list of objects with a "state" field
                             (the FILE given to prepare --many does), all on one loop; one failure does not stop
                             the others. A line per sandbox: ok|FAILED STATE -> PROVIDER:REMOTE_DIR (BYTES, MS ms);
                             with --json one object per sandbox, then {"event":"result","ok":...,"results":[...]}
  --jobs N                   with --many: at most N sandboxes at a time (default 8)
Exit: 0 ok, 1 failed (or refused; with --many: any), 2 usage (or a bad --many FILE), 3 finished with conflicts
(with --many: none failed, some had conflicts).
]], {
  options = { SECRET_ENV, JSON, MAX_BYTES, MANY, JOBS,
    { names = { "--state" }, key = "state", value = "FILE" },
    { names = { "--allow-outside-symlinks" }, key = "allow_outside_symlinks" },
  },
  secrets = true, max_args = 0,
}, function(o)
  local items, jobs = check_many_options("restore", o, { { "state", "--state" } })
  if not items and not o.state then usage("missing --state FILE") end
  local max_bytes
  if o.max_bytes then
    max_bytes = M.parse_size(o.max_bytes)
    if not max_bytes then usage("--max-bytes expects a byte count, got '" .. o.max_bytes .. "'") end
  end
  if items then
    return run_many("restore", o, items, jobs, function(item) return restore_item(item, o, max_bytes) end)
  end
  local p = progress_for(o)
  local r, err, code, partial = require("ferry").restore {
    state = o.state, progress = p, max_bytes = max_bytes, allow_outside_symlinks = o.allow_outside_symlinks,
    secrets = secret_values(o.secret_env),
  }
  if not r then failed(o, p, "restore", err, code, partial) end
  local st = require("ferry.state").read(r.state or o.state)
  local obj = M.result_object("restore", r, st)
  report(o, p, obj, human_restore)
  if #obj.conflicts > 0 then return EXIT.conflicts end
end)

---------------------------------------------------------------------------------------------------------------
-- adapters, providers

-- `ferry adapters|providers`: each name and the file that wins; with --check, load every file and print each
-- problem ("FILE:LINE: message"), then "N <kind> checked, M with problems"; exit 1 when any.
local function list_policies(kind, o)
  local policy = require "ferry.policy"
  if o.check then
    local results, bad = policy.check(kind), 0
    for _, e in ipairs(results) do
      if #e.problems > 0 then bad = bad + 1 end
      for _, problem in ipairs(e.problems) do io.stdout:write(problem, "\n") end
    end
    io.stdout:write(string.format("%d %s checked, %d with problems\n", #results,
      #results == 1 and kind:sub(1, -2) or kind, bad))
    return bad > 0 and EXIT.failed or EXIT.ok
  end
  local list, err = policy.list(kind)
  if not list then fail(err) end
  local width = 0
  for _, e in ipairs(list) do width = math.max(width, #e.name) end
  for _, e in ipairs(list) do
    io.stdout:write(e.name, string.rep(" ", width - #e.name + 2), tostring(e.from), "\n")
  end
end

local CHECK = { names = { "--check" }, key = "check" }

define("adapters", [[
usage: ferry adapters [--check]
List each adapter and the file it is loaded from (FERRY_PATH, the user config dir, or built in).
  --check   load every adapter and print each problem as FILE:LINE: message (a load error, an unknown field,
            a field of the wrong type), then a count; exit 1 when any adapter has a problem
]], { options = { CHECK }, max_args = 0 }, function(o) return list_policies("adapters", o) end)

define("providers", [[
usage: ferry providers [--check]
List each provider and the file it is loaded from (FERRY_PATH, the user config dir, or built in).
  --check   load every provider and print each problem as FILE:LINE: message (a load error, an unknown field,
            a field of the wrong type), then a count; exit 1 when any provider has a problem
]], { options = { CHECK }, max_args = 0 }, function(o) return list_policies("providers", o) end)

return M
