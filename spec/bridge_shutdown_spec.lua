-- `ferry bridge serve` stopping on SIGTERM or SIGINT: it takes no new work, lets running commands finish
-- within --shutdown-grace and kills the rest (their streams end with an exit frame saying why), records
-- its leases, flushes its audit log, stops listening and exits 0; started again, it finds its leases.
local ferry = require "ferry"
local core = require "ferry.core"
local protocol = require "ferry.bridge.protocol"
local bridge = require "support.bridge"
local helpers = require "support.helpers"

local eventually = bridge.eventually

describe("ferry bridge serve on SIGTERM and SIGINT", function()
  it("finishes running commands, refuses new work, records its leases and flushes the audit log", function()
    local dir = helpers.tmpdir()
    local b = bridge.start { extra = { "--audit-log", dir .. "/audit.jsonl", "--shutdown-grace", "5" } }
    finally(function()
      b:stop()
      helpers.rmtree(dir)
    end)
    local sb = assert(ferry.open(b:provider { name = "drain" }))
    local lease = sb.provider.lease_id
    local before = protocol.decode(helpers.read_file(b.dir .. "/state/" .. lease .. ".json"))
    local short = ferry.spawn(function()
      return table.pack(sb:exec("sleep 1; wc -c", { stdin = string.rep("s", 3 * 1024 * 1024) }))
    end)
    ferry.sleep(300)
    local t0 = core.now_ms()
    ferry.proc.run { argv = { "kill", "-TERM", tostring(b.pid) } }
    ferry.sleep(200)
    local s, body = b:signed("POST", "/v1/leases", { name = "late" })
    assert.same({ 503, "shutting_down", "the bridge is shutting down" }, { s, body.error, body.message })
    local got = ferry.wait(short)
    assert.is_nil(got[2])
    assert.same({ 0, "3145728\n" }, { got[1].code, got[1].stdout }) -- its stdin kept flowing while it drained
    local res = ferry.wait(b.runner)
    assert.equal(0, res.code, b.stderr)
    assert.is_true(core.now_ms() - t0 < 4000, "stopped after " .. (core.now_ms() - t0) .. " ms")
    assert.matches("ferry bridge: SIGTERM: shutting down %(running commands get 5 s%)\nferry bridge: stopped\n$",
      b.stderr)
    sb:close()
    local _, err, code = ferry.open(b:provider { lease = lease })
    assert.equal("ECONNREFUSED", code, err)
    local after = protocol.decode(helpers.read_file(b.dir .. "/state/" .. lease .. ".json"))
    assert.equal("active", after.state)
    assert.is_true(after.expires_at >= before.expires_at) -- recorded as it was when the server stopped
    local routes = {}
    for line in helpers.read_file(dir .. "/audit.jsonl"):gmatch("[^\n]+") do
      local rec = assert(protocol.decode(line))
      routes[#routes + 1] = string.format("%s %d", rec.route, rec.status) .. (rec.exit_code ~= protocol.null and
        string.format(" exit %d", rec.exit_code) or "")
    end
    local all = table.concat(routes, "\n")
    assert.is_truthy(all:find("GET /v1/leases/:id/execs/:id/output 200 exit 0", 1, true), all)
    assert.is_truthy(all:find("POST /v1/leases 503", 1, true), all)
    b:restart()
    local s2, again = b:signed("GET", "/v1/leases/" .. lease)
    assert.same({ 200, "active" }, { s2, again.lease.state })
  end)

  it("kills a command that outlives the grace (SIGINT): its stream ends with an exit frame saying why", function()
    local b = bridge.start { extra = { "--shutdown-grace", "1" } }
    finally(function() b:stop() end)
    local sb = assert(ferry.open(b:provider { name = "outlive" }))
    local pidfile = sb.remote_dir_default .. "/cmd.pid"
    local long = ferry.spawn(function() return table.pack(sb:exec("echo $$ > " .. pidfile .. "; exec sleep 60")) end)
    assert.is_true(eventually(5000, function() return helpers.read_file(pidfile) ~= nil end))
    local pid = tonumber(helpers.read_file(pidfile))
    local t0 = core.now_ms()
    ferry.proc.run { argv = { "kill", "-INT", tostring(b.pid) } }
    local got = ferry.wait(long)
    assert.same({ nil, "bridge http://127.0.0.1:" .. b.port .. ": exec: the bridge is shutting down", "EIO" },
      { got[1], got[2], got[3] })
    assert.equal(0, ferry.wait(b.runner).code)
    assert.is_true(core.now_ms() - t0 < 5000)
    assert.is_true(eventually(3000, function()
      local stat = helpers.read_file("/proc/" .. pid .. "/stat")
      return stat == nil or stat:match("^%d+ %b() Z") ~= nil -- gone, or a zombie until init reaps it
    end), "the command outlived the bridge")
    sb:close()
  end)
end)
