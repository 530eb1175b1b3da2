--- The ferry command line (README "CLI"): the entry point the binary calls, the top-level usage, and the
--- dispatch of each verb to the file that defines it (scripts/ferry/cli/), loaded only when that verb runs.
local registry = require "ferry.cli.registry"

local EXIT = registry.EXIT
local M = {}

local USAGE = [[
usage: ferry VERB [ARGS...]

  run SCRIPT.lua [ARGS...]   run a Lua script (arg as in lua); ferry is preloaded as require "ferry"
  -e CODE                    run a Lua chunk
  repl [-p PROVIDER]         interactive Lua with ferry loaded (`sb` opened on PROVIDER)
  exec -p PROVIDER [--cwd DIR] [--env K=V]... [--env-file FILE] [--timeout SEC] [--stdin FILE|-] -- CMD ...
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
  bridge serve --listen HOST:PORT --key ID=FILE... --sandbox TEMPLATE --state-dir DIR [...]
                             serve sandboxes over the signed HTTP bridge protocol
  bridge leases --state-dir DIR [--json]     the leases a bridge server recorded
  bridge release -p PROVIDER                 end the lease of a bridge+http(s):// provider string
  adapters [--check]         each adapter and the file it is loaded from (--check: validate every one)
  providers [--check]        each provider and the file it is loaded from (--check: validate every one)
  --version                  print the version
  --help, help [VERB]        this text, or a verb's

Exit codes: 0 ok, 1 failed, 2 usage, 3 restore finished with conflicts, 124 timeout, 128+N signal N.
]]

-- The file defining each verb. Each loads on demand: an error in one (a broken FERRY_PATH override, say)
-- never stops the verbs of another, such as `ferry run`.
local VERB_FILES = {
  run = "ferry.cli.run", ["-e"] = "ferry.cli.run", repl = "ferry.cli.run",
  exec = "ferry.cli.sandbox", put = "ferry.cli.sandbox", get = "ferry.cli.sandbox", ls = "ferry.cli.sandbox",
  prepare = "ferry.cli.runtime", restore = "ferry.cli.runtime",
  adapters = "ferry.cli.policy", providers = "ferry.cli.policy",
  bridge = "ferry.cli.bridge",
}

-- The verb named `name`, loading its file first.
---@return table|nil verb  {help, fn}; nil for an unknown verb or one whose file failed to load
---@return string|nil err  why its file failed to load
local function find_verb(name)
  local v = registry.verbs[name]
  if v or not VERB_FILES[name] then return v end
  local ok, err = pcall(require, VERB_FILES[name])
  if not ok then return nil, err end
  return registry.verbs[name]
end

registry.verb("help", "usage: ferry help [VERB]\n", function(args)
  local v = args[1] and find_verb(args[1])
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
  local v, err = find_verb(verb)
  if err then
    io.stderr:write("ferry: cannot load the verb '", verb, "': ", tostring(err), "\n")
    return EXIT.failed
  end
  if not v then return registry.usage_error("unknown verb '" .. verb .. "'") end
  -- `ferry run --help` and `ferry -e --help` too: `ferry run script.lua --help` passes --help to the script
  if rest[1] == "--help" or rest[1] == "-h" then
    io.stdout:write(v.help)
    return EXIT.ok
  end
  return v.fn(rest)
end

return M
