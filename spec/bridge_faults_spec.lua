-- Faults around the bridge: the server killed with -9 mid-run and started again (the lease and its sandbox
-- are recovered and a restore converges); a client killed mid-exec (its command dies on the server); leases
-- that expire (reaped, their sandbox removed) or are kept alive by an open provider; 200 execs at once.
local ferry = require "ferry"
local core = require "ferry.core"
local cjson = require "cjson"
local bridge = require "support.bridge"
local helpers = require "support.helpers"

local function alive(pid)
  return ferry.proc.run({ argv = { "kill", "-0", tostring(pid) } }).code == 0
end

local eventually = bridge.eventually

for _, server in ipairs(bridge.servers()) do
describe("bridge faults on " .. server.name, function()
  if server.missing then return pending(server.name .. ": " .. server.missing) end
  it("server killed with -9 mid-run and restarted: the lease and sandbox are recovered, restore converges", function()
    local b = server.start { template = bridge.sandbox_template() }
    finally(function() b:stop() end)
    local tmp = helpers.tmpdir()
    local ws = tmp .. "/ws"
    helpers.sh("mkdir -p " .. ws .. " && printf 'v1\\n' > " .. ws .. "/a.txt && printf 'keep\\n' > " .. ws .. "/b.txt")
    local state = tmp .. "/state.json"
    assert(ferry.prepare { provider = b:provider { issue = "CRASH" }, workspace = ws, state = state })
    local spec = cjson.decode(helpers.read_file(state)).provider
    local sb = assert(ferry.open(spec))
    assert(sb:exec("printf 'v2\\n' > " .. sb.remote_dir_default .. "/a.txt"))
    -- a command is running when the server dies
    local running = ferry.spawn(function() return table.pack(sb:exec("sleep 30")) end)
    ferry.sleep(300)
    b:kill("KILL")
    local got = ferry.wait(running)
    assert.is_nil(got[1])
    assert.matches("^bridge[ %a]*:? ?http://127%.0%.0%.1:%d+: ", got[2]) -- lost, or unreachable
    sb:close()
    local _, err = ferry.restore { state = state }
    assert.matches("^restore: bridge unreachable: http://127%.0%.0%.1:%d+: ", err)
    b:restart() -- same port, state dir and keys
    local back = assert(ferry.restore { state = state })
    assert.same({ "a.txt" }, back.changed)
    assert.equal("v2\n", helpers.read_file(ws .. "/a.txt"))
    assert.equal("keep\n", helpers.read_file(ws .. "/b.txt"))
    local again = assert(ferry.restore { state = state }) -- converged: nothing more to do
    assert.same({}, again.changed)
    local status, body = b:signed("GET", "/v1/leases/" .. spec:match("&lease=(%x+)"))
    assert.same({ 200, "active", "CRASH" }, { status, body.lease.state, body.lease.issue })
    helpers.rmtree(tmp)
  end)

  it("client killed mid-exec: its command dies on the server", function()
    local b = server.start()
    finally(function() b:stop() end)
    local sb = assert(ferry.open(b:provider { name = "victim" }))
    local pidfile = sb.remote_dir_default .. "/cmd.pid"
    sb:close()
    local client_pid
    local client = ferry.spawn(function()
      return ferry.proc.run { argv = { helpers.ferry_bin, "exec", "-p", sb.spec, "--", "sh", "-c",
        "echo $$ > " .. pidfile .. "; echo started; exec sleep 60" },
        on_spawn = function(pid) client_pid = pid end, on_stdout = function() end }
    end)
    assert.is_true(eventually(10000, function() return helpers.read_file(pidfile) ~= nil end))
    local pid = tonumber(helpers.read_file(pidfile))
    assert.is_true(alive(pid))
    ferry.proc.run { argv = { "kill", "-9", tostring(client_pid) } }
    ferry.wait(client)
    assert.is_true(eventually(8000, function() return not alive(pid) end), "the command outlived its client")
  end)

  it("an expired lease is reaped: its sandbox removed, its owner told it expired", function()
    local b = server.start { extra = { "--lease-ttl", "2" } }
    finally(function() b:stop() end)
    local _, body = b:signed("POST", "/v1/leases", { name = "short" })
    local lease = body.lease.id
    assert.equal("dir", core.fs_stat(b.dir .. "/sb/" .. lease).kind)
    assert.is_true(eventually(8000, function() return core.fs_stat(b.dir .. "/sb/" .. lease) == nil end))
    local status, gone = b:signed("GET", "/v1/leases/" .. lease)
    assert.same({ 410, "lease " .. lease .. " expired" }, { status, gone.message })
    local _, err = ferry.open(b:provider { lease = lease })
    assert.equal("lease " .. lease .. " expired", err)
    if b.kind == "worker" then return end -- (its leases are in Durable Object storage, not a state dir)
    local listed = assert(ferry.proc.run { argv = { helpers.ferry_bin, "bridge", "leases", "--state-dir",
      b.dir .. "/state" } })
    assert.matches(lease .. "  expired  k1  short", listed.stdout)
  end)

  it("an open provider renews its lease; once closed, the lease runs out", function()
    local b = server.start { extra = { "--lease-ttl", "2" } }
    finally(function() b:stop() end)
    local sb = assert(ferry.open(b:provider { name = "renewed" }))
    local lease = sb.provider.lease_id
    ferry.sleep(4500) -- more than twice the ttl
    local r, err = sb:exec("true")
    assert.is_nil(err)
    assert.equal(0, r.code)
    sb:close()
    -- (polling with requests would renew it: every request on a lease does)
    assert.is_true(eventually(8000, function() return core.fs_stat(b.dir .. "/sb/" .. lease) == nil end))
    assert.equal(410, (b:signed("GET", "/v1/leases/" .. lease)))
  end)

  it("serves 200 concurrent execs across 20 leases with no error", function()
    local b = server.start()
    finally(function() b:stop() end)
    local boxes = {}
    for i = 1, 20 do boxes[i] = assert(ferry.open(b:provider { issue = "LOAD", run = "r" .. i })) end
    local tasks = {}
    local t0 = core.now_ms()
    for i = 1, 200 do
      local sb = boxes[(i - 1) % 20 + 1]
      tasks[i] = ferry.spawn(function()
        local r, err = sb:exec("printf '%s:%s' " .. i .. " \"$(cat /dev/null; echo ok)\"; sleep 0.2")
        if not r then return "error: " .. tostring(err) end
        return r.code == 0 and r.stdout or ("exit " .. tostring(r.code) .. ": " .. tostring(r.stderr))
      end)
    end
    local outs = ferry.wait(tasks)
    local errors = {}
    for i = 1, 200 do
      if outs[i] ~= i .. ":ok" then errors[#errors + 1] = i .. " -> " .. tostring(outs[i]) end
    end
    assert.same({}, errors)
    assert.is_true(core.now_ms() - t0 < 60000)
    for _, sb in ipairs(boxes) do sb:close() end
  end)
end)
end
