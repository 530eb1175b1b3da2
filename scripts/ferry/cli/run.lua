--- The verbs that run Lua code (README "CLI"): run SCRIPT.lua, -e CODE, repl.
local registry = require "ferry.cli.registry"

local EXIT = registry.EXIT
local M = {}

-- Run a loaded chunk, then every task it spawned; an error prints its traceback and exits 1.
local function run_chunk(chunk, chunk_args)
  local task = require "ferry.task"
  local ok, err = xpcall(function()
    chunk(table.unpack(chunk_args))
    task.drain()
  end, debug.traceback)
  if not ok then
    -- the error may quote a sandbox (its stderr in a failed command's message): escaped for the terminal
    io.stderr:write("ferry: ", require("ferry.printable").text(tostring(err)), "\n")
    return EXIT.failed
  end
  return EXIT.ok
end

registry.verb("run", "usage: ferry run SCRIPT.lua [ARGS...]\n"
  .. "Run a Lua script; arg[0] is the script, arg[1..] its arguments.\n",
  function(args)
    local script = args[1]
    if not script then return registry.usage_error("run: missing SCRIPT.lua") end
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

registry.verb("-e", "usage: ferry -e CODE\nRun a Lua chunk.\n", function(args)
  if not args[1] then return registry.usage_error("-e: missing CODE") end
  local chunk, err = load(args[1], "=(command line)")
  if not chunk then
    io.stderr:write("ferry: ", err, "\n")
    return EXIT.usage
  end
  return run_chunk(chunk, {})
end)

registry.verb("repl", [[
usage: ferry repl [-p PROVIDER] [-v]
Interactive Lua with ferry loaded as `ferry`: TAB completes names, fields and methods; values print as Lua
(tables nested, keys sorted); Ctrl-C interrupts the running code; Ctrl-D leaves.
  -p, --provider PROVIDER   open `sb` on PROVIDER
  -v, --verbose             show the policy's info and debug messages and each command `sb` runs, on stderr
]],
  function(args)
    return require("ferry.repl").main(args)
  end)

return M
