-- ferry.http: the libcurl client and the libh2o server on one libuv loop, over real loopback sockets.
local ferry = require "ferry"
local core = require "ferry.core"
local http = require "ferry.http"
local helpers = require "support.helpers"

local function all_bytes(n)
  local t = {}
  for i = 1, n do t[i] = string.char((i * 7 + (i >> 8)) % 256) end
  return table.concat(t)
end

-- A server whose handler is `routes[path](req, res)`; unknown paths get 404.
local function serve(routes, opts)
  opts = opts or {}
  opts.port = 0
  local seen = {}
  local srv = assert(http.listen(opts, function(req, res)
    seen[#seen + 1] = req
    local route = routes[req.path:match("^[^?]*")]
    if route then return route(req, res) end
    res:respond(404, { ["content-type"] = "text/plain" }, "no route\n")
  end))
  return srv, "http://127.0.0.1:" .. srv.port, seen
end

-- Close a server with no connection left behind: the client drops its kept-alive connections, the server
-- sees them end (later specs count descriptors, which must not move under them).
local function finish(srv)
  assert.is_true(http.close_idle())
  local deadline = core.now_ms() + 3000
  while srv:connections() > 0 and core.now_ms() < deadline do ferry.sleep(10) end
  assert.equal(0, srv:connections())
  srv:close()
end

-- Run a shell script (bash: /dev/tcp) and return its stdout.
local function bash(script)
  local res = assert(ferry.proc.run { argv = { "bash", "-c", script }, timeout_ms = 20000 })
  return res.stdout, res
end

describe("ferry.http", function()
  it("carries method, path with query, Host, headers and a binary body both ways", function()
    local payload = all_bytes(1024 * 1024)
    local srv, base, seen = serve {
      ["/echo"] = function(req, res)
        res:respond(201, { ["content-type"] = "application/octet-stream", ["x-method"] = req.method,
          ["x-got"] = req.headers["x-one"] or "" }, req.body)
      end,
    }
    local res = assert(http.request { url = base .. "/echo?a=1&b=%2F", method = "PUT", body = payload,
      headers = { "X-One: two", "Content-Type: application/octet-stream" } })
    assert.equal(201, res.status)
    assert.equal("PUT", res.headers["x-method"])
    assert.equal("two", res.headers["x-got"])
    assert.equal(#payload, tonumber(res.headers["content-length"]))
    assert.is_true(res.body == payload)
    assert.equal("/echo?a=1&b=%2F", seen[1].path)
    assert.equal("127.0.0.1:" .. srv.port, seen[1].host)
    assert.equal("two", seen[1].headers["x-one"])
    assert.is_true(seen[1].header_bytes > #"/echo?a=1&b=%2F")
    local res2 = assert(http.request { url = base .. "/nothing" })
    assert.equal(404, res2.status)
    assert.equal("no route\n", res2.body)
    assert.equal("GET", seen[2].method)
    assert.equal("", seen[2].body)
    finish(srv)
  end)

  it("sends the path byte for byte as given (no dot-segment squashing)", function()
    local srv, base, seen = serve {}
    assert(http.request { url = base .. "/a/../b/./c" })
    assert.equal("/a/../b/./c", seen[1].path)
    finish(srv)
  end)

  it("streams a response: the first chunk arrives while the handler still runs", function()
    local srv, base = serve {
      ["/stream"] = function(_, res)
        assert(res:start(200, { ["content-type"] = "text/plain" }))
        assert(res:write("first\n"))
        ferry.sleep(400)
        assert(res:write("second\n"))
        res:finish()
      end,
    }
    local t0 = core.now_ms()
    local arrivals, status = {}, nil
    local res = assert(http.request { url = base .. "/stream",
      on_headers = function(s) status = s end,
      on_data = function(c) arrivals[#arrivals + 1] = { at = core.now_ms() - t0, data = c } end })
    local total = core.now_ms() - t0
    assert.equal(200, status)
    assert.equal(200, res.status)
    assert.is_nil(res.body)
    assert.equal("first\n", arrivals[1].data)
    assert.is_true(arrivals[1].at < total - 300, "the first chunk came at the end")
    local joined = {}
    for _, a in ipairs(arrivals) do joined[#joined + 1] = a.data end
    assert.equal("first\nsecond\n", table.concat(joined))
    finish(srv)
  end)

  -- The largest buffer the kernel may give one TCP socket (the third field of /proc/sys/net/ipv4/NAME).
  local function kernel_max(name)
    local f = io.open("/proc/sys/net/ipv4/" .. name)
    local text = f and f:read("a") or ""
    if f then f:close() end
    return math.tointeger(tonumber(text:match("(%d+)%s*$") or "")) or 4 * 1024 * 1024
  end

  it("gates a streamed response on the client: a slow reader holds the writer back", function()
    local written = 0
    local chunk = string.rep("z", 64 * 1024)
    local srv, base = serve {
      ["/flood"] = function(_, res)
        res:start(200, {})
        while written < 256 * 1024 * 1024 do
          if not res:write(chunk) then return end
          written = written + #chunk
        end
        res:finish()
      end,
    }
    -- curl reads at 200 kB/s for 2 s; the server may fill the kernel's socket buffers (whose autotuned
    -- maximum is tcp_rmem + tcp_wmem: 36 MiB on some machines) and a little more, never the 256 MiB it has
    bash("curl -s --limit-rate 200k --max-time 2 -o /dev/null " .. base .. "/flood; true")
    local bound = kernel_max("tcp_rmem") + kernel_max("tcp_wmem") + 16 * 1024 * 1024
    assert.is_true(written < bound, "wrote " .. written .. " bytes to a client reading 400 kB (bound " .. bound .. ")")
    assert.is_true(written > 0)
    finish(srv)
  end)

  it("tells the handler when the client goes away mid-stream", function()
    local closed_at, write_err
    local srv, base = serve {
      ["/forever"] = function(_, res)
        res:on_close(function() closed_at = core.now_ms() end)
        res:start(200, {})
        while true do
          local ok, err = res:write("tick\n")
          if not ok then
            write_err = err
            return
          end
          ferry.sleep(20)
        end
      end,
    }
    local req
    ferry.spawn(function() ferry.sleep(200); req:abort("enough") end)
    local got = 0
    local res, err, code = http.request { url = base .. "/forever", on_request = function(r) req = r end,
      on_data = function(c) got = got + #c end }
    assert.is_nil(res)
    assert.equal("enough", err)
    assert.equal("ECANCELED", code)
    ferry.sleep(500)
    assert.is_true(got > 0)
    assert.is_not_nil(closed_at)
    assert.equal("closed", write_err)
    finish(srv)
  end)

  it("answers 413 to a body over max_body, and h2o's other early errors, with a JSON body", function()
    local srv, base = serve({ ["/up"] = function(_, res) res:respond(200, {}, "ok") end }, { max_body = 1000 })
    assert.equal(200, assert(http.request { url = base .. "/up", body = string.rep("a", 1000) }).status)
    local res = assert(http.request { url = base .. "/up", body = string.rep("a", 1001) })
    assert.same({ 413, "application/json", '{"error":"too_large","message":"the request\'s body is over 1000 bytes"}' },
      { res.status, res.headers["content-type"], res.body })
    local odd = assert(http.request { url = base .. "/up", body = "x", headers = { "Expect: something-else" } })
    assert.same({ 417, "application/json", "bad_request" }, { odd.status, odd.headers["content-type"],
      require("cjson").decode(odd.body).error })
    local mine = assert(http.request { url = base .. "/nowhere" }) -- a handler's own answer is left alone
    assert.same({ 404, "text/plain", "no route\n" }, { mine.status, mine.headers["content-type"], mine.body })
    finish(srv)
  end)

  it("disconnects a client that sends nothing or too slowly (idle timeout)", function()
    local srv = serve({}, { idle_timeout_ms = 300 })
    local out = bash(string.format([[
      exec 3<>/dev/tcp/127.0.0.1/%d
      t0=$(date +%%s%%N)
      printf 'GET / HTTP/1.1\r\nHo' >&3
      cat <&3 >/dev/null
      echo $(( ($(date +%%s%%N) - t0) / 1000000 ))]], srv.port))
    local ms = tonumber(out)
    assert.is_true(ms >= 250 and ms < 3000, "closed after " .. tostring(ms) .. " ms")
    finish(srv)
  end)

  it("closes connections over max_connections at once", function()
    local srv, base = serve({ ["/ok"] = function(_, res) res:respond(200, {}, "ok") end }, { max_connections = 1 })
    local out = bash(string.format([[
      trap '' PIPE
      exec 3<>/dev/tcp/127.0.0.1/%d
      sleep 0.2
      exec 4<>/dev/tcp/127.0.0.1/%d
      printf 'GET /ok HTTP/1.1\r\nHost: x\r\n\r\n' >&4 2>/dev/null
      timeout 2 cat <&4 | head -c 100; echo "rc=$?"]], srv.port, srv.port))
    assert.equal("rc=0\n", out) -- EOF at once, nothing answered
    ferry.sleep(100)
    assert.equal(200, assert(http.request { url = base .. "/ok" }).status) -- the first one went away
    finish(srv)
  end)

  it("serves many concurrent requests from one loop", function()
    local srv, base = serve { ["/slow"] = function(req, res)
      ferry.sleep(50)
      res:respond(200, {}, req.path)
    end }
    local tasks = {}
    for i = 1, 50 do
      tasks[i] = ferry.spawn(function() return assert(http.request { url = base .. "/slow?i=" .. i }).body end)
    end
    local t0 = core.now_ms()
    local bodies = ferry.wait(tasks)
    assert.is_true(core.now_ms() - t0 < 2000)
    for i = 1, 50 do assert.equal("/slow?i=" .. i, bodies[i]) end
    finish(srv)
  end)

  it("reports failures as nil, message, code", function()
    local _, err, code = http.request { url = "http://127.0.0.1:1/" }
    assert.equal("ECONNREFUSED", code)
    assert.matches("127.0.0.1", err)
    local srv, base = serve { ["/hang"] = function(_, res) ferry.sleep(2000); res:respond(200, {}, "") end }
    local t0 = core.now_ms()
    local _, terr, tcode = http.request { url = base .. "/hang", timeout_ms = 200 }
    assert.equal("ETIMEDOUT", tcode)
    assert.matches("timed out", terr)
    assert.is_true(core.now_ms() - t0 < 1500)
    local _, berr, bcode = http.request { url = base .. "/big", max_body = 3 }
    assert.equal("EFBIG", bcode)
    assert.equal("the response is over the 3 byte limit", berr)
    finish(srv)
    assert.has_error(function() http.request { url = 3 } end, "http_request: opts.url must be a string, got number")
    assert.has_error(function() http.request { url = "http://x/", headers = { "A: b\r\nC: d" } } end,
      "http_request: opts.headers[1] contains a line break or a NUL byte")
  end)

  it("speaks HTTPS with a certificate the client trusts, and refuses one it does not", function()
    local dir = helpers.tmpdir()
    helpers.sh(string.format("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem "
      .. "-days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null", dir, dir))
    local srv = assert(http.listen({ port = 0, tls_cert = dir .. "/cert.pem", tls_key = dir .. "/key.pem" },
      function(req, res) res:respond(200, {}, "secure " .. req.path) end))
    local url = "https://127.0.0.1:" .. srv.port .. "/x"
    local res = assert(http.request { url = url, cainfo = dir .. "/cert.pem" })
    assert.equal("secure /x", res.body)
    local _, _, code = http.request { url = url, cainfo = "/etc/ssl/certs/ca-certificates.crt" }
    assert.equal("ETLS", code)
    local _, lerr, lcode = http.listen({ port = 0, tls_cert = dir .. "/nope.pem", tls_key = dir .. "/key.pem" },
      function() end)
    assert.equal("ETLS", lcode)
    assert.matches("nope.pem", lerr)
    finish(srv)
    helpers.rmtree(dir)
  end)

  it("refuses a port in use and an address that is not IP", function()
    local srv = serve {}
    local _, err, code = http.listen({ port = srv.port }, function() end)
    assert.equal("EADDRINUSE", code)
    assert.equal("listen 127.0.0.1:" .. srv.port .. ": address already in use", err)
    local _, err2, code2 = http.listen({ host = "localhost", port = 0 }, function() end)
    assert.equal("EINVAL", code2)
    assert.equal("listen localhost:0: not an IP address", err2)
    finish(srv)
  end)
end)
