--- ferry.provider_util: what the providers (and the client and session over them) share: the tail of a
-- command's stderr for error messages, the probe command run when a provider opens, the error for a program
-- that did not start, argv building, URL decoding, shell-like word splitting, and the template of a
-- provider whose sandbox is reached through a command prefix (`PREFIX... sh -c SCRIPT`: cmd, docker,
-- podman, kubectl).
local proc = require "ferry.proc"
local util = require "ferry.util"

local M = {}

--- The script a provider runs at open time; a sandbox that works prints M.PROBE_OK.
M.PROBE = "echo ferry-probe-ok"
M.PROBE_OK = "ferry-probe-ok"

--- The end of a command's output for an error message: its last three non-blank lines joined with "; ", cut
--- to the last 400 bytes ("" for nil or blank text). The same as ferry.util.tail with its defaults.
M.tail = function(text) return util.tail(text) end

--- Why a command failed: the tail of its stderr, else "exit code N" (or the signal when it has no code).
---@param res table  a proc.run result
---@return string
function M.why(res)
  local why = M.tail(res.stderr)
  if why == "" then why = "exit code " .. tostring(res.code or res.signal) end
  return why
end

--- The tail of a command's stderr as " (tail)" to append to a message, or "" when stderr is blank.
---@param res table  a proc.run result
---@return string
function M.stderr_note(res)
  local why = M.tail(res.stderr)
  return why ~= "" and (" (" .. why .. ")") or ""
end

