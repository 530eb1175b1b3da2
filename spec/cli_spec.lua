local ferry = require "ferry"
local helpers = require "support.helpers"

local FERRY = helpers.ferry_bin

local function ferry_cmd(args, opts)
  opts = opts or {}
  local argv = { FERRY }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return assert(ferry.proc.run { argv = argv, stdin = opts.stdin, env = opts.env, cwd = opts.cwd,
    timeout_ms = 20000 })
end

describe("the ferry binary", function()
  it("prints its version and help", function()
    local r = ferry_cmd { "--version" }
    assert.equal(0, r.code)
    assert.matches("^ferry %d+%.%d+%.%d+\n$", r.stdout)
    r = ferry_cmd { "--help" }
    assert.equal(0, r.code)
    assert.matches("usage: ferry VERB", r.stdout)
    assert.matches("124 timeout", r.stdout)
  end)

  it("rejects an unknown verb with exit 2", function()
    local r = ferry_cmd { "frobnicate" }
    assert.equal(2, r.code)
    assert.matches("unknown verb 'frobnicate'", r.stderr)
  end)

  it("runs a script with arg as in lua, and ferry preloaded", function()
    local script = helpers.write_temp([[
      local ferry = require "ferry"
      local r = ferry.proc.run { argv = { "echo", arg[1] } }
      io.write(arg[0], "|", #arg, "|", r.stdout)
      os.exit(tonumber(arg[2]))
    ]])
    local r = ferry_cmd { "run", script, "hello world", "5" }
    assert.equal(5, r.code)
    assert.equal(script .. "|2|hello world\n", r.stdout)
    os.remove(script)
  end)

  it("runs -e code and reports errors with a traceback and exit 1", function()
    local r = ferry_cmd { "-e", "print(ferry == nil, require('ferry').sh ~= nil)" }
    assert.equal(0, r.code)
    assert.equal("true\ttrue\n", r.stdout)
    r = ferry_cmd { "-e", "error('kaboom')" }
    assert.equal(1, r.code)
    assert.matches("kaboom", r.stderr)
    assert.matches("stack traceback", r.stderr)
    r = ferry_cmd { "-e", "this is not lua" }
    assert.equal(2, r.code)
  end)

  it("reports a missing script", function()
    local r = ferry_cmd { "run", "/nonexistent/x.lua" }
    assert.equal(1, r.code)
    assert.matches("cannot open /nonexistent/x.lua", r.stderr)
    assert.equal(2, ferry_cmd({ "run" }).code)
  end)

  it("finishes spawned tasks before exiting", function()
    local r = ferry_cmd { "-e", [[
      local ferry = require "ferry"
      ferry.spawn(function() ferry.sleep(50); print("late") end)
      print("early")
    ]] }
    assert.equal(0, r.code)
    assert.equal("early\nlate\n", r.stdout)
  end)

  it("loads system Lua C modules", function()
    local r = ferry_cmd { "-e", "print(type(require('lfs').currentdir()))" }
    assert.equal("string\n", r.stdout)
  end)

  it("lets FERRY_PATH override a built-in Lua file without rebuilding", function()
    local dir = helpers.tmpdir()
    os.execute("mkdir -p " .. dir .. "/ferry")
    helpers.write_file(dir .. "/ferry/task.lua", [[
      local real = dofile("]] .. helpers.root .. [[/scripts/ferry/task.lua")
      real.overridden = true
      return real
    ]])
    local r = ferry_cmd({ "-e", "print(require('ferry.task').overridden)" },
      { env = { FERRY_PATH = "/nonexistent;" .. dir } })
    assert.equal("true\n", r.stdout)
    r = ferry_cmd { "-e", "print(require('ferry.task').overridden)" }
    assert.equal("nil\n", r.stdout)
    helpers.rmtree(dir)
  end)

  it("loads each verb's file only when that verb runs: a broken one stops no other verb", function()
    local dir = helpers.tmpdir()
    os.execute("mkdir -p " .. dir .. "/ferry/cli")
    helpers.write_file(dir .. "/ferry/cli/sandbox.lua", "error('broken on purpose')\n")
    local env = { FERRY_PATH = dir }
    local r = ferry_cmd({ "-e", "print(1 + 1)" }, { env = env })
    assert.equal(0, r.code, r.stderr)
    assert.equal("2\n", r.stdout)
    r = ferry_cmd({ "prepare", "--help" }, { env = env })
    assert.equal(0, r.code, r.stderr)
    assert.matches("^usage: ferry prepare", r.stdout)
    r = ferry_cmd({ "exec", "-p", "local", "--", "true" }, { env = env })
    assert.equal(1, r.code)
    assert.equal("", r.stdout)
    assert.matches("^ferry: cannot load the verb 'exec': .*broken on purpose", r.stderr)
    r = ferry_cmd({ "help", "exec" }, { env = env })
    assert.equal(0, r.code)
    assert.matches("^usage: ferry VERB", r.stdout)
    r = ferry_cmd({ "help", "exec" })
    assert.matches("^usage: ferry exec", r.stdout)
    helpers.rmtree(dir)
  end)

  it("searches FERRY_PATH then the config dir, in one order for modules, adapters and providers", function()
    local root = helpers.tmpdir()
    local first, config = root .. "/first", root .. "/xdg/ferry"
    for _, d in ipairs { first .. "/ferry", first .. "/providers", config .. "/ferry", config .. "/providers",
      config .. "/adapters" } do
      assert(os.execute("mkdir -p " .. d))
    end
    -- the same names in both dirs: the FERRY_PATH copy wins, the config dir's is found when only it has one
    helpers.write_file(first .. "/ferry/probe.lua", "return 'first'")
    helpers.write_file(config .. "/ferry/probe.lua", "return 'config'")
    helpers.write_file(config .. "/ferry/only.lua", "return 'config only'")
    helpers.write_file(first .. "/providers/p.lua", "return { usage = 'first' }")
    helpers.write_file(config .. "/providers/p.lua", "return { usage = 'config' }")
    helpers.write_file(config .. "/adapters/a.lua", "return { name = 'a' }")
    local code = [[
      local core, policy = require "ferry.core", require "ferry.policy"
      for _, d in ipairs(core.search_dirs()) do print(d.from, d.dir) end
      print((require "ferry.probe"), (require "ferry.only"))
      local where, text = policy.find("providers", "p")
      print(where, text, (policy.find("adapters", "a")))
    ]]
    local r = ferry_cmd({ "-e", code },
      { env = { FERRY_PATH = "/nonexistent;;" .. first .. ";", XDG_CONFIG_HOME = root .. "/xdg" } })
    assert.equal("", r.stderr)
    assert.equal(table.concat({
      "FERRY_PATH\t/nonexistent", "FERRY_PATH\t" .. first, "config\t" .. config,
      "first\tconfig only",
      first .. "/providers/p.lua\treturn { usage = 'first' }\t" .. config .. "/adapters/a.lua", "",
    }, "\n"), r.stdout)
    -- no XDG_CONFIG_HOME: ~/.config/ferry; neither it nor HOME: FERRY_PATH alone
    r = ferry_cmd({ "-e", "for _, d in ipairs(require('ferry.core').search_dirs()) do print(d.from, d.dir) end" },
      { env = { FERRY_PATH = false, XDG_CONFIG_HOME = "", HOME = root } })
    assert.equal("config\t" .. root .. "/.config/ferry\n", r.stdout)
    r = ferry_cmd({ "-e", "print(#require('ferry.core').search_dirs())" },
      { env = { FERRY_PATH = first, XDG_CONFIG_HOME = false, HOME = false } })
    assert.equal("1\n", r.stdout)
    helpers.rmtree(root)
  end)

  it("runs a REPL that prints expressions and continues incomplete input", function()
    local r = ferry_cmd({ "repl" }, { stdin = table.concat({
      "1 + 2",
      "x = 10",
      "function f(a)",
      "  return a * x",
      "end",
      "f(4), 'two'",
      "error('oops')",
      "ferry.sh.quote('a b')",
      "=x",
    }, "\n") .. "\n" })
    assert.equal(0, r.code)
    assert.equal("3\n40\ttwo\n'a b'\n10\n", r.stdout)
    assert.matches("oops", r.stderr)
  end)
end)

describe("the REPL's history file", function()
  it("is $XDG_STATE_HOME/ferry_history (default ~/.local/state) when that dir exists, else ~/.ferry_history", function()
    local home = helpers.tmpdir()
    local code = "print(require('ferry.repl').history_path())"
    local r = ferry_cmd({ "-e", code }, { env = { HOME = home, XDG_STATE_HOME = false } })
    assert.equal(home .. "/.ferry_history\n", r.stdout)
    assert(os.execute("mkdir -p " .. home .. "/.local/state " .. home .. "/xdg"))
    r = ferry_cmd({ "-e", code }, { env = { HOME = home, XDG_STATE_HOME = false } })
    assert.equal(home .. "/.local/state/ferry_history\n", r.stdout)
    r = ferry_cmd({ "-e", code }, { env = { HOME = home, XDG_STATE_HOME = home .. "/xdg" } })
    assert.equal(home .. "/xdg/ferry_history\n", r.stdout)
    r = ferry_cmd({ "-e", code }, { env = { HOME = home, XDG_STATE_HOME = home .. "/missing" } })
    assert.equal(home .. "/.ferry_history\n", r.stdout)
    helpers.rmtree(home)
  end)
end)

describe("ferry repl -p PROVIDER", function()
  it("opens `sb` on the provider", function()
    local r = ferry_cmd({ "repl", "-p", "local" }, { stdin = "sb:exec('echo from-sb').stdout\nsb.name\n" })
    assert.equal(0, r.code)
    assert.equal("from-sb\n\nlocal\n", r.stdout)
  end)

  it("fails with the provider's error, or a usage error", function()
    local r = ferry_cmd({ "repl", "-p", "nope" }, { stdin = "" })
    assert.equal(1, r.code)
    assert.matches("unknown provider 'nope'", r.stderr)
    r = ferry_cmd({ "repl", "-p" }, { stdin = "" })
    assert.equal(2, r.code)
    assert.matches("%-p needs a PROVIDER", r.stderr)
  end)
end)

describe("the interactive REPL (in a real terminal, through tmux)", function()
  local session = "ferry-spec-" .. tostring(os.time())
  local function tmux(...)
    local argv = { "tmux", ... }
    return assert(ferry.proc.run { argv = argv, timeout_ms = 10000 })
  end
  local function screen()
    return tmux("capture-pane", "-p", "-t", session).stdout
  end
  local function wait_for(pattern)
    for _ = 1, 100 do
      if screen():find(pattern) then return true end
      ferry.sleep(50)
    end
    error("screen never showed " .. pattern .. ":\n" .. screen())
  end

  teardown(function() tmux("kill-session", "-t", session) end)

  it("edits lines, interrupts running code and a child with Ctrl-C, and keeps history", function()
    local home = helpers.tmpdir()
    os.execute("mkdir -p " .. home .. "/.local/state")
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "40",
      "env HOME=" .. home .. " " .. helpers.ferry_bin .. " repl; sleep 30")
    wait_for("Lua 5%.4%)\n>")
    tmux("send-keys", "-t", session, "1+1", "Enter")
    wait_for("\n2\n")
    local mark = "31.7" .. math.random(100000, 999999)
    tmux("send-keys", "-t", session, "r = ferry.proc.run{argv={'sleep','" .. mark .. "'}}", "Enter")
    ferry.sleep(300)
    assert.equal(1, #helpers.pids_with(mark))
    tmux("send-keys", "-t", session, "C-c")
    wait_for("interrupted!")
    ferry.sleep(100)
    assert.same({}, helpers.pids_with(mark)) -- the child it waited for was stopped
    tmux("send-keys", "-t", session, "while true do end", "Enter")
    ferry.sleep(300)
    tmux("send-keys", "-t", session, "C-c")
    tmux("send-keys", "-t", session, "'after' .. 'loop'", "Enter")
    wait_for("afterloop")
    tmux("send-keys", "-t", session, "half typed", "C-c")
    tmux("send-keys", "-t", session, "for i = 1, 2 do", "Enter")
    wait_for("do\n>> *\n")
    tmux("send-keys", "-t", session, "C-c") -- a continuation line is abandoned with the chunk
    tmux("send-keys", "-t", session, "Up", "Up", "Up", "Up", "Enter")
    wait_for("\n2\n.*\n2\n")
    assert.falsy(screen():find("near 'typed'", 1, true), screen())
    assert.falsy(screen():find("'end' expected", 1, true), screen())
    tmux("send-keys", "-t", session, "C-d")
    ferry.sleep(300)
    local hist = helpers.read_file(home .. "/.local/state/ferry_history")
    assert.truthy(hist and hist:find("1+1", 1, true))
    helpers.rmtree(home)
  end)

  it("completes names with TAB, prints tables readably, and shows errors without ferry's own frames", function()
    local home = helpers.tmpdir()
    session = session .. "-b" -- the teardown kills this one; the first session ended with its test
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "40",
      "env HOME=" .. home .. " " .. helpers.ferry_bin .. " repl -p local; sleep 30")
    wait_for("Lua 5%.4%)\n>")
    tmux("send-keys", "-t", session, "ferry.pr", "Tab", "Tab")
    wait_for("\nprepare +proc *\n")
    tmux("send-keys", "-t", session, "C-u", "sb:ex", "Tab")
    wait_for("> sb:exec")
    tmux("send-keys", "-t", session, "('echo done-' .. 1+1).stdout", "Enter")
    wait_for("\ndone%-2\n")
    tmux("send-keys", "-t", session, "string.fo", "Tab")
    wait_for("> string%.format")
    tmux("send-keys", "-t", session, "('<%d>', 7)", "Enter")
    wait_for("\n<7>\n")
    tmux("send-keys", "-t", session, "{b={1,'x'}, a=true}", "Enter")
    wait_for('\n{ a = true, b = { 1, "x" } }\n')
    tmux("send-keys", "-t", session, "t = {}; t.self = t; return t", "Enter")
    wait_for("\n<1>{ self = <table 1> }\n")
    tmux("send-keys", "-t", session, "function g() error('bad') end", "Enter", "g(); print(1)", "Enter")
    wait_for("\nstdin:1: bad\nstack traceback:\n%s+stdin:1: in function 'g'\n%s+stdin:1: in main chunk\n>")
    local mark = "31.8" .. math.random(100000, 999999)
    tmux("send-keys", "-t", session, "r = ferry.proc.run{argv={'sleep','" .. mark .. "'}}", "Enter")
    ferry.sleep(300)
    tmux("send-keys", "-t", session, "C-c")
    wait_for("interrupted!\nstack traceback:\n%s+stdin:1: in main chunk\n>")
    local shown = screen()
    assert.falsy(shown:find("[ferry]", 1, true), shown)
    assert.falsy(shown:find("[C]", 1, true), shown)
    assert.falsy(shown:find("table: 0x", 1, true), shown)
    tmux("send-keys", "-t", session, "C-d")
    helpers.rmtree(home)
  end)
end)

