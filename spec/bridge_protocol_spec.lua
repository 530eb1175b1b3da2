-- The bridge protocol v1 against a real `ferry bridge serve` process on loopback: every route, the frames of
-- an output stream, chunked stdin, leases; and through the bridge+http:// provider, what a sandbox user sees.
local ferry = require "ferry"
local core = require "ferry.core"
local protocol = require "ferry.bridge.protocol"
local bridge = require "support.bridge"
local helpers = require "support.helpers"

-- Read an exec's output stream with a signed GET; returns stdout, stderr, the exit record, frames seen.
local function read_output(b, lease, exec_id, opts)
  opts = opts or {}
  local path = "/v1/leases/" .. lease .. "/execs/" .. exec_id .. "/output"
  local secret = b.secrets[opts.key or "k1"]
  local time, nonce = tostring(os.time()), protocol.hex(core.random_bytes(16))
  local sig = protocol.sign(secret, { key_id = opts.key or "k1", method = "GET", path = path,
    host = "127.0.0.1:" .. b.port, time = time, nonce = nonce, body_sha256 = protocol.EMPTY_SHA256 })
  local out, err, exit, kinds = {}, {}, nil, {}
  local reader = protocol.frame_reader(secret, sig, function(kind, payload)
    kinds[#kinds + 1] = kind
    if kind == "o" then out[#out + 1] = payload
    elseif kind == "e" then err[#err + 1] = payload
    elseif kind == "x" then exit = protocol.decode(payload) end
  end)
  local status
  local res = assert(require("ferry.http").request { url = b.url .. path, headers = { "Host: 127.0.0.1:" .. b.port,
    "X-Ferry-Key: " .. (opts.key or "k1"), "X-Ferry-Time: " .. time, "X-Ferry-Nonce: " .. nonce,
    "X-Ferry-Signature: " .. protocol.hex(sig) },
    on_headers = function(s) status = s end,
    on_data = function(c) if status == 200 then assert(reader:push(c)) end end })
  return table.concat(out), table.concat(err), exit, kinds, res
end

for _, server in ipairs(bridge.servers()) do
describe("bridge protocol v1 on " .. server.name, function()
  if server.missing then return pending(server.name .. ": " .. server.missing) end
  local b
  setup(function() b = server.start() end)
  teardown(function() b:stop() end)

  it("answers health with a signed response", function()
    local status, body, headers, sig_hex = b:signed("GET", "/v1/health")
    assert.equal(200, status)
    assert.is_true(body.ok)
    assert.equal("v1", body.protocol)
    assert.is_true(math.abs(body.time - os.time()) <= 2)
    assert.equal("127.0.0.1:" .. b.port, body.public_host)
    assert.equal(protocol.sign_response(b.secrets.k1, sig_hex, 200, protocol.encode(body)):len(), 64)
    local raw_status, _, raw_headers, raw_sig = b:signed("GET", "/v1/health")
    assert.equal(200, raw_status)
    assert.not_equal(headers["x-ferry-response-signature"], raw_headers["x-ferry-response-signature"])
    assert.is_truthy(raw_sig)
  end)

  it("acquires a lease, recovers it by name, lists, gets, renews and releases it", function()
    local status, body = b:signed("POST", "/v1/leases", { name = "n1", issue = "ISSUE-7", run = "run-3", ttl_s = 600 })
    assert.equal(201, status)
    local lease = body.lease
    assert.matches("^%x+$", lease.id)
    assert.equal(20, #lease.id)
    assert.same({ "n1", "ISSUE-7", "run-3", "active", 600, false }, { lease.name, lease.issue, lease.run, lease.state,
      lease.ttl_s, body.lease.recovered or false })
    assert.equal(b.dir .. "/sb/" .. lease.id .. "/workspace", lease.remote_dir)
    assert.equal("dir", core.fs_stat(lease.remote_dir).kind)
    local s2, again = b:signed("POST", "/v1/leases", { name = "n1" })
    assert.equal(200, s2)
    assert.equal(lease.id, again.lease.id)
    assert.is_true(again.lease.recovered)
    local s3, other = b:signed("POST", "/v1/leases", { name = "n2" })
    assert.equal(201, s3)
    assert.not_equal(lease.id, other.lease.id)
    local _, list = b:signed("GET", "/v1/leases")
    local ids = {}
    for _, l in ipairs(list.leases) do ids[l.id] = l.state end
    assert.same({ [lease.id] = "active", [other.lease.id] = "active" }, ids)
    local _, got = b:signed("GET", "/v1/leases/" .. lease.id)
    assert.equal("ISSUE-7", got.lease.issue)
    local s4, renewed = b:signed("POST", "/v1/leases/" .. lease.id .. "/renew", { ttl_s = 10 ^ 7 })
    assert.equal(200, s4)
    assert.equal(3600, renewed.lease.ttl_s) -- capped at the server's --lease-ttl
    assert.is_true(renewed.lease.expires_at >= os.time() + 3590)
    local s5, released = b:signed("DELETE", "/v1/leases/" .. other.lease.id)
    assert.equal(200, s5)
    assert.is_true(released.released)
    assert.is_nil(core.fs_stat(b.dir .. "/sb/" .. other.lease.id))
    local s6, gone = b:signed("GET", "/v1/leases/" .. other.lease.id)
    assert.equal(410, s6)
    assert.same({ error = "lease_expired", message = "lease " .. other.lease.id .. " was released" }, gone)
    assert.equal(410, (b:signed("POST", "/v1/leases/" .. other.lease.id .. "/execs", { script = "true" })))
  end)

  it("runs an exec: frames of stdout and stderr, then the exit frame with code and signal", function()
    local _, body = b:signed("POST", "/v1/leases", { name = "exec" })
    local lease = body.lease.id
    local status, created = b:signed("POST", "/v1/leases/" .. lease .. "/execs",
      { argv = { "sh", "-c", "printf out; printf err >&2; exit 3" } })
    assert.equal(201, status)
    local out, err, exit, kinds = read_output(b, lease, created.exec.id)
    assert.equal("out", out)
    assert.equal("err", err)
    assert.equal(3, exit.code)
    assert.equal(protocol.null, exit.signal)
    assert.is_false(exit.timed_out)
    assert.equal("x", kinds[#kinds])
    local _, killed = b:signed("POST", "/v1/leases/" .. lease .. "/execs", { script = "kill -9 $$" })
    local _, _, kexit = read_output(b, lease, killed.exec.id)
    assert.equal(137, protocol.int(kexit.code))
    local _, envd = b:signed("POST", "/v1/leases/" .. lease .. "/execs",
      { script = 'printf "%s:%s" "$A" "$(pwd)"', env = { A = "x y" }, cwd = "/tmp" })
    assert.equal("x y:/tmp", (read_output(b, lease, envd.exec.id)))
    local s, second = b:signed("GET", "/v1/leases/" .. lease .. "/execs/" .. created.exec.id .. "/output")
    assert.equal(409, s)
    assert.equal("output_taken", second.error)
    assert.equal(404, (b:signed("GET", "/v1/leases/" .. lease .. "/execs/abcdef/output")))
    for _, bad in ipairs { {}, { script = 3 }, { argv = {} }, { argv = { "a", 1 } }, { script = "x", argv = { "y" } },
      { script = "x", env = { ["1A"] = "v" } }, { script = "x", timeout_ms = -1 } } do
      local bs, be = b:signed("POST", "/v1/leases/" .. lease .. "/execs", bad)
      assert.equal(400, bs)
      assert.equal("bad_request", be.error)
    end
    local js, je = b:signed("POST", "/v1/leases/" .. lease .. "/execs", "{not json")
    assert.same({ 400, "bad_request" }, { js, je.error })
  end)

  it("takes stdin as chained, numbered chunks, in any order within the window, and feeds them in order", function()
    local _, body = b:signed("POST", "/v1/leases", { name = "stdin" })
    local lease = body.lease.id
    local _, created, _, create_sig = b:signed("POST", "/v1/leases/" .. lease .. "/execs",
      { script = 'f=$(mktemp); cat > "$f"; wc -c < "$f"; sha256sum < "$f"; rm -f "$f"', has_stdin = true })
    local path = "/v1/leases/" .. lease .. "/execs/" .. created.exec.id .. "/stdin"
    local output = ferry.spawn(function() return table.pack(read_output(b, lease, created.exec.id)) end)
    local a, c, d = string.rep("\0\1\255", 100000), "middle", "tail"
    -- chunk 0 is signed now and sent last: its signature is what chunk 1 is chained to
    local time0, nonce0 = tostring(os.time()), protocol.hex(core.random_bytes(16))
    local sig0 = protocol.hex(protocol.sign(b.secrets.k1, { key_id = "k1", method = "PUT", path = path .. "?seq=0",
      host = "127.0.0.1:" .. b.port, time = time0, nonce = nonce0, body_sha256 = core.sha256(a), chain = create_sig }))
    local sfar, rfar = b:signed("PUT", path .. "?seq=" .. protocol.STDIN_WINDOW, "x", { chain = sig0 })
    assert.same({ 409, "bad_sequence" }, { sfar, rfar.error }) -- beyond the window: refused at once
    local early = ferry.spawn(function() return table.pack(b:signed("PUT", path .. "?seq=1", c, { chain = sig0 })) end)
    ferry.sleep(100)
    assert.is_falsy(early.done) -- held until chunk 0 comes
    local sdup, rdup = b:signed("PUT", path .. "?seq=1", c, { chain = sig0 })
    assert.same({ 409, "bad_sequence" }, { sdup, rdup.error }) -- chunk 1 is already waiting
    local s0, r0 = b:signed("PUT", path .. "?seq=0", a, { chain = create_sig, time = time0, nonce = nonce0 })
    assert.equal(200, s0)
    assert.same({ true, #a }, { r0.accepted, r0.received })
    local got1 = ferry.wait(early)
    assert.equal(200, got1[1])
    assert.same({ true, #c }, { got1[2].accepted, got1[2].received })
    local sig1 = got1[4]
    local sbad, rbad = b:signed("PUT", path .. "?seq=1", c, { chain = sig0 })
    assert.same({ 409, "bad_sequence" }, { sbad, rbad.error }) -- already taken
    local schain, rchain = b:signed("PUT", path .. "?seq=2", d, { chain = create_sig }) -- chained to the wrong request
    assert.same({ 401, "bad_signature", "stdin chunk 2 is not chained to chunk 1" }, { schain, rchain.error,
      rchain.message })
    local s2, _, _, sig2 = b:signed("PUT", path .. "?seq=2&eof=1", d, { chain = sig1 })
    assert.equal(200, s2)
    local got = ferry.wait(output)
    assert.equal(tostring(#a + #c + #d) .. "\n" .. core.sha256(a .. c .. d) .. "  -\n", got[1])
    assert.equal(0, got[3].code)
    local s3, late = b:signed("PUT", path .. "?seq=3&eof=1", "more", { chain = sig2 })
    assert.equal(200, s3)
    assert.is_false(late.accepted) -- after EOF
  end)

  it("answers a chunk held for its turn when the command ends", function()
    local _, body = b:signed("POST", "/v1/leases", { name = "stdin-held" })
    local lease = body.lease.id
    local _, created = b:signed("POST", "/v1/leases/" .. lease .. "/execs", { script = "sleep 30", has_stdin = true })
    local path = "/v1/leases/" .. lease .. "/execs/" .. created.exec.id
    local output = ferry.spawn(function() return table.pack(read_output(b, lease, created.exec.id)) end)
    local held = ferry.spawn(function() return table.pack(b:signed("PUT", path .. "/stdin?seq=2", "x",
      { chain = string.rep("0", 64) })) end)
    ferry.sleep(100)
    assert.equal(200, (b:signed("DELETE", path)))
    local got = ferry.wait(held)
    assert.same({ 200, false, true }, { got[1], got[2].accepted, got[2].finished })
    assert.equal("killed by the client", ferry.wait(output)[3].error)
  end)

  it("kills an exec the client deletes", function()
    local _, body = b:signed("POST", "/v1/leases", { name = "kill" })
    local lease = body.lease.id
    local _, created = b:signed("POST", "/v1/leases/" .. lease .. "/execs", { script = "sleep 30" })
    local output = ferry.spawn(function() return table.pack(read_output(b, lease, created.exec.id)) end)
    ferry.sleep(200)
    local t0 = core.now_ms()
    local s, killed = b:signed("DELETE", "/v1/leases/" .. lease .. "/execs/" .. created.exec.id)
    assert.same({ 200, true }, { s, killed.killed })
    local got = ferry.wait(output)
    assert.equal("killed by the client", got[3].error)
    assert.is_true(core.now_ms() - t0 < 3000)
  end)

  it("answers unknown routes, other methods and prefixes with JSON errors", function()
    local s, e = b:signed("GET", "/v1/nothing")
    assert.same({ 404, "not_found" }, { s, e.error })
    assert.equal(405, (b:signed("PUT", "/v1/leases")))
    assert.equal(404, (b:signed("GET", "/v2/health")))
    assert.equal(404, (b:signed("GET", "/v1/leases/00ff")))
  end)

  it("writes one audit line per request without env values", function()
    local dir = helpers.tmpdir()
    local ab = server.start { extra = { "--audit-log", dir .. "/audit.jsonl" } }
    local sb = assert(ferry.open(ab:provider { issue = "I-9", run = "R-2" }))
    assert.equal(0, assert(sb:exec({ "true" }, { env = { TOKEN = "s3cr3t-value" } })).code)
    sb:close()
    ab:stop()
    local text = helpers.read_file(dir .. "/audit.jsonl")
    assert.is_nil(text:find("s3cr3t", 1, true))
    local routes, exit_seen = {}, false
    for line in text:gmatch("[^\n]+") do
      local rec = assert(protocol.decode(line))
      routes[#routes + 1] = rec.route
      assert.equal("k1", rec.key)
      if rec.route == "GET /v1/leases/:id/execs/:id/output" then
        exit_seen = rec.exit_code == 0 and rec.issue == "I-9" and rec.run == "R-2"
      end
      assert.is_number(rec.duration_ms)
      assert.is_number(rec.bytes_in)
    end
    assert.same({ "POST /v1/leases", "POST /v1/leases/:id/execs", "GET /v1/leases/:id/execs/:id/output" },
      routes)
    assert.is_true(exit_seen)
    helpers.rmtree(dir)
  end)
end)

describe("the bridge+http:// provider on " .. server.name, function()
  if server.missing then return pending(server.name .. ": " .. server.missing) end
  local b
  setup(function() b = server.start() end)
  teardown(function() b:stop() end)

  it("runs commands with exit codes, binary stdin and output, env and timeouts", function()
    local sb = assert(ferry.open(b:provider { issue = "P1" }))
    assert.matches("^bridge%+http://127%.0%.0%.1:%d+%?key_id=k1&key_file=.*&lease=%x+&issue=P1$", sb.name)
    assert.equal(sb.name, sb.spec)
    local r = assert(sb:exec("echo hi; echo oops >&2; exit 7"))
    assert.same({ 7, "hi\n", "oops\n", false }, { r.code, r.stdout, r.stderr, r.timed_out })
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local all = string.rep(table.concat(bytes), 9000) -- 2.3 MB: three stdin chunks
    local echoed = assert(sb:exec("cat", { stdin = all }))
    assert.is_true(echoed.stdout == all)
    local pieces, n = { "a", "", "bc", string.rep("d", 1500000) }, 0
    local fromfn = assert(sb:exec("wc -c", { stdin = function() n = n + 1; return pieces[n] end }))
    assert.equal("1500003\n", fromfn.stdout)
    local t0 = core.now_ms()
    local slow = assert(sb:exec("sleep 20", { timeout_ms = 300 }))
    assert.is_true(slow.timed_out)
    assert.is_true(core.now_ms() - t0 < 5000)
    local env = assert(sb:exec({ "sh", "-c", 'printf %s "$X"' }, { env = { X = "it's" } }))
    assert.equal("it's", env.stdout)
    sb:close()
  end)

  it("streams output: the first line arrives while the command still runs", function()
    local sb = assert(ferry.open(b:provider { name = "stream" }))
    local t0 = core.now_ms()
    local first_at
    local r = assert(sb:exec("echo first; sleep 1; echo second", { on_stdout = function(c)
      first_at = first_at or core.now_ms() - t0
      assert.is_truthy(c)
    end }))
    local total = core.now_ms() - t0
    assert.equal(0, r.code)
    assert.is_nil(r.stdout)
    assert.is_true(first_at < total - 700, string.format("first output at %.0f ms of %.0f", first_at, total))
    sb:close()
  end)

  it("moves files with write/read/put/get/ls", function()
    local sb = assert(ferry.open(b:provider { name = "files" }))
    local dir = sb.remote_dir_default
    local blob = helpers.random_bytes(300000)
    assert(sb:write(dir .. "/blob.bin", blob, { mode = tonumber("640", 8) }))
    assert.is_true(assert(sb:read(dir .. "/blob.bin")) == blob)
    local tmp = helpers.tmpdir()
    assert(sb:get(dir .. "/blob.bin", tmp .. "/back.bin"))
    assert.is_true(helpers.read_file(tmp .. "/back.bin") == blob)
    helpers.write_file(tmp .. "/up.txt", "uploaded")
    assert(sb:put(tmp .. "/up.txt", dir .. "/up.txt"))
    local names = {}
    for _, e in ipairs(assert(sb:ls(dir))) do names[#names + 1] = e.name .. ":" .. e.size end
    assert.same({ "blob.bin:300000", "up.txt:8" }, names)
    local _, err, code = sb:read(dir .. "/missing")
    assert.same({ dir .. "/missing: no such file", "ENOENT" }, { err, code })
    helpers.rmtree(tmp)
    sb:close()
  end)

  it("reaches the same lease with the same string, and a named lease with lease=ID", function()
    local a = assert(ferry.open(b:provider { issue = "same" }))
    local a2 = assert(ferry.open(b:provider { issue = "same" }))
    assert.equal(a.provider.lease_id, a2.provider.lease_id)
    local other = assert(ferry.open(b:provider { issue = "other" }))
    assert.not_equal(a.provider.lease_id, other.provider.lease_id)
    local pinned = assert(ferry.open(b:provider { lease = a.provider.lease_id }))
    assert.equal(a.provider.lease_id, pinned.provider.lease_id)
    assert(a:exec("echo shared > " .. a.remote_dir_default .. "/mark"))
    assert.equal("shared\n", assert(pinned:read(a.remote_dir_default .. "/mark")))
    assert(other.provider:release())
    local _, err, code = ferry.open(b:provider { lease = other.provider.lease_id })
    assert.same({ "lease " .. other.provider.lease_id .. " expired", "ESTALE" }, { err, code })
    for _, s in ipairs { a, a2, other, pinned } do s:close() end
  end)

  it("accepts session = true (the bridge keeps the sandbox's shell) and works from many tasks", function()
    local sb = assert(ferry.open(b:provider { name = "sess" }, { session = true }))
    local tasks = {}
    for i = 1, 10 do
      tasks[i] = ferry.spawn(function() return assert(sb:exec("echo " .. i)).stdout end)
    end
    local outs = ferry.wait(tasks)
    for i = 1, 10 do assert.equal(i .. "\n", outs[i]) end
    sb:close()
  end)

  it("lists the leases of a state dir (ferry bridge leases)", function()
    if b.kind == "worker" then return pending("the Worker keeps its leases in Durable Object storage") end
    local sb = assert(ferry.open(b:provider { issue = "LIST-1" }))
    local res = assert(ferry.proc.run { argv = { helpers.ferry_bin, "bridge", "leases", "--state-dir",
      b.dir .. "/state" } })
    assert.equal(0, res.code)
    assert.matches(sb.provider.lease_id .. "  active  k1  auto%-%x+  LIST%-1  %-  %d+[smh]  cmd:env", res.stdout)
    local json = assert(ferry.proc.run { argv = { helpers.ferry_bin, "bridge", "leases", "--state-dir",
      b.dir .. "/state", "--json" } })
    local found = false
    for line in json.stdout:gmatch("[^\n]+") do
      local l = assert(protocol.decode(line))
      found = found or (l.id == sb.provider.lease_id and l.issue == "LIST-1" and l.owner == "k1")
    end
    assert.is_true(found)
    sb:close()
  end)
end)
end

describe("bridge frames", function()
  local secret, seed = "s" .. string.rep("k", 40), core.random_bytes(32)
  local function frames(list, s)
    local w = protocol.frame_writer(secret, s or seed)
    local parts = {}
    for _, f in ipairs(list) do parts[#parts + 1] = w:frame(f[1], f[2]) end
    return parts
  end
  local function read(bytes, pieces)
    local got = {}
    local r = protocol.frame_reader(secret, seed, function(k, p) got[#got + 1] = k .. p end)
    local step = pieces or #bytes
    for i = 1, #bytes, step do
      local ok, err = r:push(bytes:sub(i, i + step - 1))
      if not ok then return nil, err end
    end
    return got
  end

  it("reads frames split anywhere", function()
    local bytes = table.concat(frames { { "o", "hello" }, { "k", "" }, { "e", string.rep("z", 70000) }, { "x", "{}" } })
    local whole = assert(read(bytes))
    assert.same(whole, assert(read(bytes, 1)))
    assert.same(whole, assert(read(bytes, 4097)))
    assert.same({ "ohello", "k", "e" .. string.rep("z", 70000), "x{}" }, whole)
  end)

  it("refuses an altered, reordered, spliced or foreign frame", function()
    local f = frames { { "o", "one" }, { "o", "two" }, { "x", "{}" } }
    local altered = f[1]:sub(1, 6) .. "X" .. f[1]:sub(8) .. f[2] .. f[3]
    local _, err = read(altered)
    assert.equal("frame 1 failed its MAC check (a spliced, reordered or altered stream)", err)
    local _, err2 = read(f[2] .. f[1] .. f[3])
    assert.equal("frame 1 failed its MAC check (a spliced, reordered or altered stream)", err2)
    local _, err3 = read(f[1] .. f[3])
    assert.equal("frame 2 failed its MAC check (a spliced, reordered or altered stream)", err3)
    local foreign = frames({ { "o", "one" } }, core.random_bytes(32))
    local _, err4 = read(foreign[1])
    assert.equal("frame 1 failed its MAC check (a spliced, reordered or altered stream)", err4)
    local _, err5 = read("Q\0\0\0\1xxxxx")
    assert.equal("bad frame header at frame 1", err5)
  end)
end)
