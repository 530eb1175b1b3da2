--- ferry.bridge.client: the client side of the bridge protocol (README "Bridge"): signed requests, checked
-- responses, errors that name the bridge and the reason, and an exec whose stdin goes as chained chunk
-- requests while its output comes back as one stream of chained frames.
local core = require "ferry.core"
local task = require "ferry.task"
local http = require "ferry.http"
local protocol = require "ferry.bridge.protocol"

local M = {}

local STALL_MS = 30000          -- a stream with nothing for this long (keepalives come every second) is dead
local REQUEST_TIMEOUT_MS = 120000
local DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024
local COLLECT_EVERY = 8 * 1024 * 1024

local Client = {}
Client.__index = Client

--- A client. opts: scheme ("http"/"https"), authority ("host:port" as in the URL; the signed Host), prefix
--- ("" or "/path"), key_id, secret, cacert.
---@param opts table
---@return table
function M.new(opts)
  local c = setmetatable({}, Client)
  for k, v in pairs(opts) do c[k] = v end
  c.label = "bridge " .. opts.scheme .. "://" .. opts.authority .. (opts.prefix or "")
  c.prefix = opts.prefix or ""
  return c
end

-- The headers of a signed request, and its signature (raw and hex).
function Client:signed(method, path, body, chain, body_sha256)
  local time, nonce = tostring(os.time()), protocol.hex(core.random_bytes(16))
  local sig = protocol.sign(self.secret, { key_id = self.key_id, method = method, path = path, host = self.authority,
    time = time, nonce = nonce, body_sha256 = body_sha256 or core.sha256(body), chain = chain })
  local sig_hex = protocol.hex(sig)
  local headers = { "Host: " .. self.authority, "X-Ferry-Key: " .. self.key_id, "X-Ferry-Time: " .. time,
    "X-Ferry-Nonce: " .. nonce, "X-Ferry-Signature: " .. sig_hex, "Expect:" }
  if chain then headers[#headers + 1] = "X-Ferry-Chain: " .. chain end
  return headers, sig, sig_hex
end

local AUTH_MESSAGES = {
  bad_signature = "signature rejected (check the key)",
  missing_auth = "signature rejected (check the key)",
  bad_nonce = "signature rejected (check the key)",
  replayed_nonce = "request rejected as a replay",
}

--- The error for a response that is not a success: nil, message, code.
function Client:error_of(status, body, lease)
  local e = protocol.decode(body or "") or {}
  local code, message = protocol.field(e, "error"), protocol.field(e, "message") or tostring(body):sub(1, 200)
  if status == 401 and code == "unknown_key" then
    return nil, self.label .. ": key '" .. self.key_id .. "' is not known to the bridge (check key_id)", "EACCES"
  elseif status == 401 and code == "stale_time" then
    return nil, self.label .. ": request time rejected: " .. message .. " (check both clocks)", "EACCES"
  elseif status == 401 then
    return nil, self.label .. ": " .. (AUTH_MESSAGES[code] or message), "EACCES"
  elseif status == 403 and code == "wrong_host" then
    return nil, self.label .. ": host rejected: " .. message .. " (check the URL or the bridge's --public-host)",
      "EACCES"
  elseif status == 410 then
    return nil, "lease " .. tostring(lease) .. " expired", "ESTALE"
  elseif status == 404 and code == "lease_not_found" then
    return nil, "lease " .. tostring(lease) .. " not found on " .. self.label, "ENOENT"
  elseif status == 413 then
    return nil, self.label .. ": request too large (" .. message .. ")", "EFBIG"
  elseif status == 429 then
    return nil, self.label .. ": busy (" .. message .. ")", "EBUSY"
  end
  return nil, string.format("%s: %s (HTTP %d%s)", self.label, message, status, code and (" " .. code) or ""),
    "EIO"
end

function Client:url(path)
  return self.scheme .. "://" .. self.authority .. path
end

function Client:transport_error(err, code)
  if code == "ECONNREFUSED" or code == "ENOTFOUND" or code == "ETIMEDOUT" or code == "ETLS" then
    return nil, "bridge unreachable: " .. self.scheme .. "://" .. self.authority .. ": " .. tostring(err), code
  end
  return nil, self.label .. ": " .. tostring(err), code
end

--- A signed request, ready to send: its path, body text, headers and signature (hex). `rel` is below /v1
--- ("/leases"); body: a table (JSON), a string (raw bytes), or nil. opts: chain, body_sha256 (the body's hash
--- when already known).
---@return table
function Client:prepare(method, rel, body, opts)
  opts = opts or {}
  local path = self.prefix .. "/" .. protocol.VERSION .. rel
  local text = type(body) == "table" and protocol.encode(body) or body or ""
  local headers, _, sig_hex = self:signed(method, path, text, opts.chain, opts.body_sha256)
  headers[#headers + 1] = "Content-Type: " .. (type(body) == "string" and "application/octet-stream"
    or "application/json")
  return { method = method, path = path, text = text, has_body = body ~= nil, headers = headers, sig_hex = sig_hex }
end

--- Send a prepared request. opts: lease (for error messages), timeout_ms. Returns the decoded JSON body,
--- status, signature hex, or nil, message, code.
---@return table|nil body, integer|string status_or_err, string|nil
function Client:send(p, opts)
  opts = opts or {}
  local res, err, code = http.request { url = self:url(p.path), method = p.method, headers = p.headers,
    body = p.has_body and p.text or nil, timeout_ms = opts.timeout_ms or REQUEST_TIMEOUT_MS, cainfo = self.cacert }
  if not res then return self:transport_error(err, code) end
  if res.status < 200 or res.status > 299 then return self:error_of(res.status, res.body, opts.lease) end
  local given = res.headers["x-ferry-response-signature"] or ""
  if not core.hmac_equal(given, protocol.sign_response(self.secret, p.sig_hex, res.status, res.body)) then
    return nil, self.label .. ": the response failed its signature check (is this the bridge? check the key)",
      "EACCES"
  end
  local decoded = protocol.decode(res.body)
  if not decoded then return nil, self.label .. ": the response is not JSON", "EIO" end
  return decoded, res.status, p.sig_hex
end

--- A signed request (prepare, then send). `rel` is below /v1 ("/leases"); body: a table (JSON), a string, or
--- nil. opts: chain, lease (for error messages), timeout_ms, body_sha256. Returns the decoded JSON body,
--- status, signature hex, or nil, message, code.
---@return table|nil body, integer|string status_or_err, string|nil
function Client:call(method, rel, body, opts)
  return self:send(self:prepare(method, rel, body, opts), opts)
end

-- ---- exec ----

-- Collects one output stream: to a callback, or kept up to max bytes.
local function sink(emit, max)
  local s = { parts = {}, size = 0, truncated = false }
  function s.push(data)
    if emit then return emit(data) end
    local room = max - s.size
    if #data > room then
      s.truncated = true
      data = data:sub(1, room)
    end
    s.parts[#s.parts + 1] = data
    s.size = s.size + #data
  end
  function s.text() return not emit and table.concat(s.parts) or nil end
  return s
end

-- Read the output stream of an exec. Returns the exit record (the decoded exit frame) and the sinks, or
-- nil, message, code.
function Client:read_output(lease, exec_id, out, err)
  local path = self.prefix .. "/" .. protocol.VERSION .. "/leases/" .. lease .. "/execs/" .. exec_id .. "/output"
  local headers, sig = self:signed("GET", path, "")
  local exit, problem, status, error_body, received = nil, nil, nil, {}, 0
  local handle
  local reader = protocol.frame_reader(self.secret, sig, function(kind, payload)
    if exit then problem = "data after the exit frame" return end
    if kind == protocol.STDOUT then out.push(payload)
    elseif kind == protocol.STDERR then err.push(payload)
    elseif kind == protocol.EXIT then exit = protocol.decode(payload) or { error = "a malformed exit frame" } end
  end)
  local res, rerr, rcode = http.request { url = self:url(path), headers = headers, cainfo = self.cacert,
    stall_timeout_ms = STALL_MS, on_request = function(h) handle = h end,
    on_headers = function(s) status = s end,
    on_data = function(c)
      if status ~= 200 then error_body[#error_body + 1] = c return end
      received = received + #c
      if received >= COLLECT_EVERY then -- a long stream makes garbage fast: collect as it goes, bounding memory
        received = 0
        collectgarbage()
      end
      local ok, perr = pcall(reader.push, reader, c)
      if not ok or not perr then problem = problem or (ok and reader.err or tostring(perr)) end
      if problem then handle:abort(problem) end
    end }
  if problem then return nil, self.label .. ": exec " .. exec_id .. " output: " .. problem, "EIO" end
  if not res then return self:transport_error(rerr, rcode) end
  if res.status ~= 200 then return self:error_of(res.status, table.concat(error_body), lease) end
  if not exit then
    return nil, self.label .. ": exec " .. exec_id .. " output ended before its exit frame (connection lost)",
      "EIO"
  end
  return exit
end

-- Stdin cut into chunks of at most MAX_CHUNK, each hashed as its pieces arrive (while earlier chunks
-- travel), so that sending a chunk costs no hashing on the critical path.
local function chunker()
  local c = { ready = {}, parts = {}, size = 0, hasher = core.sha256_new() }
  function c:cut() -- the chunk being filled is complete (it may be empty: the EOF request)
    self.ready[#self.ready + 1] = { data = table.concat(self.parts), sha256 = self.hasher:hexdigest() }
    self.parts, self.size, self.hasher = {}, 0, core.sha256_new()
  end
  function c:add(data)
    local at = 1
    while at <= #data do
      local take = math.min(#data - at + 1, protocol.MAX_CHUNK - self.size)
      local piece = (at == 1 and take == #data) and data or data:sub(at, at + take - 1)
      self.parts[#self.parts + 1], self.size = piece, self.size + take
      self.hasher:update(piece)
      at = at + take
      if self.size == protocol.MAX_CHUNK then self:cut() end
    end
  end
  return c
end

-- The producer: a task reading `stdin` (a function) into the chunker, at most READ_AHEAD chunks ahead of the
-- sender.
local READ_AHEAD = 2
local function produce(q, stdin, notify)
  local ok, perr = pcall(function()
    while not q.stop do
      local c = stdin()
      if c == nil then break end
      if type(c) ~= "string" then error("the stdin function returned a " .. type(c), 0) end
      q:add(c)
      notify("sender")
      while #q.ready >= READ_AHEAD and not q.stop do task.await(function(w) q.producer = w end) end
    end
  end)
  if not ok then q.err = perr end
  q.eof = true
  notify("sender")
end

-- Send stdin as chained chunk requests, up to protocol.STDIN_WINDOW of them in flight: chunk N's signature
-- is known when it is signed, so chunk N+1 is signed and sent before N is answered (the server feeds them to
-- the command in order). Returns true or nil, message, code.
function Client:send_stdin(lease, exec_id, stdin, chain)
  local q = chunker()
  local function notify(which) local w = q[which]; q[which] = nil; if w then w() end end
  if type(stdin) == "string" then
    q:add(stdin)
    q.eof = true
  else
    task.spawn(produce, q, stdin, notify)
  end
  local path = "/leases/" .. lease .. "/execs/" .. exec_id .. "/stdin"
  local seq, inflight, failure = 0, 0, nil
  local function sent(body, err, code)
    inflight = inflight - 1
    if not body then failure = failure or { err, code } end
    if (not body or body.accepted == false) and not q.stop then
      q.stop = true
      notify("producer")
    end
    notify("sender")
  end
  while not q.stop do
    while not q.stop and (inflight >= protocol.STDIN_WINDOW or (#q.ready == 0 and q.size == 0 and not q.eof)) do
      task.await(function(w) q.sender = w end)
    end
    if q.stop then break end
    if q.err then
      failure = { "stdin: " .. tostring(q.err), "EIO" }
      break
    end
    if #q.ready == 0 then q:cut() end
    local chunk = table.remove(q.ready, 1)
    local last = q.eof and #q.ready == 0 and q.size == 0
    notify("producer")
    local req = self:prepare("PUT", path .. "?seq=" .. seq .. (last and "&eof=1" or ""), chunk.data,
      { chain = chain, body_sha256 = chunk.sha256 })
    chain, seq, inflight = req.sig_hex, seq + 1, inflight + 1
    task.spawn(function() sent(self:send(req, { lease = lease })) end)
    if last then q.stop = true end
  end
  notify("producer")
  while inflight > 0 do task.await(function(w) q.sender = w end) end
  if failure then return nil, failure[1], failure[2] end
  return true
end

--- Run a command in a lease and return what ferry.proc.run returns: {code, signal, timed_out, stdout, stderr,
--- truncated, started_at, duration_ms}, or nil, message, code. spec: script or argv, env, cwd. popts: stdin
--- (string or reader), timeout_ms, kill_grace_ms, max_output, on_stdout, on_stderr, on_spawn.
---@param lease string
---@param spec table
---@param popts table
function Client:exec(lease, spec, popts)
  return task.block(function()
    local started, started_at = core.now_ms(), core.time_ms()
    local body = { script = spec.script, argv = spec.argv, env = spec.env, cwd = spec.cwd,
      timeout_ms = popts.timeout_ms, kill_grace_ms = popts.kill_grace_ms, has_stdin = popts.stdin ~= nil }
    local created, err, chain = self:call("POST", "/leases/" .. lease .. "/execs", body, { lease = lease })
    if not created then return nil, err, chain end
    local exec_id = created.exec and created.exec.id
    if type(exec_id) ~= "string" or not exec_id:match(protocol.ID_PATTERN) then
      return nil, self.label .. ": the bridge answered the exec without an id", "EIO"
    end
    if popts.on_spawn then popts.on_spawn(0, started_at) end
    local max = popts.max_output or DEFAULT_MAX_OUTPUT
    local out, errs = sink(popts.on_stdout, max), sink(popts.on_stderr, max)
    local reading = task.spawn(function() return self:read_output(lease, exec_id, out, errs) end)
    if popts.stdin ~= nil then
      local sent, serr, scode = self:send_stdin(lease, exec_id, popts.stdin, chain)
      if not sent then
        self:call("DELETE", "/leases/" .. lease .. "/execs/" .. exec_id, nil, { lease = lease })
        task.wait_one(reading)
        return nil, serr, scode
      end
    end
    local exit, rerr, rcode = task.wait_one(reading)
    if not exit then return nil, rerr, rcode end
    local failure = protocol.field(exit, "error")
    if failure then return nil, self.label .. ": exec: " .. tostring(failure), "EIO" end
    return { code = protocol.int(protocol.field(exit, "code")), signal = protocol.field(exit, "signal"),
      timed_out = exit.timed_out == true, stdout = out.text(), stderr = errs.text(),
      truncated = out.truncated or errs.truncated, started_at = started_at, duration_ms = core.now_ms() - started }
  end)
end

return M
