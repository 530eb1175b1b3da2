-- What the bridge refuses: tampered signature, body, path or Host; a replayed request; a stale timestamp; an
-- unknown key; another key's lease; oversize requests; idle connections; too many requests. And what the
-- client refuses: an unsigned or wrongly signed response, a spliced or truncated output stream.
local ferry = require "ferry"
local core = require "ferry.core"
local http = require "ferry.http"
local protocol = require "ferry.bridge.protocol"
local bridge = require "support.bridge"
local helpers = require "support.helpers"

for _, server in ipairs(bridge.servers()) do
describe("the bridge server refuses, on " .. server.name, function()
  if server.missing then return pending(server.name .. ": " .. server.missing) end
  local b, lease
  setup(function()
    b = server.start { extra = server.start == bridge.start and { "--idle-timeout", "1" } or nil }
    local _, body = b:signed("POST", "/v1/leases", { name = "sec" })
    lease = body.lease.id
  end)
  teardown(function() b:stop() end)

  -- want_status and want_code first: the request's results come last (all of them).
  local function refused(want_status, want_code, status, body)
    assert.equal(want_status, status)
    assert.equal(want_code, body.error)
    assert.is_string(body.message)
  end

  it("a tampered signature", function()
    local _, _, _, sig = b:signed("GET", "/v1/leases")
    local flipped = (sig:sub(1, 1) == "a" and "b" or "a") .. sig:sub(2)
    local s, body = b:signed("GET", "/v1/leases", nil, { signature = flipped })
    refused(401, "bad_signature", s, body)
    refused(401, "bad_signature", b:signed("GET", "/v1/leases", nil, { signature = "zz" }))
  end)

  it("a tampered body, path, method or chain", function()
    refused(401, "bad_signature", b:signed("POST", "/v1/leases", { name = "evil" },
      { sign_body = protocol.encode { name = "sec" } }))
    refused(401, "bad_signature", b:signed("GET", "/v1/leases/" .. lease, nil, { sign_path = "/v1/leases" }))
    refused(401, "bad_signature", b:signed("GET", "/v1/leases?x=1", nil, { sign_path = "/v1/leases" }))
    refused(401, "bad_signature", b:signed("DELETE", "/v1/leases/" .. lease, nil, { sign_method = "GET" }))
    refused(401, "bad_signature", b:signed("GET", "/v1/leases", nil, { chain = "ab" }))
    local s = b:signed("GET", "/v1/leases/" .. lease)
    assert.equal(200, s) -- the lease is still there
  end)

  it("a Host other than its public host, and a signature for another host", function()
    local s, body = b:signed("GET", "/v1/leases", nil, { host = "evil.example:" .. b.port })
    refused(403, "wrong_host", s, body)
    assert.equal("this bridge answers as 127.0.0.1:" .. b.port .. ", not evil.example:" .. b.port, body.message)
    refused(401, "bad_signature", b:signed("GET", "/v1/leases", nil, { sign_host = "evil.example:1" }))
  end)

  it("a replayed request", function()
    local s1, _, _, _, nonce = b:signed("GET", "/v1/leases")
    assert.equal(200, s1)
    refused(401, "replayed_nonce", b:signed("GET", "/v1/leases", nil, { nonce = nonce }))
    refused(401, "replayed_nonce", b:signed("GET", "/v1/leases", nil, { nonce = nonce:upper() }))
    refused(401, "bad_nonce", b:signed("GET", "/v1/leases", nil, { nonce = "1234" }))
  end)

  it("a timestamp outside 300 s either way", function()
    refused(401, "stale_time", b:signed("GET", "/v1/leases", nil, { time = tostring(os.time() - 301) }))
    refused(401, "stale_time", b:signed("GET", "/v1/leases", nil, { time = tostring(os.time() + 301) }))
    refused(401, "stale_time", b:signed("GET", "/v1/leases", nil, { time = "soon" }))
    assert.equal(200, (b:signed("GET", "/v1/leases", nil, { time = tostring(os.time() - 290) })))
  end)

  it("an unknown key, a wrong secret and an unsigned request", function()
    refused(401, "unknown_key", b:signed("GET", "/v1/leases", nil, { key = "k9" }))
    refused(401, "bad_signature", b:signed("GET", "/v1/leases", nil, { secret = b.secrets.k2 }))
    local res = assert(http.request { url = b.url .. "/v1/leases" })
    assert.equal(401, res.status)
    assert.equal("missing_auth", protocol.decode(res.body).error)
  end)

  it("another key's lease: it does not exist for that key", function()
    local _, list = b:signed("GET", "/v1/leases", nil, { key = "k2" })
    assert.same({}, list.leases)
    refused(404, "lease_not_found", b:signed("GET", "/v1/leases/" .. lease, nil, { key = "k2" }))
    refused(404, "lease_not_found", b:signed("POST", "/v1/leases/" .. lease .. "/execs", { script = "id" },
      { key = "k2" }))
    refused(404, "lease_not_found", b:signed("POST", "/v1/leases/" .. lease .. "/renew", {}, { key = "k2" }))
    refused(404, "lease_not_found", b:signed("DELETE", "/v1/leases/" .. lease, nil, { key = "k2" }))
    local _, mine = b:signed("POST", "/v1/leases", { name = "sec" }, { key = "k2" }) -- same name, its own lease
    assert.not_equal(lease, mine.lease.id)
    assert.equal(200, (b:signed("GET", "/v1/leases/" .. lease)))
    -- another key cannot read an exec's output or feed its stdin either
    local _, created, _, create_sig = b:signed("POST", "/v1/leases/" .. lease .. "/execs",
      { script = "cat", has_stdin = true })
    local path = "/v1/leases/" .. lease .. "/execs/" .. created.exec.id
    refused(404, "lease_not_found", b:signed("GET", path .. "/output", nil, { key = "k2" }))
    refused(404, "lease_not_found", b:signed("PUT", path .. "/stdin?seq=0&eof=1", "x",
      { key = "k2", chain = create_sig }))
    assert.equal(200, (b:signed("DELETE", path)))
  end)

  it("oversize bodies and headers with 413 and the JSON envelope", function()
    local _, created, _, sig = b:signed("POST", "/v1/leases/" .. lease .. "/execs",
      { script = "cat", has_stdin = true })
    local path = "/v1/leases/" .. lease .. "/execs/" .. created.exec.id
    -- with Expect: 100-continue the server answers before the body travels (without it, the reset of a
    -- refused upload can overtake the answer)
    local s, big = b:signed("PUT", path .. "/stdin?seq=0", string.rep("x", protocol.MAX_CHUNK + 1),
      { chain = sig, headers = { "Expect: 100-continue" } })
    refused(413, "too_large", s, big)
    assert.matches("1048576", big.message)
    local hs, hbody = b:signed("GET", "/v1/leases", nil, { headers = { "X-Big: " .. string.rep("h", 17000) } })
    refused(413, "too_large", hs, hbody)
    assert.equal(200, (b:signed("PUT", path .. "/stdin?seq=0&eof=1", string.rep("x", protocol.MAX_CHUNK),
      { chain = sig })))
    b:signed("DELETE", path)
  end)

  it("connections that stay idle or send too slowly: closed after --idle-timeout", function()
    if b.kind == "worker" then return pending("on Cloudflare the edge closes idle connections") end
    local res = assert(ferry.proc.run { argv = { "bash", "-c", string.format([[
      exec 3<>/dev/tcp/127.0.0.1/%d
      t0=$(date +%%s%%N)
      printf 'GET /v1/health HTTP/1.1\r\nHost: 127' >&3
      cat <&3 >/dev/null
      echo $(( ($(date +%%s%%N) - t0) / 1000000 ))]], b.port) }, timeout_ms = 20000 })
    local ms = tonumber(res.stdout)
    assert.is_true(ms >= 900 and ms < 4000, "closed after " .. tostring(ms) .. " ms")
  end)
end)

