-- make test-agents: the real agent CLIs from the npm registry, installed through their adapters as a host
-- application would (`ferry prepare -a NAME --json`), into (a) a bubblewrap sandbox with network
-- (bwrap:DIR?net=1) and (b) an ssh sandbox as an unprivileged user (a real sshd on 127.0.0.1 with the specs'
-- `ferrytest` user, spec/support/sshd.lua); then each CLI runs through `ferry exec --state FILE` with the
-- launch prepare returned: `<cli> --version`, and a command showing that the CLI found the assets of the
-- fake host home where it looks (`codex login status` says logged in with the fake auth.json of the codex
-- home; claude, gemini and opencode list the MCP server of the host's config; pi lists the models of its
-- sign-in), and a second prepare must find the CLI (no reinstall).
-- Prints each install's time. Not part of `make test`: it needs the npm registry (about 1.3 GB per sandbox).
--
--   build/ferry run spec/agents/real_clients.lua [ADAPTER...]      (default: claude codex gemini pi opencode)
package.path = "spec/?.lua;" .. package.path
local ferry = require "ferry"
local core = require "ferry.core"
local cjson = require "cjson"
local sshd = require "support.sshd"

local FERRY = (os.getenv("PWD") or ".") .. "/build/ferry"
local ADAPTERS = { "claude", "codex", "gemini", "pi", "opencode" }
local VERSION_COMMAND = { claude = "claude", codex = "codex", gemini = "gemini", pi = "pi", opencode = "opencode" }

-- What each CLI says, offline, once it has found what the host's config dir brought (main writes them): the
-- codex sign-in (on stderr), and the MCP servers or sign-in of the others.
local ASSET_CHECK = {
  codex = { argv = { "codex", "login", "status" }, expect = "Logged in using ChatGPT" },
  claude = { argv = { "claude", "mcp", "list" }, expect = "probe-claude: /bin/true" },
  gemini = { argv = { "gemini", "mcp", "list" }, expect = "probe-gemini: /bin/true" },
  opencode = { argv = { "opencode", "mcp", "list" }, expect = "probe-opencode" },
  pi = { argv = { "pi", "--list-models" }, expect = "anthropic" },
}

local function sh(script)
  local res = assert(ferry.proc.run { argv = { "sh", "-c", script }, timeout_ms = 120000 })
  assert(res.code == 0, script .. ": " .. res.stderr)
  return res.stdout
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function b64url(s)
  return (core.b64_encode(s):gsub("%+", "-"):gsub("/", "_"):gsub("=+$", ""))
end

-- A ChatGPT sign-in `codex login status` accepts (research: unsigned JWTs are enough).
local function fake_codex_auth()
  local jwt = b64url('{"alg":"none","typ":"JWT"}') .. "." .. b64url(cjson.encode {
    email = "fake@example.com", exp = 4102444800,
    ["https://api.openai.com/auth"] = { chatgpt_plan_type = "plus", chatgpt_account_id = "acct-fake",
      chatgpt_user_id = "user-fake" },
  }) .. ".sig"
  return cjson.encode { OPENAI_API_KEY = cjson.null, last_refresh = "2026-11-30T00:00:00Z",
    tokens = { id_token = jwt, access_token = jwt, refresh_token = "rt-fake", account_id = "acct-fake" } }
end

