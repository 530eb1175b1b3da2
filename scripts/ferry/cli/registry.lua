--- The verb registry of the ferry command line: every verb file registers its verbs here, and the plumbing
--- they share: exit codes, fail()/usage() turned into `ferry: <verb>: <message>`, `say`, which redacts and
--- escapes what a terminal could act on (ferry.printable), and SIGINT/SIGTERM/SIGHUP turned into stopping
--- every command (in the sandbox too), unwinding, and exit 128+N.
local options = require "ferry.cli.options"
local printable = require "ferry.printable"

local M = {}

M.EXIT = { ok = 0, failed = 1, usage = 2, conflicts = 3, timeout = 124 }
local EXIT = M.EXIT

local SIGNAL_NUMBER = { SIGHUP = 1, SIGINT = 2, SIGTERM = 15 }

--- Registered verbs by name: {help = string, fn = function}.
M.verbs = {}

--- Register a verb: `fn(args)` gets the words after the verb and returns an exit code.
---@param name string
---@param help string  the verb's --help text
---@param fn fun(args: string[]): integer
function M.verb(name, help, fn)
  M.verbs[name] = { help = help, fn = fn }
end

--- Report a usage error of the command line itself: `ferry: <msg>` and a pointer to --help.
---@param msg string
---@return integer EXIT.usage
function M.usage_error(msg)
  io.stderr:write("ferry: ", printable.text(msg), "\n(see ferry --help)\n")
  return EXIT.usage
end

local Failure = {} -- metatable marking an error raised by fail(): a message for the user, not a bug

--- Stop the running verb with `ferry: <verb>: <message>` on stderr and exit `code` (default 1).
---@param message string
---@param code integer|nil
function M.fail(message, code)
  error(setmetatable({ message = message, code = code or EXIT.failed }, Failure), 0)
end

--- Stop the running verb with a usage error (exit 2), pointing at the verb's --help.
---@param message string
function M.usage(message)
  M.fail(message, EXIT.usage)
end

local function identity(s) return s end

-- The redactor of the running verb: secrets never reach a terminal or a file.
local current_redact = identity

--- The running verb's redaction of `s` (its --secret-env values and token shapes).
---@param s string
---@return string
function M.redact(s)
  return current_redact(s)
end

--- Write the arguments to `file`, each redacted, then made safe for a terminal (ferry.printable.text: a
--- sandbox's bytes are never written raw; newlines and tabs are kept).
---@param file file*
function M.say(file, ...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = printable.text(current_redact(tostring(parts[i]))) end
  file:write(table.concat(parts, "", 1, parts.n))
end

--- A failure's message as `ferry: <verb>: ` shows it: one prefix per layer. The Lua API names its operation
--- itself ("prepare: workspace /x: ..."), and the command line names the verb: when the message already
--- starts with the verb's name, that name is not repeated ("ferry: prepare: workspace /x: ...", never
--- "ferry: prepare: prepare: ...").
---@param name string  the verb
---@param message string
---@return string
function M.unprefixed(name, message)
  message = tostring(message)
  local prefix = name .. ": "
  if message:sub(1, #prefix) == prefix then return message:sub(#prefix + 1) end
  return message
end

-- How a verb's run ended: its exit code, with the message on stderr when it failed. After SIGINT, SIGTERM or
-- SIGHUP (every command stopped, every task unwound): "interrupted (<signal>)" and exit 128+N, whatever
-- error the interruption surfaced as.
local function finish(name, ok, res)
  io.stdout:flush()
  local signal = require("ferry.task").interrupted()
  if signal then
    io.stderr:write("ferry: ", name, ": interrupted (", signal, ")\n")
    return 128 + (SIGNAL_NUMBER[signal] or 0)
  end
  if ok then return res or EXIT.ok end
  if getmetatable(res) == Failure and res.code == EXIT.usage then
    -- Only words the user typed: not redacted, or "KEY=DIR" would read as a credential.
    io.stderr:write("ferry: ", name, ": ", printable.text(res.message), "\n(see ferry ", name, " --help)\n")
    return res.code
  elseif getmetatable(res) == Failure then
    M.say(io.stderr, "ferry: ", name, ": ", M.unprefixed(name, res.message), "\n")
    return res.code
  end
  M.say(io.stderr, "ferry: ", name, ": ", M.unprefixed(name, res), "\n")
  return EXIT.failed
end

--- Define a verb: parse its options (usage error on a bad one), check the positional count, run `fn(opts)`
--- and turn a fail() into `ferry: <verb>: <message>` on stderr with its exit code.
--- spec: as options.parse takes, plus secrets (redact --secret-env values), min_args, max_args and operands
--- (what the missing positionals are called).
---@param name string
---@param help string
---@param spec table
---@param fn fun(opts: table): integer|nil
function M.define(name, help, spec, fn)
  M.verb(name, help, function(args)
    local opts, err = options.parse(args, spec)
    current_redact = identity
    local core = require "ferry.core"
    if core.signals_install then core.signals_install(require("ferry.task").interrupt) end
    local ok, res = xpcall(function()
      if not opts then M.usage(err) end
      if spec.secrets then -- --secret-env values, and what --pass-env sends
        local names = table.move(opts.pass_env or {}, 1, #(opts.pass_env or {}), #opts.secret_env + 1,
          table.move(opts.secret_env, 1, #opts.secret_env, 1, {}))
        current_redact = require("ferry.redact").new(options.secret_values(names))
      end
      local n = #opts.args
      if spec.min_args and n < spec.min_args then M.usage("missing " .. spec.operands) end
      if spec.max_args and n > spec.max_args then
        M.usage("unexpected argument '" .. opts.args[spec.max_args + 1] .. "'")
      end
      return fn(opts)
    end, function(e)
      if getmetatable(e) == Failure then return e end
      return debug.traceback(tostring(e), 2)
    end)
    return finish(name, ok, res)
  end)
end

return M