describe("the bridge server limits, on " .. server.name, function()
  if server.missing then return pending(server.name .. ": " .. server.missing) end
  it("leases (429 too_many_leases)", function()
    local b = server.start { extra = { "--max-leases", "1" } }
    finally(function() b:stop() end)
    assert.equal(201, (b:signed("POST", "/v1/leases", { name = "one" })))
    local s2, full = b:signed("POST", "/v1/leases", { name = "two" })
    assert.same({ 429, "too_many_leases", "the bridge holds 1 leases, its maximum" }, { s2, full.error, full.message })
    assert.equal(200, (b:signed("POST", "/v1/leases", { name = "one" }))) -- recovering one is not a new one
  end)

  it("requests at once (429 busy)", function()
    if server.start ~= bridge.start then return pending("on Cloudflare the platform spreads requests") end
    local b = bridge.start { extra = { "--max-requests", "1", "--max-leases", "1" } }
    local s, body = b:signed("POST", "/v1/leases", { name = "one" })
    assert.equal(201, s)
    local s2, full = b:signed("POST", "/v1/leases", { name = "two" })
    assert.same({ 429, "too_many_leases" }, { s2, full.error })
    local _, created = b:signed("POST", "/v1/leases/" .. body.lease.id .. "/execs", { script = "sleep 2" })
    -- the output stream of the running command holds the one request slot
    local reading = ferry.spawn(function()
      return b:signed("GET", "/v1/leases/" .. body.lease.id .. "/execs/" .. created.exec.id .. "/output")
    end)
    ferry.sleep(300)
    local s3, busy = b:signed("GET", "/v1/health")
    assert.same({ 429, "busy" }, { s3, busy.error })
    assert.equal(200, ferry.wait(reading))
    assert.equal(200, (b:signed("GET", "/v1/health")))
    b:stop()
  end)
end)

