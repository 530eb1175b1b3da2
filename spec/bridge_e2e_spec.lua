-- ferry's own operations end to end through `bridge+http://` to a real `ferry bridge serve` (bubblewrap
-- sandboxes per lease where bwrap runs, else local ones) and to the Cloudflare Worker under Node (its
-- sandboxes run commands on this host): the CLI verbs, prepare (full, then delta), restore from another
-- process, sessions, --many.
local ferry = require "ferry"
local cjson = require "cjson"
local bridge = require "support.bridge"
local helpers = require "support.helpers"

local function run_ferry(args, opts)
  opts = opts or {}
  local argv = { helpers.ferry_bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return assert(ferry.proc.run { argv = argv, stdin = opts.stdin, timeout_ms = 120000 })
end

local function result_of(stdout)
  local last
  for line in stdout:gmatch("[^\n]+") do last = line end
  return cjson.decode(last)
end

for _, server in ipairs(bridge.servers()) do
describe("ferry through bridge+http:// to " .. server.name, function()
  if server.missing then return pending(server.name .. ": " .. server.missing) end
  local b, tmp
  setup(function()
    b = server.start { template = bridge.sandbox_template() }
    tmp = helpers.tmpdir()
  end)
  teardown(function()
    b:stop()
    helpers.rmtree(tmp)
  end)

  it("exec, put, get and ls from the command line", function()
    local p = b:provider { name = "cli" }
    local r = run_ferry { "exec", "-p", p, "--env", "GREETING=hi there", "--", "sh", "-c",
      'echo "$GREETING"; echo warn >&2; exit 5' }
    assert.same({ 5, "hi there\n", "warn\n" }, { r.code, r.stdout, r.stderr })
    helpers.write_file(tmp .. "/in.bin", helpers.random_bytes(200000))
    local counted = run_ferry { "exec", "-p", p, "--stdin", tmp .. "/in.bin", "--", "wc", "-c" }
    assert.equal("200000\n", counted.stdout)
    local piped = run_ferry({ "exec", "-p", p, "--stdin", "-", "--", "tr", "a-z", "A-Z" }, { stdin = "shout\n" })
    assert.equal("SHOUT\n", piped.stdout)
    local t = run_ferry { "exec", "-p", p, "--timeout", "0.3", "--", "sleep", "10" }
    assert.equal(124, t.code)
    local sb = assert(ferry.open(p))
    local remote = sb.remote_dir_default
    sb:close()
    assert.equal(0, run_ferry({ "put", "-p", p, tmp .. "/in.bin", remote .. "/copy.bin" }).code)
    assert.equal(0, run_ferry({ "get", "-p", p, remote .. "/copy.bin", tmp .. "/back.bin" }).code)
    assert.is_true(helpers.read_file(tmp .. "/back.bin") == helpers.read_file(tmp .. "/in.bin"))
    local ls = run_ferry { "ls", "-p", p, remote }
    assert.matches("copy%.bin", ls.stdout)
  end)

  it("prepares, restores from another process after edits in the sandbox, then re-prepares as a delta", function()
    local ws = tmp .. "/ws"
    helpers.sh("mkdir -p " .. ws .. "/src && printf 'hello\\n' > " .. ws .. "/README && printf 'int x;\\n' > "
      .. ws .. "/src/a.c && printf 'drop\\n' > " .. ws .. "/gone.txt")
    local state = tmp .. "/ws.state.json"
    local p = b:provider { issue = "ISSUE-1", run = "run-1" }
    local prep = run_ferry { "prepare", "-p", p, "-w", ws, "--state", state, "--json" }
    assert.equal(0, prep.code, prep.stderr)
    local res = result_of(prep.stdout)
    assert.is_true(res.ok)
    local recorded = cjson.decode(helpers.read_file(state)).provider
    local lease = recorded:match("&lease=(%x+)")
    assert.is_string(lease, "the state file names the lease: " .. recorded)
    res.provider = recorded
    local host = b:workspace_dir(lease)
    assert.equal("hello\n", helpers.read_file(host .. "/README"))
    assert.equal("int x;\n", helpers.read_file(host .. "/src/a.c"))
    -- the agent works in the sandbox; the host edits another file meanwhile
    local sb = assert(ferry.open(res.provider))
    assert.equal(0, assert(sb:exec("cd " .. res.remote_dir .. " && printf 'from the sandbox\\n' > README && "
      .. "printf 'new\\n' > src/new.c && rm gone.txt")).code)
    sb:close()
    helpers.write_file(ws .. "/src/a.c", "int x = 1;\n")
    local back = run_ferry { "restore", "--state", state, "--json" }
    assert.equal(0, back.code, back.stderr)
    local rres = result_of(back.stdout)
    assert.is_true(rres.ok)
    assert.equal("from the sandbox\n", helpers.read_file(ws .. "/README"))
    assert.equal("new\n", helpers.read_file(ws .. "/src/new.c"))
    assert.is_nil(helpers.read_file(ws .. "/gone.txt"))
    assert.equal("int x = 1;\n", helpers.read_file(ws .. "/src/a.c")) -- the host's edit kept
    local again = run_ferry { "prepare", "-p", p, "-w", ws, "--state", state, "--json" }
    local ares = result_of(again.stdout)
    assert.is_true(ares.ok, again.stderr)
    assert.is_true(ares.delta)
    assert.equal(recorded, cjson.decode(helpers.read_file(state)).provider) -- the same lease
    assert.equal("int x = 1;\n", helpers.read_file(host .. "/src/a.c"))
  end)

  it("prepares and restores through a session (ferry.open with session = true)", function()
    local ws = tmp .. "/sess"
    helpers.sh("mkdir -p " .. ws .. " && printf 'one\\n' > " .. ws .. "/f.txt")
    local sb = assert(ferry.open(b:provider { name = "session" }, { session = true }))
    local res = assert(ferry.prepare { provider = sb, workspace = ws, state = tmp .. "/sess.json" })
    assert(sb:exec("printf 'two\\n' > " .. res.remote_dir .. "/f.txt"))
    local back = assert(ferry.restore { state = tmp .. "/sess.json", sb = sb })
    assert.same({ "f.txt" }, back.changed)
    assert.equal("two\n", helpers.read_file(ws .. "/f.txt"))
    sb:close()
  end)

  it("prepares and restores --many sandboxes, one lease each", function()
    local list, restores = {}, {}
    for i = 1, 3 do
      local ws = tmp .. "/m" .. i
      helpers.sh(string.format("mkdir -p %s && printf 'ws %d\\n' > %s/id.txt", ws, i, ws))
      list[i] = { provider = b:provider { issue = "MANY", run = "r" .. i }, workspace = ws,
        state = tmp .. "/m" .. i .. ".json" }
      restores[i] = { state = list[i].state }
    end
    helpers.write_file(tmp .. "/many.json", cjson.encode(list))
    helpers.write_file(tmp .. "/restore.json", cjson.encode(restores))
    local r = run_ferry { "prepare", "--many", tmp .. "/many.json", "--jobs", "3" }
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("prepare %-%-many: 3 ok, 0 failed\n$", r.stdout)
    local leases = {}
    for i = 1, 3 do
      local provider = cjson.decode(helpers.read_file(list[i].state)).provider
      local lease = provider:match("&lease=(%x+)")
      leases[lease] = true
      assert.equal("ws " .. i .. "\n", helpers.read_file(b:workspace_dir(lease) .. "/id.txt"))
      local sb = assert(ferry.open(provider))
      assert(sb:exec("printf 'changed %d\\n' " .. i .. " > " .. sb.remote_dir_default .. "/id.txt"))
      sb:close()
    end
    local n = 0
    for _ in pairs(leases) do n = n + 1 end
    assert.equal(3, n)
    local back = run_ferry { "restore", "--many", tmp .. "/restore.json" }
    assert.equal(0, back.code, back.stdout .. back.stderr)
    for i = 1, 3 do assert.equal("changed " .. i .. "\n", helpers.read_file(tmp .. "/m" .. i .. "/id.txt")) end
  end)

  it("releases a lease from the command line", function()
    local p = b:provider { name = "to-release" }
    local sb = assert(ferry.open(p))
    local lease = sb.provider.lease_id
    sb:close()
    local r = run_ferry { "bridge", "release", "-p", sb.spec }
    assert.same({ 0, "released lease " .. lease .. "\n" }, { r.code, r.stdout })
    local again = run_ferry { "exec", "-p", sb.spec, "--", "true" }
    assert.equal(1, again.code)
    assert.equal("ferry: exec: lease " .. lease .. " expired\n", again.stderr)
  end)

  it("speaks HTTPS with bridge+https://...&cacert=, and serves under a path prefix", function()
    if b.kind == "worker" then return pending("Cloudflare terminates TLS for the Worker") end
    helpers.sh(string.format("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem "
      .. "-days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null", tmp, tmp))
    local tls = bridge.start { extra = { "--tls-cert", tmp .. "/cert.pem", "--tls-key", tmp .. "/key.pem",
      "--prefix", "/ferry/api" } }
    finally(function() tls:stop() end)
    assert.matches("listening on 127%.0%.0%.1:%d+ as 127%.0%.0%.1:%d+ %(https%)", tls.stderr)
    local base = "bridge+https://127.0.0.1:" .. tls.port .. "/ferry/api?key_id=k1&key_file=" .. tls.key_files.k1
    local sb = assert(ferry.open(base .. "&cacert=" .. tmp .. "/cert.pem"))
    assert.equal("over tls\n", assert(sb:exec("echo over tls")).stdout)
    assert.matches("^bridge%+https://127%.0%.0%.1:%d+/ferry/api%?key_id=k1&key_file=.*&lease=%x+", sb.spec)
    sb:close()
    local _, err, code = ferry.open(base)
    assert.equal("ETLS", code)
    assert.matches("^bridge unreachable: https://127%.0%.0%.1:%d+: ", err)
    local _, perr = ferry.open("bridge+https://127.0.0.1:" .. tls.port .. "?key_id=k1&key_file=" .. tls.key_files.k1
      .. "&cacert=" .. tmp .. "/cert.pem") -- no prefix: no such route
    assert.matches("^bridge https://127%.0%.0%.1:%d+: no route POST /v1/leases %(HTTP 404 not_found%)$", perr)
  end)
end)
end