--- A new argv: a copy of `argv` followed by the other arguments.
---@param argv string[]
---@return string[]
function M.with(argv, ...)
  local out = table.move(argv, 1, #argv, 1, {})
  for _, a in ipairs { ... } do out[#out + 1] = a end
  return out
end

--- Decode %XX escapes (a URL's user or query value).
---@param s string
---@return string
function M.url_decode(s)
  return (s:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

--- Run `argv` (which runs `script`) once, shown to opts.on_exec first. Returns what proc.run returns.
---@param argv string[]
---@param script string
---@param opts table  on_exec
---@param timeout_ms integer
function M.run_shown(argv, script, opts, timeout_ms)
  if opts.on_exec then opts.on_exec(argv, script) end
  return proc.run { argv = argv, timeout_ms = timeout_ms }
end

--- Run the probe script through provider `p` (`p:command(M.PROBE)`), shown to opts.on_exec first. Returns
--- what proc.run returns; M.answered(result) tells whether the sandbox answered.
---@param p table  a provider
---@param opts table  on_exec
---@param timeout_ms integer
function M.probe(p, opts, timeout_ms)
  return M.run_shown(p:command(M.PROBE), M.PROBE, opts, timeout_ms)
end

--- Whether a probe's result is the answer of a working sandbox: exit code 0 and M.PROBE_OK on stdout.
---@param res table  a proc.run result
---@return boolean
function M.answered(res)
  return res.code == 0 and res.stdout:find(M.PROBE_OK, 1, true) ~= nil
end

--- The error for a provider's program that did not start: "<name>: <shown> is not installed<install> or not
--- on PATH", "ENOENT" when it is missing, else "<name>: cannot run <program>: <err>", code.
--- how: program (the command), shown (its name in the message, default program), install (e.g.
--- " (apt-get install bubblewrap)"), after (appended to either message, e.g. "; use -p local ...").
---@param name string  the provider's name
---@param err string
---@param code string|nil
---@param how table
---@return nil, string message, string|nil code
function M.start_error(name, err, code, how)
  local after = how.after or ""
  if code == "ENOENT" then
    return nil, name .. ": " .. (how.shown or how.program) .. " is not installed" .. (how.install or "")
      .. " or not on PATH" .. after, "ENOENT"
  end
  return nil, name .. ": cannot run " .. how.program .. ": " .. err .. after, code
end

--- Finish opening provider `p`: unless opts.probe == false, run `probe(p, opts)`; when it fails, close `p`
--- and return nil, err, code.
---@param p table  a provider
---@param opts table  probe (bool)
---@param probe function  (p, opts) -> true | nil, err, code
---@return table|nil provider, string|nil err, string|nil code
function M.checked(p, opts, probe)
  if opts.probe == false then return p end
  local ok, err, code = probe(p, opts)
  if ok then return p end
  p:close()
  return nil, err, code
end

-- The text of a double-quoted word from s[i] (just after the quote): returns text, index after the closing quote.
local function double_quoted(s, i)
  local out = {}
  while i <= #s do
    local c = s:sub(i, i)
    if c == '"' then return table.concat(out), i + 1 end
    if c == "\\" and i < #s then
      local nxt = s:sub(i + 1, i + 1)
      if nxt == "\n" then
        i = i + 2
      elseif nxt:match('[$`"\\]') then
        out[#out + 1] = nxt
        i = i + 2
      else
        out[#out + 1] = c
        i = i + 1
      end
    else
      out[#out + 1] = c
      i = i + 1
    end
  end
  return nil
end

--- Split a string into words as a POSIX shell does: blanks separate words; '...' is literal; "..." keeps
--- blanks and honours \ before $ ` " \ and newline; a \ outside quotes takes the next character literally.
--- No expansion of any kind. Returns the list of words, or nil and a message.
---@param s string
---@return string[]|nil words, string|nil err
function M.split_words(s)
  local words, cur, i = {}, nil, 1
  while i <= #s do
    local c = s:sub(i, i)
    if c == " " or c == "\t" or c == "\n" then
      if cur then words[#words + 1], cur = cur, nil end
      i = i + 1
    elseif c == "'" then
      local close = s:find("'", i + 1, true)
      if not close then return nil, "unterminated ' quote" end
      cur = (cur or "") .. s:sub(i + 1, close - 1)
      i = close + 1
    elseif c == '"' then
      local text, after = double_quoted(s, i + 1)
      if not text then return nil, 'unterminated " quote' end
      cur, i = (cur or "") .. text, after
    elseif c == "\\" then
      if i == #s then return nil, "a \\ at the end has nothing to escape" end
      local nxt = s:sub(i + 1, i + 1)
      if nxt ~= "\n" then cur = (cur or "") .. nxt end
      i = i + 2
    else
      cur = (cur or "") .. c
      i = i + 1
    end
  end
  if cur then words[#words + 1] = cur end
  return words
end

local PROBE_TIMEOUT_MS = 30000

-- One probe command through a prefix provider: tells a missing program, a sandbox that does not answer and
-- one that cannot run a command from a working sandbox, in the words of def.explain.
local function prefix_probe(def, p, opts)
  local explain = def.explain or {}
  local timeout = opts.probe_timeout_ms or def.probe_timeout_ms or PROBE_TIMEOUT_MS
  local res, err, code = M.probe(p, opts, timeout)
  if not res then
    if explain.not_started then return nil, p.name .. ": " .. explain.not_started(p, err), code end
    return M.start_error(p.name, err, code, { program = p.prefix[1] })
  end
  if res.timed_out then
    local seconds = timeout // 1000
    return nil, p.name .. ": " .. (explain.timed_out and explain.timed_out(p, seconds)
      or string.format("the %s did not answer within %d s", def.sandbox or "sandbox", seconds)), "ETIMEDOUT"
  end
  if not M.answered(res) then
    return nil, p.name .. ": " .. (explain.unreachable and explain.unreachable(p, res)
      or string.format("cannot run a command in the %s: %s", def.sandbox or "sandbox", M.why(res))), "EHOSTUNREACH"
  end
  return true
end

--- A provider module for a sandbox reached by running `PREFIX... sh -c SCRIPT` on this host. def:
--- scheme (the provider's name: it opens "<scheme>:<arg>" and calls itself that), usage, help, parse
--- (optional, exported as the module's parse), target(arg) -> fields | nil, message (fields.prefix: the argv
--- before `sh -c SCRIPT`; the other fields are kept on the provider; a message becomes "<scheme>:<arg>:
--- <message>", "EINVAL"), sandbox (what messages call it: "container", "pod"; default "sandbox"),
--- probe_timeout_ms (default 30000; opts.probe_timeout_ms wins), costly (caps.costly: each command starts
--- an expensive client such as `docker exec`), explain (optional, each returns the text after
--- "<name>: "): not_started(p, err), timed_out(p, seconds), unreachable(p, probe_result).
--- The provider probes once at open (unless opts.probe == false), declares caps stdin and binary, stages
--- uploads in /tmp and has nothing to release.
---@param def table
---@return table module  usage, help, open (and parse)
function M.prefix_provider(def)
  local Prefixed = {}
  Prefixed.__index = Prefixed

  --- The argv that runs `script`: the prefix, then sh -c script.
  function Prefixed:command(script)
    return M.with(self.prefix, "sh", "-c", script)
  end

  --- Nothing to release: every command is a process of its own.
  function Prefixed.close() end

  local function probe(p, opts) return prefix_probe(def, p, opts) end

  local mod = { usage = def.usage, help = def.help, parse = def.parse }

  --- Open the provider: check the argument and, unless opts.probe == false, run one probe command.
  ---@param arg string|nil  the text after "<scheme>:"
  ---@param opts table|nil  probe (bool), probe_timeout_ms, on_exec
  ---@return table|nil provider, string|nil err, string|nil code
  function mod.open(arg, opts)
    opts = opts or {}
    local name = def.scheme .. ":" .. (arg or "")
    local fields, err = def.target(arg or "")
    if not fields then return nil, name .. ": " .. err, "EINVAL" end
    local p = setmetatable({ name = name, caps = { stdin = true, binary = true, costly = def.costly },
      scratch_dir = "/tmp" }, Prefixed)
    for k, v in pairs(fields) do p[k] = v end
    return M.checked(p, opts, probe)
  end
  return mod
end

--- A provider module for a docker-compatible CLI (`program` exec -i CONTAINER sh -c SCRIPT, no tty so stdin and
--- stdout are 8-bit clean): docker, podman, nerdctl, ...
---@param program string
---@return table module
function M.container_provider(program)
  return M.prefix_provider {
    scheme = program,
    usage = program .. ":CONTAINER",
    help = "commands run in a running container with " .. program .. " exec -i CONTAINER sh -c SCRIPT",
    sandbox = "container",
    costly = true,
    target = function(arg)
      if arg == "" then return nil, "expected a container name or id, e.g. " .. program .. ":box" end
      if not arg:match("^[%w][%w_.%-]*$") then return nil, "'" .. arg .. "' is not a container name or id" end
      return { container = arg, prefix = { program, "exec", "-i", arg } }
    end,
    explain = {
      unreachable = function(p, res)
        return string.format("cannot run a command in container %s: %s; check that it is running (%s ps)",
          p.container, M.why(res), program)
      end,
    },
  }
end

return M