describe("the bridge provider reports, on " .. server.name, function()
  if server.missing then return pending(server.name .. ": " .. server.missing) end
  local b
  setup(function() b = server.start() end)
  teardown(function() b:stop() end)

  it("a wrong key, an unknown key id, a bad key file and an unreachable bridge by name", function()
    local label = "bridge http://127.0.0.1:" .. b.port
    local wrong = b.dir .. "/wrong.key"
    helpers.write_file(wrong, protocol.hex(core.random_bytes(32)))
    helpers.sh("chmod 600 " .. wrong)
    local _, err, code = ferry.open("bridge+" .. b.url .. "?key_id=k1&key_file=" .. wrong)
    assert.same({ label .. ": signature rejected (check the key)", "EACCES" }, { err, code })
    local _, err2 = ferry.open("bridge+" .. b.url .. "?key_id=k7&key_file=" .. wrong)
    assert.equal(label .. ": key 'k7' is not known to the bridge (check key_id)", err2)
    helpers.sh("chmod 644 " .. wrong)
    local _, err3, code3 = ferry.open("bridge+" .. b.url .. "?key_id=k1&key_file=" .. wrong)
    assert.same({ "bridge: key file " .. wrong .. " is readable by others (mode 644): chmod 600 " .. wrong, "EPERM" },
      { err3, code3 })
    local short = b.dir .. "/short.key"
    helpers.write_file(short, "tooshort\n")
    helpers.sh("chmod 600 " .. short)
    local _, err4 = ferry.open("bridge+" .. b.url .. "?key_id=k1&key_file=" .. short)
    assert.equal("bridge: key file " .. short .. " holds 8 bytes; a key needs at least 32 (e.g. openssl rand -hex 32 > "
      .. short .. ")", err4)
    local _, err5, code5 = ferry.open("bridge+http://127.0.0.1:1?key_id=k1&key_file=" .. b.key_files.k1)
    assert.equal("ECONNREFUSED", code5)
    assert.matches("^bridge unreachable: http://127%.0%.0%.1:1: ", err5)
    local _, err6 = ferry.open("bridge+http://127.0.0.1:1?key_id=k1")
    assert.equal("bridge: missing key_file= (bridge+http://HOST:PORT[/PREFIX]?key_id=ID&key_file=FILE)", err6)
    local _, err7 = ferry.open("bridge+http://127.0.0.1:1?key_id=k1&key_file=x&colour=red")
    assert.equal("bridge: unknown key 'colour' (known: key_id, key_file, lease, name, issue, run, ttl, cacert)", err7)
    local _, err8 = ferry.open(b:provider { lease = "00ff00ff00ff00ff00ff" })
    assert.equal("lease 00ff00ff00ff00ff00ff not found on " .. label, err8)
  end)

  it("the Host the bridge answers as, when the URL names another", function()
    local other = server.start { extra = { "--public-host", "bridge.example:443" } }
    local _, err = ferry.open(other:provider())
    assert.equal("bridge http://127.0.0.1:" .. other.port .. ": host rejected: this bridge answers as "
      .. "bridge.example:443, not 127.0.0.1:" .. other.port .. " (check the URL or the bridge's --public-host)", err)
    other:stop()
  end)
end)
end

