-- The built-in adapters (scripts/adapters/*.lua): their shape, the assets each finds on a host, the hooks
-- (Codex auth copy-back, Claude MCP config), and FERRY_PATH overriding a built-in.
local ferry = require "ferry"
local core = require "ferry.core"
local excludes = require "ferry.excludes"
local schema = require "ferry.schema"
local cjson = require "cjson"
local helpers = require "support.helpers"

local NAMES = { "claude", "codex", "gemini", "opencode", "cursor", "pi", "shell" }
local MODE_600 = tonumber("600", 8)

-- A built-in adapter as ferry loads it: the file's table with the schema's defaults filled in.
local function adapter(name)
  return schema.apply_defaults(schema.ADAPTER, dofile(helpers.root .. "/scripts/adapters/" .. name .. ".lua"), name)
end

local function mkdirs(path)
  assert(os.execute("mkdir -p '" .. path .. "'"))
end

-- A hook context on a fake host: HOME is `home`, the environment is exactly `env`.
local function make_ctx(home, env, fields)
  local logs = {}
  local ctx = {
    home = home,
    env = function(k) return env[k] end,
    workspace = home .. "/workspace",
    logs = logs,
    log = function(level, msg) logs[#logs + 1] = level .. ": " .. msg end,
  }
  for k, v in pairs(fields or {}) do ctx[k] = v end
  return ctx
end

local function mode_of(path)
  return core.fs_lstat(path).mode & 511
end

describe("adapters", function()
  local root
  before_each(function() root = helpers.tmpdir() end)
  after_each(function() helpers.rmtree(root) end)

  describe("shape", function()
    for _, name in ipairs(NAMES) do
      it(name .. " passes the adapter schema", function()
        local path = helpers.root .. "/scripts/adapters/" .. name .. ".lua"
        assert.are.same({}, schema.check_adapter(dofile(path), path, helpers.read_file(path)))
        local a = adapter(name)
        assert.are.equal(name, a.name)
        assert.is_true(a.detect == nil or a.detect:match("^[%w._-]+$") ~= nil)
        assert.are.same({}, a.assets(make_ctx(root, {}))) -- nothing on an empty host
      end)
    end

    it("installs and detects each agent as documented", function()
      local want = {
        claude = { "claude", "@anthropic-ai/claude-code" },
        codex = { "codex", "@openai/codex" },
        gemini = { "gemini", "@google/gemini-cli" },
        pi = { "pi", "@mariozechner/pi-coding-agent" },
        opencode = { "opencode", "opencode-ai" },
      }
      for name, w in pairs(want) do
        local a = adapter(name)
        assert.are.same(w, { a.detect, a.npm })
      end
      for _, name in ipairs { "claude", "codex", "gemini", "pi" } do assert.is_nil(adapter(name).install) end
      -- vendor scripts: downloaded to a file first, so that a failed download fails the install
      assert.truthy(adapter("opencode").install:find("curl -fsSL https://opencode.ai/install -o \"$ferry_s\"", 1, true))
      assert.are.equal("agent", adapter("cursor").detect)
      assert.is_nil(adapter("cursor").npm)
      assert.truthy(adapter("cursor").install:find("curl -fsSL https://cursor.com/install -o \"$ferry_s\"", 1, true))
      local shell = adapter("shell")
      assert.is_nil(shell.detect)
      assert.is_nil(shell.install)
    end)

    it("install scripts are valid sh", function()
      for _, name in ipairs(NAMES) do
        local install = adapter(name).install
        if install then
          local res = assert(ferry.proc.run { argv = { "dash", "-n", "-c", install } })
          assert.are.equal(0, res.code, name .. ": " .. res.stderr)
        end
      end
    end)

    it("keep each agent's sign-in inside a workspace out of the sync", function()
      local cases = {
        claude = { "home/u/.claude/.credentials.json", "home/u/.claude.json" },
        codex = { "home/u/.codex/auth.json" },
        gemini = { "h/.gemini/oauth_creds.json" },
        pi = { "h/.pi/agent/auth.json" },
      }
      for name, paths in pairs(cases) do
        local m = excludes.compile(adapter(name).excludes)
        for _, p in ipairs(paths) do assert.is_true(m(p, false), name .. " should exclude " .. p) end
        assert.is_false(m("src/main.c", false))
        assert.is_false(m("home/u/.claude/settings.json", false))
      end
    end)
  end)

  describe("assets", function()
    it("claude: the skills dir of ~/.claude, or of CLAUDE_CONFIG_DIR", function()
      mkdirs(root .. "/.claude/skills/review")
      local a = adapter("claude")
      assert.are.same({ skills = { dir = root .. "/.claude/skills", follow_symlinks = true, exclude = {} } },
        a.assets(make_ctx(root, {})))
      mkdirs(root .. "/cfg/skills")
      assert.are.same({ skills = { dir = root .. "/cfg/skills", follow_symlinks = true, exclude = {} } },
        a.assets(make_ctx(root, { CLAUDE_CONFIG_DIR = root .. "/cfg" })))
      assert.are.same({}, a.assets(make_ctx(root, { CLAUDE_CONFIG_DIR = root .. "/none" })))
    end)

    it("codex: CODEX_HOME over ~/.codex, without tmp, .tmp, logs and sessions", function()
      local a = adapter("codex")
      mkdirs(root .. "/.codex")
      local got = a.assets(make_ctx(root, {}))
      assert.are.equal(root .. "/.codex", got.home.dir)
      assert.is_false(got.home.follow_symlinks)
      mkdirs(root .. "/ch")
      got = a.assets(make_ctx(root, { CODEX_HOME = root .. "/ch" }))
      assert.are.same({ "home" }, (function()
        local keys = {}
        for k in pairs(got) do keys[#keys + 1] = k end
        return keys
      end)())
      assert.are.equal(root .. "/ch", got.home.dir)
      local m = excludes.compile(got.home.exclude)
      for _, p in ipairs { "tmp", ".tmp", "sessions", "log", "archived_sessions" } do
        assert.is_true(m(p, true), p)
      end
      for _, p in ipairs { "auth.json", "config.toml", "AGENTS.md", "skills/x/tmp/a" } do
        assert.is_false(m(p, false), p)
      end
      assert.are.same({}, a.assets(make_ctx(root, { CODEX_HOME = root .. "/missing" })))
      assert.are.same(root .. "/.codex", a.assets(make_ctx(root, { CODEX_HOME = "" })).home.dir)
    end)

    it("a file or a dangling link is not an asset dir; a link to a dir is", function()
      helpers.write_file(root .. "/.codex", "not a dir")
      assert.are.same({}, adapter("codex").assets(make_ctx(root, {})))
      assert(core.fs_safe_symlink(root, ".gemini", root .. "/nowhere"))
      assert.are.same({}, adapter("gemini").assets(make_ctx(root, {})))
      mkdirs(root .. "/real-pi")
      mkdirs(root .. "/.pi")
      assert(core.fs_safe_symlink(root, ".pi/agent", root .. "/real-pi"))
      assert.are.equal(root .. "/.pi/agent", adapter("pi").assets(make_ctx(root, {})).agent.dir)
    end)

    it("gemini: ~/.gemini without its scratch space", function()
      mkdirs(root .. "/.gemini")
      local got = adapter("gemini").assets(make_ctx(root, {}))
      assert.are.equal(root .. "/.gemini", got.home.dir)
      local m = excludes.compile(got.home.exclude)
      assert.is_true(m("tmp", true))
      assert.is_false(m("settings.json", false))
    end)

    it("opencode: the XDG config and data dirs, each only when present", function()
      local a = adapter("opencode")
      mkdirs(root .. "/.config/opencode")
      local got = a.assets(make_ctx(root, {}))
      assert.are.equal(root .. "/.config/opencode", got.config.dir)
      assert.is_nil(got.data)
      mkdirs(root .. "/xdg-data/opencode")
      mkdirs(root .. "/xdg-config/opencode")
      got = a.assets(make_ctx(root, { XDG_DATA_HOME = root .. "/xdg-data", XDG_CONFIG_HOME = root .. "/xdg-config" }))
      assert.are.equal(root .. "/xdg-config/opencode", got.config.dir)
      assert.are.equal(root .. "/xdg-data/opencode", got.data.dir)
      local m = excludes.compile(got.data.exclude)
      assert.is_false(m("auth.json", false))
      assert.is_true(m("storage", true))
    end)

    it("cursor: only what the CLI reads from ~/.cursor, and the CLI config dir", function()
      mkdirs(root .. "/.cursor/extensions/big")
      mkdirs(root .. "/.config/cursor")
      local got = adapter("cursor").assets(make_ctx(root, {}))
      assert.are.equal(root .. "/.cursor", got.home.dir)
      assert.are.equal(root .. "/.config/cursor", got.config.dir)
      local m = excludes.compile(got.home.exclude)
      for _, p in ipairs { "mcp.json", "cli-config.json", "skills/a/SKILL.md", "rules/x.mdc" } do
        assert.is_false(m(p, false), p)
      end
      assert.is_true(m("extensions", true))
      assert.is_true(m("extensions/big/a.js", false))
      assert.is_true(m("ide_state.json", false))
    end)

    it("pi: PI_CODING_AGENT_DIR over ~/.pi/agent, without sessions", function()
      mkdirs(root .. "/.pi/agent")
      local a = adapter("pi")
      assert.are.equal(root .. "/.pi/agent", a.assets(make_ctx(root, {})).agent.dir)
      mkdirs(root .. "/pa")
      local got = a.assets(make_ctx(root, { PI_CODING_AGENT_DIR = root .. "/pa" }))
      assert.are.equal(root .. "/pa", got.agent.dir)
      assert.is_true(excludes.compile(got.agent.exclude)("sessions", true))
    end)

    it("shell: none", function()
      mkdirs(root .. "/.codex")
      assert.are.same({}, adapter("shell").assets(make_ctx(root, {})))
    end)
  end)

  describe("codex auth copy-back", function()
    local sb, host_home, sandbox_home, hook

    local function auth(account, refreshed, extra)
      local doc = {
        OPENAI_API_KEY = cjson.null,
        tokens = { id_token = "idt-secret", access_token = "at-secret", refresh_token = "rt-secret-" .. refreshed,
          account_id = account },
        last_refresh = refreshed,
      }
      for k, v in pairs(extra or {}) do doc[k] = v end
      return cjson.encode(doc)
    end

    local function run_hook(fields)
      local ctx = make_ctx(root, { CODEX_HOME = host_home },
        { sb = sb, asset_dirs = { home = sandbox_home }, state = {}, result = {}, copy_back_credentials = true })
      for k, v in pairs(fields or {}) do ctx[k] = v end
      local status, reason = hook(ctx)
      for _, line in ipairs(ctx.logs) do
        assert.is_nil(line:find("secret", 1, true), "a token reached the log: " .. line)
        assert.is_nil(line:find("acct-", 1, true), "an account id reached the log: " .. line)
      end
      return status, reason, ctx.logs
    end

    before_each(function()
      sb = assert(ferry.open("local"))
      host_home = root .. "/host-codex"
      sandbox_home = root .. "/sandbox/.ferry-runtime/codex/home"
      mkdirs(host_home)
      mkdirs(sandbox_home)
      hook = adapter("codex").hooks.after_restore
    end)
    after_each(function() sb:close() end)

    local function host_auth() return helpers.read_file(host_home .. "/auth.json") end

    it("copies a newer refresh of the same account back, atomically and 0600", function()
      helpers.write_file(host_home .. "/auth.json", auth("acct-1", "2025-03-01T10:00:00Z"))
      assert(os.execute("chmod 644 '" .. host_home .. "/auth.json'"))
      local newer = auth("acct-1", "2025-03-01T10:00:01Z")
      helpers.write_file(sandbox_home .. "/auth.json", newer)
      assert.are.equal("copied", (run_hook()))
      assert.are.equal(newer, host_auth())
      assert.are.equal(MODE_600, mode_of(host_home .. "/auth.json"))
      for _, name in ipairs(core.fs_readdir(host_home)) do
        assert.is_nil(name:find("tmp", 1, true), "temp file left behind: " .. name)
      end
    end)

    it("keeps the host copy when the sandbox's is older or as new", function()
      local current = auth("acct-1", "2025-03-01T10:00:00Z")
      helpers.write_file(host_home .. "/auth.json", current)
      for _, stamp in ipairs { "2025-03-01T09:59:59Z", "2025-03-01T10:00:00Z", "2025-03-01T10:00:00.000Z" } do
        local theirs = auth("acct-1", stamp)
        helpers.write_file(sandbox_home .. "/auth.json", theirs)
        -- the same bytes are nothing to decide; the others are refused
        assert.are.equal(theirs == current and "none" or "refused", (run_hook()))
        assert.are.equal(current, host_auth())
      end
    end)

    it("compares instants, not strings: offsets and nanoseconds", function()
      -- 11:00+02:00 is 09:00Z: older than 10:30Z although it sorts after it as text
      helpers.write_file(host_home .. "/auth.json", auth("acct-1", "2025-03-01T11:00:00+02:00"))
      local newer = auth("acct-1", "2025-03-01T10:30:00Z")
      helpers.write_file(sandbox_home .. "/auth.json", newer)
      assert.are.equal("copied", (run_hook()))
      assert.are.equal(newer, host_auth())
      -- one nanosecond later wins; one earlier does not (a double could not tell them apart)
      helpers.write_file(host_home .. "/auth.json", auth("acct-1", "2025-03-01T10:00:00.123456789Z"))
      helpers.write_file(sandbox_home .. "/auth.json", auth("acct-1", "2025-03-01T10:00:00.123456788Z"))
      assert.are.equal("refused", (run_hook()))
      newer = auth("acct-1", "2025-03-01T10:00:00.12345679Z")
      helpers.write_file(sandbox_home .. "/auth.json", newer)
      assert.are.equal("copied", (run_hook()))
      assert.are.equal(newer, host_auth())
    end)

    it("never copies another account's credential", function()
      local current = auth("acct-1", "2025-03-01T10:00:00Z")
      helpers.write_file(host_home .. "/auth.json", current)
      helpers.write_file(sandbox_home .. "/auth.json", auth("acct-2", "2026-01-01T00:00:00Z"))
      local status, reason = run_hook()
      assert.are.same({ "refused", "different account" }, { status, reason })
      assert.are.equal(current, host_auth())
    end)

    it("writes nothing when either side is malformed or incomplete, and raises no error", function()
      local current = auth("acct-1", "2025-03-01T10:00:00Z")
      helpers.write_file(host_home .. "/auth.json", current)
      local bad = {
        "{not json",
        "",
        "[1,2]",
        "null",
        cjson.encode({ tokens = { account_id = "acct-1", refresh_token = "rt-secret" } }), -- no last_refresh
        auth("acct-1", "yesterday"),
        auth("acct-1", "2026-13-01T00:00:00Z"),
        auth("", "2026-01-01T00:00:00Z"),
        cjson.encode({ tokens = { account_id = "acct-1" }, last_refresh = "2026-01-01T00:00:00Z" }),
        auth("acct-1", "2026-01-01T00:00:00Z", { OPENAI_API_KEY = "sk-secret" }),
        auth("acct-1", "2026-01-01T00:00:00Z", { tokens = "secret" }),
      }
      for _, text in ipairs(bad) do
        helpers.write_file(sandbox_home .. "/auth.json", text)
        local status, _, logs = run_hook()
        assert.are.equal("refused", status, text)
        assert.are.equal(current, host_auth())
        assert.truthy(logs[1] and logs[1]:find("^warn: codex: sandbox auth.json is not a usable"), text)
      end
      -- a malformed host copy is never replaced either
      helpers.write_file(host_home .. "/auth.json", "{broken")
      helpers.write_file(sandbox_home .. "/auth.json", auth("acct-1", "2026-01-01T00:00:00Z"))
      assert.are.equal("refused", (run_hook()))
      assert.are.equal("{broken", host_auth())
    end)

    it("does nothing when a file is missing", function()
      helpers.write_file(sandbox_home .. "/auth.json", auth("acct-1", "2026-01-01T00:00:00Z"))
      local status, _, logs = run_hook() -- no host auth.json
      assert.are.equal("refused", status)
      assert.is_nil(host_auth())
      assert.are.same({}, core.fs_readdir(host_home))
      assert.are.same({}, (function()
        local warns = {}
        for _, l in ipairs(logs) do if l:find("^warn") then warns[#warns + 1] = l end end
        return warns
      end)())

      local current = auth("acct-1", "2025-03-01T10:00:00Z")
      helpers.write_file(host_home .. "/auth.json", current)
      os.remove(sandbox_home .. "/auth.json")
      status, _, logs = run_hook() -- no sandbox auth.json: quietly nothing
      assert.are.equal("none", status)
      assert.are.equal(current, host_auth())
      assert.are.same({}, logs)

      status = run_hook({ asset_dirs = {} }) -- the home asset was never copied
      assert.are.equal("none", status)
      assert.are.equal(current, host_auth())
    end)

    it("refuses an oversized sandbox file without reading it", function()
      local current = auth("acct-1", "2025-03-01T10:00:00Z")
      helpers.write_file(host_home .. "/auth.json", current)
      local huge = auth("acct-1", "2026-01-01T00:00:00Z", { pad = string.rep("x", 2 * 1024 * 1024) })
      helpers.write_file(sandbox_home .. "/auth.json", huge)
      local status, _, logs = run_hook()
      assert.are.equal("refused", status)
      assert.are.equal(current, host_auth())
      assert.truthy(logs[1]:find("over the 1048576 byte limit", 1, true))
    end)

    it("updates the target of a symlinked host auth.json and keeps the link", function()
      mkdirs(root .. "/shared")
      helpers.write_file(root .. "/shared/auth.json", auth("acct-1", "2025-03-01T10:00:00Z"))
      assert(core.fs_safe_symlink(host_home, "auth.json", "../shared/auth.json"))
      local newer = auth("acct-1", "2025-03-02T00:00:00Z")
      helpers.write_file(sandbox_home .. "/auth.json", newer)
      assert.are.equal("copied", (run_hook()))
      assert.are.equal("symlink", core.fs_lstat(host_home .. "/auth.json").kind)
      assert.are.equal(newer, helpers.read_file(root .. "/shared/auth.json"))
      assert.are.equal(MODE_600, mode_of(root .. "/shared/auth.json"))
    end)

    it("waits for a concurrent copy-back holding the lock", function()
      helpers.write_file(host_home .. "/auth.json", auth("acct-1", "2025-03-01T10:00:00Z"))
      local newer = auth("acct-1", "2025-03-02T00:00:00Z")
      helpers.write_file(sandbox_home .. "/auth.json", newer)
      local lock = assert(core.fs_lock(host_home .. "/.auth.json.ferry-lock"))
      local status
      local t = ferry.spawn(function() status = run_hook() end)
      ferry.spawn(function()
        ferry.sleep(200)
        assert.is_nil(status) -- still waiting
        lock:unlock()
      end)
      ferry.wait(t)
      assert.are.equal("copied", status)
      assert.are.equal(newer, host_auth())
    end)
  end)

  describe("claude MCP config", function()
    local sb, remote, dir, hook

    before_each(function()
      sb = assert(ferry.open("local"))
      remote = root .. "/remote"
      dir = remote .. "/.ferry-runtime/claude" -- CLAUDE_CONFIG_DIR of the launch
      hook = adapter("claude").hooks.after_sync
    end)
    after_each(function() sb:close() end)

    local function run(env)
      local ctx = make_ctx(root, env or {}, { sb = sb, remote_dir = remote, runtime_dir = remote .. "/.ferry-runtime",
        asset_dirs = {} })
      return hook(ctx), ctx
    end

    it("writes the user's and this workspace's MCP servers into .claude.json in the config dir, 0600", function()
      helpers.write_file(root .. "/.claude.json", cjson.encode({
        oauthAccount = { emailAddress = "me@example.com" },
        mcpServers = {
          docs = { type = "stdio", command = "docs-mcp", args = {}, env = { TOKEN = "t" } },
          web = { type = "http", url = "https://user.example/mcp" },
        },
        projects = {
          [root .. "/workspace"] = { mcpServers = { web = { type = "http", url = "https://local.example/mcp" } } },
          ["/elsewhere"] = { mcpServers = { other = { type = "stdio", command = "x" } } },
        },
      }))
      local path, ctx = run()
      assert.are.equal(dir .. "/.claude.json", path)
      assert.are.equal(MODE_600, mode_of(path))
      local doc = cjson.decode(helpers.read_file(path))
      assert.are.same({ "mcpServers" }, (function()
        local keys = {}
        for k in pairs(doc) do keys[#keys + 1] = k end
        return keys
      end)())
      assert.are.same({ type = "stdio", command = "docs-mcp", env = { TOKEN = "t" } }, doc.mcpServers.docs)
      assert.are.equal("https://local.example/mcp", doc.mcpServers.web.url)
      assert.is_nil(doc.mcpServers.other)
      assert.are.same({}, ctx.asset_dirs)
    end)

    it("reads .claude.json from CLAUDE_CONFIG_DIR when it is set", function()
      mkdirs(root .. "/cfg")
      helpers.write_file(root .. "/cfg/.claude.json", cjson.encode({ mcpServers = { a = { command = "a" } } }))
      helpers.write_file(root .. "/.claude.json", cjson.encode({ mcpServers = { b = { command = "b" } } }))
      local path = run({ CLAUDE_CONFIG_DIR = root .. "/cfg" })
      assert.are.same({ a = { command = "a" } }, cjson.decode(helpers.read_file(path)).mcpServers)
    end)

    it("writes nothing without servers, drops an earlier prepare's, and only warns on a malformed file", function()
      assert.is_nil((run()))
      helpers.write_file(root .. "/.claude.json", cjson.encode({ mcpServers = {} }))
      assert.is_nil((run()))
      assert.is_nil(core.fs_lstat(dir))
      mkdirs(dir)
      helpers.write_file(dir .. "/.claude.json", '{"userID": "u", "mcpServers": {"gone": {}}, "tips": []}')
      assert.are.equal(dir .. "/.claude.json", (run()))
      assert.are.equal('{"userID": "u", "tips": []}', helpers.read_file(dir .. "/.claude.json"))
      helpers.write_file(root .. "/.claude.json", "{oops")
      local path, ctx = run()
      assert.is_nil(path)
      assert.truthy(ctx.logs[1]:find("^warn: claude: .*not a JSON object"))
    end)
  end)

  describe("the example in scripts/README.md", function()
    local function example_source()
      local text = assert(helpers.read_file(helpers.root .. "/scripts/README.md"))
      local section = assert(text:match("\n## A complete example\n(.-)\n## "))
      return assert(section:match("```lua\n(.-)```"))
    end

    it("is a working adapter", function()
      local a = assert(load(example_source(), "@README example", "t"))("qwen")
      assert.are.equal("qwen", a.name)
      assert.are.same({ "qwen", "@qwen-code/qwen-code" }, { a.detect, a.npm })
      excludes.compile(a.excludes)
      local ctx = make_ctx(root, {})
      assert.are.same({}, a.assets(ctx))
      a.hooks.before_sync(ctx)
      assert.truthy(ctx.logs[1]:find("^warn: qwen: no ~/.qwen"))
      mkdirs(root .. "/.qwen")
      assert.are.equal(root .. "/.qwen", a.assets(ctx).home.dir)

      local sb = assert(ferry.open("local"))
      local remote_home = root .. "/remote/.ferry-runtime/qwen/home"
      mkdirs(remote_home .. "/tmp")
      helpers.write_file(remote_home .. "/tmp/last-session.log", "session\n")
      ctx = make_ctx(root, {}, { sb = sb, asset_dirs = { home = remote_home } })
      a.hooks.after_restore(ctx)
      sb:close()
      assert.are.equal("session\n", helpers.read_file(root .. "/workspace.qwen-session.log"))
      assert.are.same({}, ctx.logs)
    end)
  end)

  describe("the provider example in scripts/README.md", function()
    it("opens and builds an argv", function()
      local text = assert(helpers.read_file(helpers.root .. "/scripts/README.md"))
      local section = assert(text:match("\n## Writing a provider\n(.*)$"))
      local m = assert(load(assert(section:match("```lua\n(.-)```")), "@README provider", "t"))("ssh")
      local p, err, code = m.open("", {})
      assert.are.same({ nil, "EINVAL" }, { p, code })
      assert.truthy(err:find("expected a host", 1, true))
      p = assert(m.open("box", {}))
      assert.are.same({ stdin = true, binary = true, costly = true }, p.caps)
      local argv = p:command("echo hi")
      assert.are.same({ "ssh", "-T", "-o", "BatchMode=yes", "box", "cd / && sh -c 'echo hi'" }, argv)
    end)
  end)

  describe("FERRY_PATH", function()
    -- policy reads the real environment, so each case runs in a child process.
    local function loaded_from(env, name)
      local script = table.concat({
        "package.path = 'scripts/?.lua;scripts/?/init.lua;' .. package.path",
        "package.cpath = 'build/lua/?.so;' .. package.cpath",
        "local policy = require 'ferry.policy'",
        "local where = assert(policy.find('adapters', '" .. name .. "'))",
        "local a = assert(policy.load('adapters', '" .. name .. "'))",
        "io.write(a.name, ' ', where)",
      }, "\n")
      local full_env = { FERRY_PATH = "", XDG_CONFIG_HOME = root .. "/no-config" }
      for k, v in pairs(env) do full_env[k] = v end
      local res = assert(ferry.proc.run { argv = { "lua5.4", "-e", script }, env = full_env, cwd = helpers.root })
      assert.are.equal(0, res.code, res.stderr)
      return res.stdout
    end

    local function write_adapter(dir, file, name)
      mkdirs(dir .. "/adapters")
      helpers.write_file(dir .. "/adapters/" .. file .. ".lua", table.concat({
        "return { name = '" .. name .. "', detect = nil, install = nil, excludes = {}, preserve = {},",
        "  assets = function() return {} end, hooks = {} }",
      }, "\n"))
    end

    it("loads the built-in when nothing overrides it", function()
      local got = loaded_from({}, "codex")
      assert.truthy(got:match("^codex %S*adapters/codex%.lua$"), got)
      assert.is_nil(got:find(root, 1, true))
    end)

    it("an adapter in a FERRY_PATH dir wins over the built-in and over the user config dir", function()
      write_adapter(root .. "/first", "codex", "codex-first")
      write_adapter(root .. "/second", "codex", "codex-second")
      write_adapter(root .. "/xdg/ferry", "codex", "codex-config")
      local env = { FERRY_PATH = root .. "/missing;" .. root .. "/first;" .. root .. "/second",
        XDG_CONFIG_HOME = root .. "/xdg" }
      assert.are.equal("codex-first " .. root .. "/first/adapters/codex.lua", loaded_from(env, "codex"))
      env.FERRY_PATH = nil
      assert.are.equal("codex-config " .. root .. "/xdg/ferry/adapters/codex.lua", loaded_from(env, "codex"))
    end)

    it("adds an adapter that is not built in", function()
      write_adapter(root .. "/mine", "aider", "aider")
      assert.are.equal("aider " .. root .. "/mine/adapters/aider.lua",
        loaded_from({ FERRY_PATH = root .. "/mine" }, "aider"))
    end)
  end)
end)