describe("the command line a new user meets", function()
  local tmp, ws, env
  before_each(function()
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    assert(os.execute("mkdir -p " .. ws .. " " .. tmp .. "/fp/adapters"))
    helpers.write_file(ws .. "/a.txt", "a\n")
    helpers.write_file(tmp .. "/fp/adapters/chatty.lua", [[
      return { name = "chatty", hooks = { before_sync = function(ctx)
        ctx.log("info", "an info line")
        ctx.log("debug", "a debug line")
        ctx.log("warn", "a warning line")
        if ctx.env("CHATTY_FAIL") then error("boom", 0) end
      end } }
    ]])
    env = { FERRY_PATH = tmp .. "/fp", NO_COLOR = false }
  end)
  after_each(function() helpers.rmtree(tmp) end)

  local function prepare(extra, more_env)
    local args = { "prepare", "-p", "local", "-a", "chatty", "-w", ws, "-r", tmp .. "/remote",
      "--state", tmp .. "/state.json" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local e = {}
    for k, v in pairs(env) do e[k] = v end
    for k, v in pairs(more_env or {}) do e[k] = v end
    return ferry_cmd(args, { env = e })
  end

  it("prints the usage of run and -e for --help, and passes --help after a script to the script", function()
    local r = ferry_cmd { "run", "--help" }
    assert.equal(0, r.code, r.stderr)
    assert.matches("^usage: ferry run SCRIPT%.lua", r.stdout)
    r = ferry_cmd { "-e", "--help" }
    assert.equal(0, r.code, r.stderr)
    assert.matches("^usage: ferry %-e CODE", r.stdout)
    local script = tmp .. "/args.lua"
    helpers.write_file(script, "print(table.concat(arg, ' '))")
    r = ferry_cmd { "run", script, "--help", "-h" }
    assert.equal(0, r.code, r.stderr)
    assert.equal("--help -h\n", r.stdout)
  end)

  it("lists each provider with its usage, what it does and where it is loaded from", function()
    local r = ferry_cmd { "providers" }
    assert.equal(0, r.code, r.stderr)
    assert.matches("\nbwrap +bwrap:DIR[^\n]*\n +a bubblewrap sandbox[^\n]*\n +from %[ferry%]/providers/bwrap%.lua\n",
      r.stdout)
    assert.matches("\nssh +ssh://%[USER@%]HOST[^\n]*\n +[^\n]+\n +from %[ferry%]/providers/ssh%.lua\n", r.stdout)
    assert.matches("^bridge ", r.stdout)
  end)

  it("prefixes an error once per layer: prepare, restore and exec failures", function()
    local r = ferry_cmd { "prepare", "-p", "local", "-w", tmp .. "/missing", "--state", tmp .. "/s.json" }
    assert.equal(1, r.code)
    assert.equal("ferry: prepare: workspace " .. tmp .. "/missing: stat " .. tmp
      .. "/missing: No such file or directory\n", r.stderr)
    r = prepare(nil, { CHATTY_FAIL = "1" })
    assert.equal(1, r.code)
    assert.equal("ferry: warning: a warning line\nferry: prepare: adapter chatty before_sync hook failed: boom\n",
      r.stderr)
    r = ferry_cmd { "restore", "--state", tmp .. "/none.json" }
    assert.equal(1, r.code)
    assert.equal("ferry: restore: state: cannot read " .. tmp .. "/none.json: No such file or directory\n", r.stderr)
    r = ferry_cmd { "exec", "-p", "nope", "--", "true" }
    assert.equal(1, r.code)
    assert.matches("^ferry: exec: unknown provider 'nope': known providers are local, bwrap:DIR", r.stderr)
    assert.falsy(r.stderr:find("exec: exec:", 1, true))
  end)

  it("names the known adapters for an unknown one", function()
    local r = ferry_cmd({ "prepare", "-p", "local", "-a", "nope", "-w", ws, "--state", tmp .. "/s.json" },
      { env = env })
    assert.equal(1, r.code)
    assert.equal("ferry: prepare: no adapter named 'nope': known adapters are chatty, claude, codex, cursor, gemini, "
      .. "opencode, pi, shell (see ferry adapters)\n", r.stderr)
    r = ferry_cmd({ "prepare", "-p", "local", "-a", "../x", "-w", ws, "--state", tmp .. "/s.json" }, { env = env })
    assert.equal(1, r.code)
    assert.matches("^ferry: prepare: no adapter named '%.%./x': known adapters are chatty, claude,", r.stderr)
  end)

  it("shows the policy's info and debug lines with -v, its warnings always, and no colour off a terminal", function()
    local r = prepare()
    assert.equal(0, r.code, r.stderr)
    assert.equal("ferry: warning: a warning line\n", r.stderr)
    r = prepare { "-v" }
    assert.equal(0, r.code, r.stderr)
    assert.equal("ferry: info: an info line\nferry: debug: a debug line\nferry: warning: a warning line\n", r.stderr)
    r = prepare { "--verbose" }
    assert.equal("ferry: info: an info line\nferry: debug: a debug line\nferry: warning: a warning line\n", r.stderr)
  end)

  it("shows the policy's info and debug lines and each command of `sb` in the REPL with -v", function()
    local stdin = "ferry.prepare{provider='local', adapter='chatty', workspace='" .. ws .. "', remote_dir='" .. tmp
      .. "/remote', state='" .. tmp .. "/state.json'} ~= nil\nsb:exec('true').code\n"
    local r = ferry_cmd({ "repl", "-p", "local" }, { env = env, stdin = stdin })
    assert.equal(0, r.code, r.stderr)
    assert.equal("true\n0\n", r.stdout)
    assert.equal("ferry: warn: a warning line\n", r.stderr)
    r = ferry_cmd({ "repl", "-p", "local", "-v" }, { env = env, stdin = stdin })
    assert.equal("true\n0\n", r.stdout)
    assert.matches("^ferry: an info line\nferry: a debug line\nferry: warn: a warning line\n", r.stderr)
    assert.matches("\nferry: local: .*\ntrue\n$", r.stderr) -- the script sb ran
  end)

  it("writes empty maps as {} and empty lists as [] in --json", function()
    local r = prepare { "--json" }
    assert.equal(0, r.code, r.stderr)
    local last = r.stdout:match("([^\n]+)\n$")
    assert.matches('"asset_dirs":{}', last, 1, true)
    assert.matches('"reference_dirs":{}', last, 1, true)
    assert.matches('"env":{}', last, 1, true) -- launch.env of an adapter without one
    assert.matches('"warnings":[]', last, 1, true)
    assert.matches('"changed":[]', last, 1, true)
    r = ferry_cmd({ "restore", "--json", "--state", tmp .. "/state.json" }, { env = env })
    assert.equal(0, r.code, r.stderr)
    last = r.stdout:match("([^\n]+)\n$")
    assert.matches('"asset_dirs":{}', last, 1, true)
    assert.matches('"conflicts":[]', last, 1, true)
  end)
end)