-- A fake bridge on this loop: answers like a bridge, with the response signatures or frames a spec chooses.
local function fake_bridge(secret, answer)
  local srv = assert(http.listen({ port = 0 }, function(req, res)
    local sig = req.headers["x-ferry-signature"]
    answer(req, res, sig, protocol.unhex(sig or ""))
  end))
  local dir = helpers.tmpdir()
  helpers.write_file(dir .. "/k", secret)
  helpers.sh("chmod 600 " .. dir .. "/k")
  return srv, "bridge+http://127.0.0.1:" .. srv.port .. "?key_id=k1&key_file=" .. dir .. "/k", dir
end

local function json_reply(res, secret, sig, status, body)
  local text = protocol.encode(body)
  res:respond(status, { ["content-type"] = "application/json",
    ["x-ferry-response-signature"] = secret and protocol.sign_response(secret, sig, status, text) or nil }, text)
end

describe("the bridge client refuses", function()
  local secret = protocol.hex(core.random_bytes(32))
  local lease = { id = "00aa00aa00aa00aa00aa", ttl_s = 3600, remote_dir = "/w" }

  it("a response without the bridge's signature", function()
    local srv, spec, dir = fake_bridge(secret, function(_, res, sig)
      json_reply(res, protocol.hex(core.random_bytes(32)), sig, 201, { lease = lease })
    end)
    local _, err, code = ferry.open(spec)
    assert.equal("EACCES", code)
    assert.equal("bridge http://127.0.0.1:" .. srv.port .. ": the response failed its signature check "
      .. "(is this the bridge? check the key)", err)
    bridge.close_server(srv)
    helpers.rmtree(dir)
  end)

  -- A fake whose output stream is chained to `seed(sig_raw)` and made of `frames`.
  local function stream_bridge(frames_of)
    return fake_bridge(secret, function(req, res, sig, raw)
      if req.path == "/v1/leases" then return json_reply(res, secret, sig, 201, { lease = lease }) end
      if req.path:match("/execs$") then return json_reply(res, secret, sig, 201, { exec = { id = "00bb" } }) end
      res:start(200, {})
      for _, f in ipairs(frames_of(raw)) do res:write(f) end
      res:finish()
    end)
  end

  it("an output stream spliced from another request's stream, or cut before its exit frame", function()
    local other_seed = core.random_bytes(32)
    local srv, spec, dir = stream_bridge(function()
      local w = protocol.frame_writer(secret, other_seed)
      return { w:frame("o", "hi"), w:frame("x", '{"code":0}') }
    end)
    local sb = assert(ferry.open(spec))
    local _, err, code = sb:exec("true")
    assert.equal("EIO", code)
    assert.equal("bridge http://127.0.0.1:" .. srv.port .. ": exec 00bb output: frame 1 failed its MAC check "
      .. "(a spliced, reordered or altered stream)", err)
    sb:close()
    bridge.close_server(srv)
    helpers.rmtree(dir)
    local srv2, spec2, dir2 = stream_bridge(function(raw)
      local w = protocol.frame_writer(secret, raw)
      return { w:frame("o", "partial output") }
    end)
    local sb2 = assert(ferry.open(spec2))
    local _, err2 = sb2:exec("true")
    assert.equal("bridge http://127.0.0.1:" .. srv2.port .. ": exec 00bb output ended before its exit frame "
      .. "(connection lost)", err2)
    sb2:close()
    bridge.close_server(srv2)
    helpers.rmtree(dir2)
  end)
end)
