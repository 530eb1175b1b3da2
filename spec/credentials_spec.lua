-- Credentials never flow back silently (issue 8, item 2): the codex adapter copies a sandbox's auth.json back
-- to the host only when the caller opts in, and then only a genuine refresh (same account, newer than the
-- host's, not in the future), keeping the replaced file as a 0600 backup; every decision is in the restore
-- result (`credentials`) and the human summary. Driven through the real `ferry` binary with the local
-- provider, CODEX_HOME pointing at a temp dir and a stand-in `codex` on PATH so that no install runs.
local ferry = require "ferry"
local core = require "ferry.core"
local cjson = require "cjson"
local helpers = require "support.helpers"

local MODE_600 = tonumber("600", 8)

local function stamp(offset_s)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + offset_s)
end

local function auth(account, refreshed)
  return cjson.encode {
    tokens = { id_token = "idt", access_token = "at-" .. refreshed, refresh_token = "rt-" .. refreshed,
      account_id = account },
    last_refresh = refreshed,
  }
end

local function last_json_line(stdout)
  local last
  for line in stdout:gmatch("[^\n]+") do last = line end
  return cjson.decode((assert(last, "no output")))
end

local function backups(dir)
  local out = {}
  for _, name in ipairs(assert(core.fs_readdir(dir))) do
    if name:find("^auth%.json%.ferry%-backup%-") then out[#out + 1] = dir .. "/" .. name end
  end
  table.sort(out)
  return out
end

describe("credential copy-back (codex auth.json)", function()
  local tmp, ws, remote, state, codex_home, sandbox_auth, env

  local function run(args)
    local argv = { helpers.ferry_bin }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return assert(ferry.proc.run { argv = argv, env = env, timeout_ms = 60000 })
  end

  local function restore(...)
    local r = run { "restore", "--state", state, "--json", ... }
    assert.equal(0, r.code, r.stderr)
    return last_json_line(r.stdout)
  end

  local function host_auth() return helpers.read_file(codex_home .. "/auth.json") end

  before_each(function()
    tmp = helpers.tmpdir()
    ws, remote, state, codex_home = tmp .. "/ws", tmp .. "/remote", tmp .. "/state.json", tmp .. "/codex-home"
    helpers.sh("mkdir -p '" .. ws .. "' '" .. remote .. "' '" .. codex_home .. "' '" .. tmp .. "/bin'")
    helpers.write_file(ws .. "/a.txt", "a\n")
    -- detect passes, so prepare runs no `npm install`
    helpers.write_file(tmp .. "/bin/codex", "#!/bin/sh\nexit 0\n")
    helpers.sh("chmod 755 '" .. tmp .. "/bin/codex'")
    env = { CODEX_HOME = codex_home, PATH = tmp .. "/bin:" .. os.getenv("PATH"), NO_COLOR = "1" }
    helpers.write_file(codex_home .. "/auth.json", auth("acct-1", stamp(-3600)))
    helpers.sh("chmod 600 '" .. codex_home .. "/auth.json'")
    local r = run { "prepare", "-p", "local", "-a", "codex", "-w", ws, "-r", remote, "--state", state, "--json" }
    assert.equal(0, r.code, r.stderr)
    local res = last_json_line(r.stdout)
    sandbox_auth = res.asset_dirs.home .. "/auth.json"
    assert.equal(host_auth(), helpers.read_file(sandbox_auth), "the sign-in went in as the home asset")
  end)

  after_each(function() helpers.rmtree(tmp) end)

  it("refuses a refresh time far in the future with the same account: host tokens unchanged, reported", function()
    local before = host_auth()
    helpers.write_file(sandbox_auth, auth("acct-1", "2099-01-01T00:00:00Z"))
    local res = restore("--copy-back-credentials")
    assert.equal(before, host_auth())
    assert.same({}, backups(codex_home))
    assert.same({ { adapter = "codex", path = codex_home .. "/auth.json", action = "refused",
      reason = "refresh time is in the future" } }, res.credentials)
    -- the human summary says so too
    helpers.write_file(sandbox_auth, auth("acct-1", stamp(3600)))
    local r = run { "restore", "--state", state, "--copy-back-credentials" }
    assert.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("credential codex " .. codex_home .. "/auth.json: refused (refresh time is in the "
      .. "future)", 1, true), r.stdout)
    assert.equal(before, host_auth())
  end)

  it("copies nothing by default and reports the credential as skipped", function()
    local before = host_auth()
    helpers.write_file(sandbox_auth, auth("acct-1", stamp(-60))) -- a genuine refresh, even
    local res = restore()
    assert.equal(before, host_auth())
    assert.same({}, backups(codex_home))
    assert.equal(1, #res.credentials)
    assert.equal("skipped", res.credentials[1].action)
    assert.matches("%-%-copy%-back%-credentials", res.credentials[1].reason)
    local r = run { "restore", "--state", state }
    assert.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("credential codex " .. codex_home .. "/auth.json: skipped (copy-back of credentials"
      .. " is off", 1, true), r.stdout)
    assert.equal(before, host_auth())
  end)

  it("says nothing when the sandbox's sign-in is the host's", function()
    assert.same({}, restore().credentials)
    assert.same({}, restore("--copy-back-credentials").credentials)
  end)

  it("copies a genuine newer refresh when asked, keeping the old file as a 0600 backup", function()
    local before = host_auth()
    local newer = auth("acct-1", stamp(-60))
    helpers.write_file(sandbox_auth, newer)
    local res = restore("--copy-back-credentials")
    assert.equal(newer, host_auth())
    assert.equal(MODE_600, core.fs_lstat(codex_home .. "/auth.json").mode & 511)
    local kept = backups(codex_home)
    assert.equal(1, #kept)
    assert.equal(before, helpers.read_file(kept[1]))
    assert.equal(MODE_600, core.fs_lstat(kept[1]).mode & 511)
    assert.same({ { adapter = "codex", path = codex_home .. "/auth.json", action = "copied",
      reason = "previous copy kept as " .. kept[1] } }, res.credentials)
    -- the backup is the host's alone: it never travels into the sandbox with the home asset
    local r = run { "prepare", "-p", "local", "-a", "codex", "-w", ws, "-r", remote, "--state", state, "--json" }
    assert.equal(0, r.code, r.stderr)
    local names = assert(core.fs_readdir(remote .. "/.ferry-runtime/codex/home"))
    assert.same({ "auth.json" }, names)
  end)

  it("refuses another account, and an older or equal refresh, when asked", function()
    local before = host_auth()
    for _, case in ipairs {
      { auth("acct-2", stamp(-60)), "different account" },
      { auth("acct-1", stamp(-7200)), "not newer than the host's copy" },
    } do
      helpers.write_file(sandbox_auth, case[1])
      local res = restore("--copy-back-credentials")
      assert.equal(before, host_auth())
      assert.same({ { adapter = "codex", path = codex_home .. "/auth.json", action = "refused", reason = case[2] } },
        res.credentials)
    end
    assert.same({}, backups(codex_home))
  end)

  it("keeps each replaced sign-in when two copy-backs land in the same second", function()
    local first = host_auth()
    local second = auth("acct-1", stamp(-120))
    helpers.write_file(sandbox_auth, second)
    restore("--copy-back-credentials")
    local third = auth("acct-1", stamp(-60))
    helpers.write_file(sandbox_auth, third)
    restore("--copy-back-credentials")
    assert.equal(third, host_auth())
    local contents = {}
    for _, path in ipairs(backups(codex_home)) do contents[helpers.read_file(path)] = true end
    assert.is_true(contents[first] and contents[second], "both replaced copies are kept")
  end)

  it("rejects a credentials option that is not a known value", function()
    assert.has_error(function() ferry.restore { state = state, credentials = "yes" } end,
      'ferry.restore: opts.credentials must be "copy-back" or "skip", got yes')
  end)
end)
