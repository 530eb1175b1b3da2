-- Installing an adapter's CLI where its agent runs (README "Installing the agent"): npm's global prefix when
-- the sandbox user can write it, else the user prefix <runtime>/<adapter>/prefix, which is first on PATH for
-- the detect probe and in the launch; npm's own error line in the warning; the adapter's own install when
-- npm or node is missing; vendor scripts that fail when their download fails; the install's output live.
-- A fake npm (spec/agents/fake-npm) stands in for the registry: `make test-agents` uses the real one.
local ferry = require "ferry"
local core = require "ferry.core"
local helpers = require "support.helpers"
local progress = require "ferry.progress"
local sshd = require "support.sshd"
local util = require "ferry.adapter_util"

local sh = helpers.sh
local FAKE_NPM = helpers.root .. "/spec/agents/fake-npm"

-- A dir everyone can read holding the fake npm as `npm`, its `calls` log writable by everyone (the ssh test
-- user runs it); `global` is what its `npm config get prefix` prints.
local function fake_npm(tmp, global, mode)
  local dir = tmp .. "/fakebin"
  sh("mkdir -p '" .. dir .. "' && cp '" .. FAKE_NPM .. "' '" .. dir .. "/npm' && chmod 755 '" .. dir .. "' '"
    .. dir .. "/npm' && : > '" .. dir .. "/calls' && chmod 666 '" .. dir .. "/calls'")
  helpers.write_file(dir .. "/global", global .. "\n")
  if mode then helpers.write_file(dir .. "/mode", mode) end
  return dir
end

