--- The ferry command line: each verb is a function of this table (see README "CLI").
local M = {}

local EXIT = { ok = 0, failed = 1, usage = 2, conflicts = 3, timeout = 124 }
M.EXIT = EXIT

local USAGE = [[
usage: ferry VERB [ARGS...]

  run SCRIPT.lua [ARGS...]   run a Lua script (arg as in lua); ferry is preloaded as require "ferry"
  -e CODE                    run a Lua chunk
  repl [-p PROVIDER]         interactive Lua with ferry loaded (`sb` opened on PROVIDER)
  exec -p PROVIDER [--cwd DIR] [--env K=V]... [--timeout SEC] [--stdin FILE|-] -- CMD [ARG...]
                             run a command in the sandbox, streaming its output; exit with its code
  put -p PROVIDER LOCAL REMOTE               copy a file into the sandbox
  get -p PROVIDER [--max-bytes N] REMOTE LOCAL  copy a file out of the sandbox
  ls -p PROVIDER REMOTE_DIR                  list a sandbox directory
  prepare -p PROVIDER [-a ADAPTER] -w WORKSPACE [-r REMOTE_DIR] [--exclude PAT]... [--asset KEY=DIR]...
          [--state FILE] [--json] [--secret-env NAME]...
                             install the agent, copy the workspace and assets into the sandbox
  restore --state FILE [--json] [--secret-env NAME]... [--allow-outside-symlinks] [--max-bytes N]
                             bring the sandbox's workspace back, 3-way merged with host edits
  prepare --many FILE [--jobs N] [--json]    many sandboxes at once (FILE: JSON list of
  restore --many FILE [--jobs N] [--json]    {provider, adapter, workspace, remote_dir, state})
  adapters                   each adapter and the file it is loaded from
  providers                  each provider and the file it is loaded from
  --version                  print the version
  --help, help [VERB]        this text, or a verb's

Exit codes: 0 ok, 1 failed, 2 usage, 3 restore finished with conflicts, 124 timeout.
]]

M.verbs = {}

--- Register a verb: `fn(args)` gets the words after the verb and returns an exit code.
---@param name string
---@param help string  the verb's --help text
---@param fn fun(args: string[]): integer
function M.verb(name, help, fn)
  M.verbs[name] = { help = help, fn = fn }
end

local function usage_error(msg)
  io.stderr:write("ferry: ", msg, "\n(see ferry --help)\n")
  return EXIT.usage
end
M.usage_error = usage_error

local function run_chunk(chunk, chunk_args)
  local task = require "ferry.task"
  local ok, err = xpcall(function()
    chunk(table.unpack(chunk_args))
    task.drain()
  end, debug.traceback)
  if not ok then
    io.stderr:write("ferry: ", tostring(err), "\n")
    return EXIT.failed
  end
  return EXIT.ok
end

M.verb("run", "usage: ferry run SCRIPT.lua [ARGS...]\n"
  .. "Run a Lua script; arg[0] is the script, arg[1..] its arguments.\n",
  function(args)
    local script = args[1]
    if not script then return usage_error("run: missing SCRIPT.lua") end
    local chunk, err = loadfile(script)
    if not chunk then
      io.stderr:write("ferry: ", err, "\n")
      return EXIT.failed
    end
    local script_arg = { [0] = script }
    for i = 2, #args do script_arg[i - 1] = args[i] end
    _G.arg = script_arg
    return run_chunk(chunk, script_arg)
  end)

M.verb("-e", "usage: ferry -e CODE\nRun a Lua chunk.\n", function(args)
  if not args[1] then return usage_error("-e: missing CODE") end
  local chunk, err = load(args[1], "=(command line)")
  if not chunk then
    io.stderr:write("ferry: ", err, "\n")
    return EXIT.usage
  end
  return run_chunk(chunk, {})
end)

M.verb("repl", "usage: ferry repl [-p PROVIDER]\nInteractive Lua with ferry loaded as `ferry`.\n",
  function(args)
    return require("ferry.repl").main(args)
  end)

M.verb("help", "usage: ferry help [VERB]\n", function(args)
  local v = args[1] and M.verbs[args[1]]
  io.stdout:write(v and v.help or USAGE)
  return EXIT.ok
end)

--- Entry point of the binary. argv[0] is the program, argv[1] the verb.
---@param argv table
---@return integer exit code
function M.main(argv)
  local verb = argv[1]
  local rest = {}
  for i = 2, #argv do rest[#rest + 1] = argv[i] end
  if verb == nil or verb == "--help" or verb == "-h" then
    io.stdout:write(USAGE)
    return verb and EXIT.ok or EXIT.usage
  end
  if verb == "--version" then
    io.stdout:write("ferry ", require("ferry").version, "\n")
    return EXIT.ok
  end
  local v = M.verbs[verb]
  if not v or verb == "help" then
    -- The sandbox verbs load on demand: an error in them never stops `ferry run`.
    local ok, err = pcall(require, "ferry.cli_verbs")
    v = M.verbs[verb]
    if not ok and not v then
      io.stderr:write("ferry: cannot load the sandbox verbs: ", tostring(err), "\n")
      return EXIT.failed
    end
  end
  if not v then return usage_error("unknown verb '" .. verb .. "'") end
  if verb ~= "run" and verb ~= "-e" and (rest[1] == "--help" or rest[1] == "-h") then
    io.stdout:write(v.help)
    return EXIT.ok
  end
  return v.fn(rest)
end

return M