-- Run build/ferry; the host's environment but HOME (the fake host home: only the codex asset is there).
local function run_ferry(args, home, timeout_ms)
  local argv = { FERRY }
  table.move(args, 1, #args, 2, argv)
  return assert(ferry.proc.run { argv = argv, timeout_ms = timeout_ms or 900000,
    env = { HOME = home, CODEX_HOME = false, CLAUDE_CONFIG_DIR = false, XDG_CONFIG_HOME = false,
      XDG_DATA_HOME = false, PI_CODING_AGENT_DIR = false } })
end

-- prepare --json: the result object and the install phase's time (ms), from its "done" event.
local function prepare(provider, name, ws, remote_dir, state, home)
  local res = run_ferry({ "prepare", "-p", provider, "-a", name, "-w", ws, "-r", remote_dir, "--state", state,
    "--json" }, home)
  local result, install_ms
  for line in res.stdout:gmatch("[^\n]+") do
    local ok, ev = pcall(cjson.decode, line)
    if ok and ev.event == "progress" and ev.phase == "install" and ev.done then install_ms = ev.elapsed_ms end
    if ok and ev.event == "result" then result = ev end
  end
  if res.code ~= 0 or not result or not result.ok then
    return nil, "prepare failed (" .. res.code .. "): " .. res.stderr .. (result and tostring(result.error) or "")
  end
  return result, install_ms
end

local function first_line(text)
  return (text or ""):match("[^\n]*%S[^\n]*") or ""
end

-- One adapter in one sandbox: install, --version, the codex asset, and no reinstall. Returns a report row.
local function check(sandbox, provider, name, ws, remote_dir, tmp, home)
  local state = tmp .. "/" .. sandbox .. "-" .. name .. ".json"
  local row = { sandbox = sandbox, adapter = name, ok = false }
  local t0 = core.now_ms()
  local r, install_ms = prepare(provider, name, ws, remote_dir, state, home)
  row.prepare_s = (core.now_ms() - t0) / 1000
  if not r then
    row.detail = install_ms
    return row
  end
  row.install_s, row.status = (install_ms or 0) / 1000, r.install_status
  row.into = r.install_prefix or "npm's global prefix"
  if r.install_status ~= "installed" then
    row.detail = "install " .. tostring(r.install_status) .. ": " .. tostring(r.install_warning)
    return row
  end
  local res = run_ferry({ "exec", "--state", state, "--", VERSION_COMMAND[name], "--version" }, home, 120000)
  -- pi prints its version on stderr
  row.version = first_line(res.stdout) ~= "" and first_line(res.stdout) or first_line(res.stderr)
  if res.code ~= 0 then
    row.detail = "--version exited " .. res.code .. ": " .. first_line(res.stderr)
    return row
  end
  local seen = ASSET_CHECK[name]
  if seen then
    res = run_ferry({ "exec", "--state", state, "--", table.unpack(seen.argv) }, home, 120000)
    local said = res.stdout .. res.stderr
    local what = table.concat(seen.argv, " ")
    if res.code ~= 0 or not said:find(seen.expect, 1, true) then
      row.detail = what .. " exited " .. res.code .. " without '" .. seen.expect .. "': " .. said
      return row
    end
    row.asset = what .. ": " .. seen.expect
  end
  t0 = core.now_ms()
  local again = prepare(provider, name, ws, remote_dir, state, home)
  row.again_s = (core.now_ms() - t0) / 1000
  if not again or again.install_status ~= "present" then
    row.detail = "the second prepare did not find the CLI: " .. tostring(again and again.install_status)
    return row
  end
  row.ok = true
  return row
end

local function report(rows)
  io.write("\n", string.format("%-7s %-9s %-7s %9s %9s %9s  %s\n", "sandbox", "adapter", "result", "install",
    "prepare", "again", "version / detail"))
  local failed = 0
  for _, row in ipairs(rows) do
    if not row.ok then failed = failed + 1 end
    io.write(string.format("%-7s %-9s %-7s %8.1fs %8.1fs %8.1fs  %s%s\n", row.sandbox, row.adapter,
      row.ok and "ok" or "FAILED", row.install_s or 0, row.prepare_s or 0, row.again_s or 0, row.version or "",
      (row.asset and "; " .. row.asset or "") .. (row.detail and "  " .. row.detail or "")))
  end
  io.write(string.format("\n%d of %d checks passed\n", #rows - failed, #rows))
  return failed
end

local function main(names)
  local tmp = assert(core.fs_mkdtemp("/tmp/ferry-agents-"))
  sh("chmod 0755 '" .. tmp .. "'")
  local home, ws = tmp .. "/host-home", tmp .. "/workspace"
  sh("mkdir -p '" .. home .. "/.codex' '" .. home .. "/.gemini' '" .. home .. "/.pi/agent' '" .. home
    .. "/.config/opencode' '" .. ws .. "' && echo '# a workspace' > '" .. ws .. "/README.md'")
  write(home .. "/.codex/auth.json", fake_codex_auth())
  write(home .. "/.claude.json", '{"mcpServers":{"probe-claude":{"type":"stdio","command":"/bin/true","args":[]}}}')
  write(home .. "/.gemini/settings.json", '{"mcpServers":{"probe-gemini":{"command":"/bin/true"}}}')
  write(home .. "/.config/opencode/opencode.json",
    '{"mcp":{"probe-opencode":{"type":"local","command":["/bin/true"]}}}')
  write(home .. "/.pi/agent/auth.json", '{"anthropic":{"type":"api_key","key":"sk-ant-fake"}}')
  local rows = {}
  local function log_row(row)
    rows[#rows + 1] = row
    io.write(string.format("%s %s: %s in %.1f s (install %.1f s into %s) %s\n", row.sandbox, row.adapter,
      row.ok and "ok" or "FAILED", row.prepare_s or 0, row.install_s or 0, row.into or "-",
      row.version or row.detail or ""))
    io.flush()
  end

  -- (a) bubblewrap with network: root in the sandbox, but / is read-only: the user prefix
  local box = "bwrap:" .. tmp .. "/box?net=1"
  for _, name in ipairs(names) do
    log_row(check("bwrap", box, name, ws, "/sandbox/work-" .. name, tmp, home))
  end

  -- (b) ssh as the unprivileged ferrytest user: npm's global prefix is not its to write
  local server = sshd.start()
  local ok, err = pcall(function()
    local user_home = first_line(sh("getent passwd " .. server.user .. " | cut -d: -f6"))
    local base = user_home .. "/ferry-agents"
    for _, name in ipairs(names) do
      log_row(check("ssh", server:url(), name, ws, base .. "/work-" .. name, tmp, home))
    end
    sh("rm -rf '" .. base .. "'")
  end)
  server:stop()
  core.fs_remove_tree(tmp)
  if not ok then error(err, 0) end
  return report(rows)
end

local names = #arg > 0 and { table.unpack(arg) } or ADAPTERS
local failed = main(names)
os.exit(failed == 0 and 0 or 1)
