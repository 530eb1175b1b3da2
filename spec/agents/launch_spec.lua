-- The launch contract (README "Launching the agent"): each built-in adapter's launch in prepare's result
-- (cwd, env, path, command), the dirs and links it needs made in the sandbox with the assets where the agent
-- looks, HOME where the sandbox's is not writable, the launch kept in the state file, and
-- `ferry exec --state FILE [--pass-env NAME] -- CMD` running CMD that way. Each prepare runs `build/ferry` with
-- a host home of the spec's own and a fake npm (spec/agents/fake-npm) first on the sandbox's PATH.
local ferry = require "ferry"
local core = require "ferry.core"
local cjson = require "cjson"
local helpers = require "support.helpers"

local sh = helpers.sh
local write = helpers.write_file

local function run_ferry(args, env)
  local argv = { helpers.ferry_bin }
  table.move(args, 1, #args, 2, argv)
  return assert(ferry.proc.run { argv = argv, env = env, timeout_ms = 60000 })
end

local function last_json(stdout)
  local last
  for line in stdout:gmatch("[^\n]+") do last = line end
  return cjson.decode(last)
end

local function mkdir(path) sh("mkdir -p '" .. path .. "'") end

local function is_dir(path)
  local st = core.fs_stat(path)
  return st ~= nil and st.kind == "dir"
end

describe("launch", function()
  local tmp, ws, home, remote, env, npm
  before_each(function()
    tmp = helpers.tmpdir()
    ws, home, remote = tmp .. "/ws", tmp .. "/home", tmp .. "/remote"
    mkdir(ws)
    mkdir(home)
    write(ws .. "/a.txt", "hi\n")
    npm = tmp .. "/fakebin"
    mkdir(npm)
    sh("cp '" .. helpers.root .. "/spec/agents/fake-npm' '" .. npm .. "/npm'")
    write(npm .. "/global", "/nonexistent\n")
    -- the host as the adapters see it: this home, none of the agents' variables
    env = { HOME = home, CODEX_HOME = false, CLAUDE_CONFIG_DIR = false, XDG_CONFIG_HOME = false,
      XDG_DATA_HOME = false, PI_CODING_AGENT_DIR = false, XDG_STATE_HOME = tmp .. "/state" }
  end)
  after_each(function() helpers.rmtree(tmp) end)

  local function provider(extra)
    return "cmd:env PATH=" .. npm .. ":/usr/bin:/bin " .. (extra or "HOME=" .. tmp .. "/sandbox-home")
  end

  -- prepare --json with adapter `name`; returns the result object.
  local function prepare(name, extra_provider)
    mkdir(tmp .. "/sandbox-home")
    local res = run_ferry({ "prepare", "-p", provider(extra_provider), "-a", name, "-w", ws, "-r", remote,
      "--state", tmp .. "/state.json", "--json" }, env)
    assert.are.equal(0, res.code, res.stderr)
    local r = last_json(res.stdout)
    assert.is_true(r.ok)
    return r
  end

  local function exec(args, extra_env)
    local e = {}
    for k, v in pairs(env) do e[k] = v end
    for k, v in pairs(extra_env or {}) do e[k] = v end
    local argv = { "exec", "--state", tmp .. "/state.json" }
    table.move(args, 1, #args, #argv + 1, argv)
    return run_ferry(argv, e)
  end

  local function adapter_dir(name) return remote .. "/.ferry-runtime/" .. name end
  local function bin_path(name)
    return { adapter_dir(name) .. "/prefix/node_modules/.bin", adapter_dir(name) .. "/prefix/bin" }
  end

  it("codex: CODEX_HOME is the home asset, and codex finds its auth.json there", function()
    mkdir(home .. "/.codex")
    write(home .. "/.codex/auth.json", '{"OPENAI_API_KEY":"sk-fake-1234567890abcdef"}')
    local r = prepare("codex")
    local dir = adapter_dir("codex")
    assert.are.same({ cwd = remote, env = { CODEX_HOME = dir .. "/home" }, path = bin_path("codex"),
      command = { "codex" } }, r.launch)
    local res = exec { "sh", "-c", 'cat "$CODEX_HOME/auth.json"; codex; pwd' }
    assert.are.same({ 0, '{"OPENAI_API_KEY":"sk-fake-1234567890abcdef"}codex 1.0.0-fake\n' .. remote .. "\n" },
      { res.code, res.stdout })
  end)

  it("codex without a home on the host: CODEX_HOME is made all the same (codex refuses a missing one)", function()
    local r = prepare("codex")
    assert.is_true(is_dir(r.launch.env.CODEX_HOME))
  end)

  it("claude: CLAUDE_CONFIG_DIR holds the skills and .claude.json with the MCP servers, Claude's state kept",
    function()
      mkdir(home .. "/.claude/skills/review")
      write(home .. "/.claude/skills/review/SKILL.md", "# review\n")
      write(home .. "/.claude.json", cjson.encode { mcpServers = { docs = { command = "docs-mcp" } } })
      local dir = adapter_dir("claude")
      mkdir(dir)
      write(dir .. "/.claude.json", '{"numStartups": 3, "tipsHistory": [], "mcpServers": {"old": {"command": "x"}}}')
      local r = prepare("claude")
      assert.are.same({ cwd = remote, env = { CLAUDE_CONFIG_DIR = dir }, path = bin_path("claude"),
        command = { "claude" } }, r.launch)
      assert.are.equal("# review\n", helpers.read_file(dir .. "/skills/review/SKILL.md"))
      assert.are.equal('{"numStartups": 3, "tipsHistory": [], "mcpServers":{"docs":{"command":"docs-mcp"}}}',
        helpers.read_file(dir .. "/.claude.json"))
      assert.are.equal(tonumber("600", 8), core.fs_stat(dir .. "/.claude.json").mode & 511)
    end)

  it("gemini: GEMINI_CLI_HOME/.gemini is the home asset; MCP servers make it trust the workspace", function()
    local r = prepare("gemini")
    local dir = adapter_dir("gemini")
    assert.are.same({ cwd = remote, env = { GEMINI_CLI_HOME = dir }, path = bin_path("gemini"),
      command = { "gemini" } }, r.launch)
    mkdir(home .. "/.gemini")
    write(home .. "/.gemini/settings.json", '{"mcpServers":{"s":{"command":"/bin/true"}}}')
    r = prepare("gemini")
    assert.are.same({ GEMINI_CLI_HOME = dir, GEMINI_CLI_TRUST_WORKSPACE = "true" }, r.launch.env)
    assert.are.equal(dir .. "/home", core.fs_readlink(dir .. "/.gemini"))
    local res = exec { "sh", "-c", 'cat "$GEMINI_CLI_HOME/.gemini/settings.json"' }
    assert.are.same({ 0, '{"mcpServers":{"s":{"command":"/bin/true"}}}' }, { res.code, res.stdout })
  end)

  it("pi: PI_CODING_AGENT_DIR is the agent asset, offline", function()
    local r = prepare("pi")
    local dir = adapter_dir("pi")
    assert.are.same({ cwd = remote, env = { PI_CODING_AGENT_DIR = dir .. "/agent", PI_OFFLINE = "1" },
      path = bin_path("pi"), command = { "pi" } }, r.launch)
    assert.is_true(is_dir(dir .. "/agent"))
  end)

  it("opencode: its own XDG dirs, with opencode's config and data linked to the assets", function()
    mkdir(home .. "/.config/opencode")
    write(home .. "/.config/opencode/opencode.json", '{"mcp":{"m":{"type":"local","command":["/bin/true"]}}}')
    local r = prepare("opencode")
    local dir, xdg = adapter_dir("opencode"), adapter_dir("opencode") .. "/xdg"
    assert.are.same({ cwd = remote, env = { XDG_CONFIG_HOME = xdg .. "/config", XDG_DATA_HOME = xdg .. "/data",
      XDG_CACHE_HOME = xdg .. "/cache", XDG_STATE_HOME = xdg .. "/state", OPENCODE_DISABLE_AUTOUPDATE = "1" },
      path = bin_path("opencode"), command = { "opencode" } }, r.launch)
    local res = exec { "sh", "-c", 'cat "$XDG_CONFIG_HOME/opencode/opencode.json"; ls -d "$XDG_DATA_HOME/opencode/"'
      .. ' "$XDG_CACHE_HOME" "$XDG_STATE_HOME"' }
    assert.are.same({ 0, '{"mcp":{"m":{"type":"local","command":["/bin/true"]}}}' .. xdg .. "/cache\n" .. xdg
      .. "/data/opencode/\n" .. xdg .. "/state\n" }, { res.code, res.stdout })
    assert.are.equal(dir .. "/config", core.fs_readlink(xdg .. "/config/opencode"))
  end)

  it("cursor: its config dirs; its command comes from the vendor script, linked into the prefix", function()
    -- a stand-in `agent` already on the sandbox's PATH: no install (the vendor script needs the internet)
    write(npm .. "/agent", "#!/bin/sh\necho agent\n")
    sh("chmod 755 '" .. npm .. "/agent'")
    local r = prepare("cursor")
    local dir = adapter_dir("cursor")
    assert.are.same({ cwd = remote, env = { CURSOR_CONFIG_DIR = dir .. "/home", XDG_CONFIG_HOME = dir .. "/xdg" },
      path = bin_path("cursor"), command = { "agent" } }, r.launch)
    assert.are.equal(dir .. "/config", core.fs_readlink(dir .. "/xdg/cursor"))
  end)

  it("shell: the workspace as cwd, nothing else", function()
    local r = prepare("shell")
    assert.are.same({ cwd = remote }, { cwd = r.launch.cwd, r.launch.command })
    assert.are.equal(0, #r.launch.path)
    assert.is_nil(next(r.launch.env))
  end)

  it("sets HOME when the sandbox's is not a writable dir", function()
    local r = prepare("pi", "HOME=/nonexistent")
    local fallback = adapter_dir("pi") .. "/prefix/home"
    assert.are.equal(fallback, r.launch.env.HOME)
    assert.is_true(is_dir(fallback))
    local res = exec { "sh", "-c", 'echo "$HOME"; touch "$HOME/x"' }
    assert.are.same({ 0, fallback .. "\n" }, { res.code, res.stdout })
    assert.is_nil(prepare("pi").launch.env.HOME) -- a writable one is left alone
  end)

  it("is kept in the state file; a state without one cannot be used by exec --state", function()
    prepare("codex")
    local st = cjson.decode(helpers.read_file(tmp .. "/state.json"))
    assert.are.same({ "codex" }, st.launch.command)
    assert.are.equal(remote, st.launch.cwd)
    st.launch = nil
    write(tmp .. "/old.json", cjson.encode(st))
    local res = run_ferry({ "exec", "--state", tmp .. "/old.json", "--", "true" }, env)
    assert.are.same({ 1, "ferry: exec: state " .. tmp .. "/old.json: it has no launch (prepare it again with this "
      .. "ferry)\n" }, { res.code, res.stderr })
    res = run_ferry({ "exec", "-p", "local", "--state", tmp .. "/state.json", "--", "true" }, env)
    assert.are.equal(2, res.code)
    assert.truthy(res.stderr:find("ferry: exec: -p and --state cannot be used together", 1, true))
  end)

  it("the summary for a human names the user prefix and how to run the agent", function()
    mkdir(tmp .. "/sandbox-home")
    local res = run_ferry({ "prepare", "-p", provider(), "-a", "codex", "-w", ws, "-r", remote, "--state",
      tmp .. "/state.json" }, env)
    assert.are.equal(0, res.code, res.stderr)
    assert.truthy(res.stdout:find("\n  prefix    " .. adapter_dir("codex") .. "/prefix\n", 1, true), res.stdout)
    assert.truthy(res.stdout:find("\nrun the agent with: ferry exec --state " .. tmp .. "/state.json -- codex\n", 1,
      true), res.stdout)
  end)

  it("exec --state: --cwd and --env still apply, the launch's PATH dirs come first", function()
    prepare("codex")
    local res = exec { "--cwd", "/", "--env", "CODEX_HOME=/elsewhere", "--", "sh", "-c",
      'pwd; echo "$CODEX_HOME"; echo "${PATH%%:*}"' }
    assert.are.same({ 0, "/\n/elsewhere\n" .. adapter_dir("codex") .. "/prefix/node_modules/.bin\n" },
      { res.code, res.stdout })
    res = exec { "--", "no-such-command-x" }
    assert.are.equal(127, res.code)
  end)

  it("--pass-env sends a host variable on stdin, never a command line, and redacts it", function()
    prepare("shell")
    local secret = "pass-value-7f3a91c2"
    local res = exec({ "--pass-env", "SPEC_KEY", "--", "sh", "-c", 'echo "key=$SPEC_KEY"; for p in $$ $PPID; do '
      .. 'tr "\\0" " " < /proc/$p/cmdline; echo; done > cmdlines' }, { SPEC_KEY = secret })
    assert.are.same({ 0, "key=***\n", "" }, { res.code, res.stdout, res.stderr })
    local cmdlines = helpers.read_file(remote .. "/cmdlines")
    assert.truthy(cmdlines:find("SPEC_KEY", 1, true)) -- the script that reads it is there, not its value
    assert.is_nil(cmdlines:find(secret, 1, true))
    res = exec({ "--pass-env", "SPEC_UNSET_X", "--", "true" }, { SPEC_UNSET_X = false })
    assert.are.same({ 1, "ferry: exec: --pass-env SPEC_UNSET_X: not set in this environment\n" },
      { res.code, res.stderr })
    res = exec({ "--pass-env", "1BAD", "--", "true" })
    assert.are.equal(2, res.code)
    assert.truthy(res.stderr:find("--pass-env expects a variable name, got '1BAD'", 1, true))
  end)

  describe("an adapter's launch function", function()
    local function prepare_with(launch_fn, extra)
      local a = { name = "mine", hooks = {}, launch = launch_fn }
      for k, v in pairs(extra or {}) do a[k] = v end
      return ferry.prepare { provider = "local", workspace = ws, remote_dir = remote, state = tmp .. "/s.json",
        adapter = a }
    end

    it("is checked before the sandbox changes", function()
      local cases = {
        { function() return { env = { ["1X"] = "v" } } end,
          "prepare: adapter mine launch: field 'env' has a key that is not a variable name: 1X" },
        { function() return { env = { X = {} } } end, "prepare: adapter mine launch: field 'env.X' must be a string, "
          .. "got table" },
        { function() return { path = { "rel/bin" } } end, "prepare: adapter mine launch: field 'path[1]' must be an "
          .. "absolute dir without ':', got rel/bin" },
        { function() return { cmd = { "x" } } end, "prepare: adapter mine launch: unknown field 'cmd' (env, path, "
          .. "command, dirs, links)" },
        { function() error("boom", 0) end, "prepare: adapter mine launch failed: boom" },
      }
      for _, c in ipairs(cases) do
        local r, err, code = prepare_with(c[1])
        assert.are.same({ nil, c[2], "EINVAL" }, { r, err, code })
      end
      assert.is_nil(core.fs_stat(remote))
    end)

    it("gets adapter_dir and prefix; its dirs and links are made, a real dir in a link's place kept", function()
      local seen
      local r = assert(prepare_with(function(ctx)
        seen = { ctx.adapter_dir, ctx.prefix, ctx.remote_dir }
        return { env = { A = "1" }, path = { "/opt/x/bin" }, command = { "mine", "--flag" },
          dirs = { ctx.adapter_dir .. "/d" }, links = { [ctx.adapter_dir .. "/l/link"] = ctx.adapter_dir .. "/d",
            [ctx.adapter_dir .. "/real"] = ctx.adapter_dir .. "/d" } }
      end, { install = "true" }))
      local dir = adapter_dir("mine")
      assert.are.same({ dir, dir .. "/prefix", remote }, seen)
      assert.are.same({ cwd = remote, env = { A = "1" }, path = { dir .. "/prefix/node_modules/.bin",
        dir .. "/prefix/bin", "/opt/x/bin" }, command = { "mine", "--flag" } }, r.launch)
      assert.are.equal(dir .. "/d", core.fs_readlink(dir .. "/l/link"))
      sh("rm '" .. dir .. "/real' && mkdir -p '" .. dir .. "/real/inside'")
      r = assert(prepare_with(function(ctx)
        return { links = { [ctx.adapter_dir .. "/real"] = ctx.adapter_dir .. "/d" } }
      end))
      assert.are.same({ "launch: " .. dir .. "/real is a directory: not linked to " .. dir .. "/d" }, r.warnings)
      assert.is_true(is_dir(dir .. "/real/inside"))
    end)

    it("an adapter that installs keeps the asset key 'prefix' for its user prefix", function()
      local r, err = ferry.prepare { provider = "local", workspace = ws, remote_dir = remote, state = tmp .. "/s.json",
        adapter = { name = "mine", install = "true", hooks = {} }, assets = { prefix = home } }
      assert.is_nil(r)
      assert.are.equal("prepare: asset key 'prefix' is taken: adapter mine installs into " .. adapter_dir("mine")
        .. "/prefix", err)
    end)
  end)
end)