local function calls(dir)
  local out = {}
  for line in (helpers.read_file(dir .. "/calls") or ""):gmatch("[^\n]+") do
    out[#out + 1] = line:match("^npm (config get %S+)") or line:match("^npm (%S+ %S+)")
  end
  return out
end

-- A dir of links to everything in /usr/bin but `without` (a PATH where npm, or node, is missing).
local function path_without(tmp, without)
  local dir = tmp .. "/bin-" .. table.concat(without, "-")
  sh("mkdir -p '" .. dir .. "'")
  sh("for f in /usr/bin/*; do case ${f##*/} in " .. table.concat(without, "|") .. ") ;; *) ln -s \"$f\" '" .. dir
    .. "/' ;; esac; done")
  return dir
end

local function adapter(fields)
  local a = { name = "fake", detect = "fakeagent", npm = "@spec/fakeagent", hooks = {} }
  for k, v in pairs(fields or {}) do a[k] = v end
  return a
end

local function run_ferry(args, env)
  local argv = { helpers.ferry_bin }
  table.move(args, 1, #args, 2, argv)
  return assert(ferry.proc.run { argv = argv, env = env, timeout_ms = 60000 })
end

describe("install", function()
  local tmp, ws
  before_each(function()
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    sh("mkdir -p '" .. ws .. "' && echo hi > '" .. ws .. "/a.txt'")
  end)
  after_each(function() helpers.rmtree(tmp) end)

  local function prepare(provider, a, extra)
    local opts = { provider = provider, workspace = ws, remote_dir = tmp .. "/remote", state = tmp .. "/state.json",
      adapter = a }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return ferry.prepare(opts)
  end

  describe("with npm", function()
    it("goes to the user prefix when npm -g fails with EACCES; the prefix is on PATH; no second install",
      function()
        local global = tmp .. "/global"
        sh("mkdir -p '" .. global .. "/lib/node_modules'") -- writable: -g is tried first
        local npm = fake_npm(tmp, global)
        local provider = "cmd:env PATH=" .. npm .. ":/usr/bin:/bin"
        local r = assert(prepare(provider, adapter()))
        local prefix = tmp .. "/remote/.ferry-runtime/fake/prefix"
        assert.are.same({ "installed", true, nil, prefix },
          { r.install_status, r.installed, r.install_warning, r.install_prefix })
        assert.are.same({ "config get prefix", "install -g", "config get globalconfig", "install --prefix" },
          calls(npm))
        -- npm's own global config named: --prefix alone would move it, and its CA file, to <prefix>/etc
        assert.truthy(helpers.read_file(npm .. "/calls"):find("npm install --prefix " .. prefix .. " --globalconfig "
          .. npm .. "/npmrc ", 1, true))
        assert.are.same({ prefix .. "/node_modules/.bin", prefix .. "/bin" }, r.launch.path)
        assert.are.same({ "fakeagent" }, r.launch.command)
        assert.truthy(core.fs_stat(prefix .. "/node_modules/.bin/fakeagent"))
        -- the second prepare's detect probe finds it on the prefix's PATH: no install
        r = assert(prepare(provider, adapter()))
        assert.are.same({ "present", nil }, { r.install_status, r.installed })
        assert.are.equal(4, #calls(npm))
      end)

    it("over ssh as a user who cannot write the global prefix: the user prefix, found the next time", function()
      local npm = fake_npm(tmp, "/usr")
      local server = sshd.start { config = { "SetEnv PATH=" .. npm .. ":/usr/bin:/bin" } }
      finally(function() server:stop() end)
      sh("chmod 1777 '" .. tmp .. "'") -- the test user makes the remote dir
      local provider = server:url()
      local r = assert(prepare(provider, adapter()))
      local prefix = tmp .. "/remote/.ferry-runtime/fake/prefix"
      assert.are.same({ "installed", prefix }, { r.install_status, r.install_prefix })
      -- straight to the prefix: /usr is not the test user's to write
      assert.are.same({ "config get prefix", "config get globalconfig", "install --prefix" }, calls(npm))
      local st = core.fs_stat(prefix .. "/node_modules/.bin/fakeagent")
      assert.are_not.equal(0, st.uid)
      local res = run_ferry { "exec", "--state", tmp .. "/state.json", "--", "sh", "-c", "fakeagent; id -un; pwd" }
      assert.are.same({ 0, "fakeagent 1.0.0-fake\n" .. server.user .. "\n" .. tmp .. "/remote\n", "" },
        { res.code, res.stdout, res.stderr })
      r = assert(prepare(provider, adapter()))
      assert.are.equal("present", r.install_status)
      assert.are.equal(3, #calls(npm))
    end)

    local function failing(mode)
      local npm = fake_npm(tmp, "/nonexistent", mode)
      local r = assert(prepare("cmd:env PATH=" .. npm .. ":/usr/bin:/bin", adapter()))
      assert.are.same({ "failed", false }, { r.install_status, r.installed })
      return r.install_warning, r
    end

    it("says the sandbox cannot reach the registry, with npm's error line", function()
      assert.are.equal("install: the sandbox cannot reach the npm registry (ECONNREFUSED): npm error FetchError: "
        .. "request to http://127.0.0.1:9/@spec/fakeagent failed, reason: connect ECONNREFUSED 127.0.0.1:9",
        failing("econnrefused"))
      assert.are.equal("install: the sandbox cannot reach the npm registry (EAI_AGAIN): npm error request to "
        .. "https://registry.npmjs.org/@spec/fakeagent failed, reason: getaddrinfo EAI_AGAIN registry.npmjs.org",
        failing("eai_again"))
    end)

    it("quotes npm's error line for other failures, and the warning is in the result's warnings", function()
      local warning, r = failing("e404")
      assert.are.equal("install: npm install @spec/fakeagent failed (E404): npm error 404 Not Found - GET "
        .. "https://registry.npmjs.org/@spec/fakeagent - Not found", warning)
      assert.are.same({}, r.warnings) -- the install warning is its own field
    end)

    it("says npm is not installed, or node", function()
      local no_npm = path_without(tmp, { "npm", "npx" })
      local r = assert(prepare("cmd:env PATH=" .. no_npm, adapter()))
      assert.are.same({ "failed", "install: npm is not installed in the sandbox; cannot install @spec/fakeagent" },
        { r.install_status, r.install_warning })
      local npm = fake_npm(tmp, "/usr")
      local no_node = path_without(tmp, { "node", "nodejs" })
      r = assert(prepare("cmd:env PATH=" .. npm .. ":" .. no_node, adapter()))
      assert.are.equal("install: node is not installed in the sandbox (npm needs it); cannot install "
        .. "@spec/fakeagent", r.install_warning)
      assert.are.same({}, calls(npm))
    end)

    it("runs the adapter's own install without npm, with FERRY_PREFIX/bin on PATH", function()
      local no_npm = path_without(tmp, { "npm", "npx" })
      local own = 'mkdir -p "$FERRY_PREFIX/bin" && printf \'#!/bin/sh\\necho own\\n\' > "$FERRY_PREFIX/bin/fakeagent"'
        .. ' && chmod 755 "$FERRY_PREFIX/bin/fakeagent"'
      local events = {}
      local p = { phase = function() end, advance = function() end, status = function() end, tick = function() end,
        event = function(_, e) events[#events + 1] = e end }
      local r = assert(prepare("cmd:env PATH=" .. no_npm, adapter { install = own }, { progress = p }))
      assert.are.same({ "installed", nil }, { r.install_status, r.install_warning })
      local info = {}
      for _, e in ipairs(events) do if e.level then info[#info + 1] = e.level .. ": " .. e.message end end
      assert.are.same({ "info: install: npm is not installed in the sandbox; installed with the adapter's own "
        .. "install" }, info)
      local failed = assert(prepare("cmd:env PATH=" .. no_npm, adapter { detect = "fakeagent2", install = "exit 3" }))
      assert.are.equal("install: npm is not installed in the sandbox; the adapter's own install ran instead and "
        .. "exited with code 3", failed.install_warning)
    end)

    it("tells a bwrap sandbox without network to add net=1", function()
      local box = tmp .. "/box"
      -- the fake npm in the user prefix's bin dir: first on PATH inside the sandbox
      local bin = box .. "/workspace/.ferry-runtime/fake/prefix/bin"
      sh("mkdir -p '" .. bin .. "' && cp '" .. FAKE_NPM .. "' '" .. bin .. "/npm' && echo econnrefused > '" .. bin
        .. "/mode'")
      local r = assert(ferry.prepare { provider = "bwrap:" .. box, workspace = ws, adapter = adapter(),
        state = tmp .. "/state.json" })
      assert.are.equal("install: the sandbox cannot reach the npm registry (ECONNREFUSED): npm error FetchError: "
        .. "request to http://127.0.0.1:9/@spec/fakeagent failed, reason: connect ECONNREFUSED 127.0.0.1:9 "
        .. "(bwrap:" .. box .. " has no network: add net=1 to its provider string)", r.install_warning)
    end)
  end)

  describe("a vendor script", function()
    local function script_adapter(url)
      return { name = "fake", detect = "fakeagent", hooks = {}, install = util.script_install(url, "sh",
        util.link_command("$HOME/.fakeagent/fakeagent", "fakeagent")) }
    end

    it("fails the install when its download fails (no pipe into sh)", function()
      local r = assert(prepare("local", script_adapter("file://" .. tmp .. "/missing.sh")))
      assert.are.same({ "failed", "install exited with code 1: curl: (37) Couldn't open file " .. tmp
        .. "/missing.sh | download of file://" .. tmp .. "/missing.sh failed" },
        { r.install_status, r.install_warning })
    end)

    it("runs the downloaded script and links its command into the user prefix", function()
      local home = tmp .. "/home"
      helpers.write_file(tmp .. "/install.sh", "mkdir -p \"$HOME/.fakeagent\" && printf '#!/bin/sh\\necho vendor\\n'"
        .. " > \"$HOME/.fakeagent/fakeagent\" && chmod 755 \"$HOME/.fakeagent/fakeagent\"\n")
      local r = assert(prepare("cmd:env HOME=" .. home, script_adapter("file://" .. tmp .. "/install.sh")))
      assert.are.same({ "installed", nil }, { r.install_status, r.install_prefix })
      local res = run_ferry { "exec", "--state", tmp .. "/state.json", "--", "fakeagent" }
      assert.are.same({ 0, "vendor\n" }, { res.code, res.stdout })
      assert.are.equal("present", assert(prepare("cmd:env HOME=" .. home,
        script_adapter("file://" .. tmp .. "/install.sh"))).install_status)
    end)
  end)

  describe("progress", function()
    -- A file-like sink recording each write with the time it came.
    local function sink()
      local s = { writes = {} }
      function s.write(_, ...)
        for _, part in ipairs { ... } do s.writes[#s.writes + 1] = { at = core.now_ms(), text = part } end
      end
      function s.flush() end
      function s.text()
        local t = {}
        for i, w in ipairs(s.writes) do t[i] = w.text end
        return table.concat(t)
      end
      return s
    end

    local function slow_prepare(p)
      local npm = fake_npm(tmp, "/nonexistent", "slow")
      return assert(prepare("cmd:env PATH=" .. npm .. ":/usr/bin:/bin", adapter(), { progress = p }))
    end

    it("sends each line of the install's output as an install event when it comes (--json)", function()
      local out = sink()
      slow_prepare(progress.new { json = true, out = out })
      local lines, done_at = {}, nil
      for _, w in ipairs(out.writes) do
        local line = w.text:match('^{"event":"install","phase":"install","line":"(.-)"}')
        if line then lines[#lines + 1] = { line = line, at = w.at } end
        if w.text:match('^{"event":"progress","phase":"install".*"done":true') then done_at = w.at end
      end
      assert.are.same({ "npm http fetch GET 200 https://registry.npmjs.org/@spec/fakeagent 12ms",
        "npm reify: timing reifyNode:node_modules/fakeagent",
        "npm warn install-scripts 1 package has install scripts not yet covered by allowScripts:",
        "added 1 package in 0.1s" }, (function()
          local t = {}
          for i, l in ipairs(lines) do t[i] = l.line end
          return t
        end)())
      assert.is_true(done_at - lines[1].at >= 2000, "the first line came at the end") -- slow: 2.5 s in all
    end)

    it("shows the last line and a timer that moves at least once a second on a terminal", function()
      local err = sink()
      slow_prepare(progress.new { tty = true, err = err, out = sink(), no_color = true })
      local text = err.text()
      assert.truthy(text:find("install   0:00  npm http fetch GET 200 https://registry.npmjs.org/@spec/f...", 1,
        true), text)
      assert.truthy(text:find("install   0:01  npm reify: timing reifyNode:node_modules/fakeagent", 1, true), text)
      assert.truthy(text:find("install   0:02  npm reify: timing reifyNode:node_modules/fakeagent", 1, true), text)
      -- redrawn while nothing was printed: no gap over a second between two redraws of the install line
      local last
      for _, w in ipairs(err.writes) do
        if w.text:find("^install ") then
          if last then assert.is_true(w.at - last <= 1000, "a gap of " .. (w.at - last) .. " ms") end
          last = w.at
        end
      end
    end)
  end)
end)
