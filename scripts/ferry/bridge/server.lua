--- ferry.bridge.server: `ferry bridge serve` (README "Bridge"). Every request is verified (ferry.bridge.auth)
-- and routed; leases live in ferry.bridge.leases, commands in ferry.bridge.execs; one JSON audit line per
-- request. Runs on the engine's loop: each request is a task.
local core = require "ferry.core"
local ferry = require "ferry"
local http = require "ferry.http"
local protocol = require "ferry.bridge.protocol"
local auth = require "ferry.bridge.auth"
local leases = require "ferry.bridge.leases"
local execs = require "ferry.bridge.execs"

local M = {}

M.DEFAULTS = { lease_ttl_s = 3600, max_leases = 100, idle_timeout_ms = 10000, max_requests = 512,
  max_connections = 1024, max_header = 16 * 1024 }
local EXEC_LINGER_MS = 60000 -- a finished exec still answers its late stdin chunks this long

local Server = {}
Server.__index = Server

local function respond(ctx, status, body)
  local text = protocol.encode(body)
  local headers = { ["content-type"] = "application/json" }
  if ctx.auth then headers["x-ferry-response-signature"] = protocol.sign_response(ctx.auth.secret, ctx.auth.sig_hex,
    status, text) end
  ctx.status = status
  ctx.bytes_out = #text
  ctx.res:respond(status, headers, text)
end

local function fail(ctx, status, code, message)
  respond(ctx, status, { error = code, message = message })
end

-- "/v1/leases/ID/execs/EID/stdin" -> route name and its parameters; nil for no route.
local ROUTES = {
  { "GET", "^/health$", "health" },
  { "POST", "^/leases$", "acquire" },
  { "GET", "^/leases$", "list" },
  { "GET", "^/leases/(%x+)$", "get" },
  { "POST", "^/leases/(%x+)/renew$", "renew" },
  { "DELETE", "^/leases/(%x+)$", "release" },
  { "POST", "^/leases/(%x+)/execs$", "exec" },
  { "GET", "^/leases/(%x+)/execs/(%x+)/output$", "output" },
  { "PUT", "^/leases/(%x+)/execs/(%x+)/stdin$", "stdin" },
  { "DELETE", "^/leases/(%x+)/execs/(%x+)$", "kill" },
}

function Server:route(req)
  local path, query = req.path:match("^([^?]*)%??(.*)$")
  local base = self.prefix .. "/" .. protocol.VERSION
  if path:sub(1, #base + 1) ~= base .. "/" then return nil end
  local rest, other_method = path:sub(#base + 1), false
  for _, r in ipairs(ROUTES) do
    local a, b = rest:match(r[2])
    if a and r[1] ~= req.method then
      other_method = true
    elseif a then
      local has_id = r[2]:find("(", 1, true) ~= nil
      return { name = r[3], lease_id = has_id and a or nil, exec_id = b, query = query,
        pattern = req.method .. " /" .. protocol.VERSION .. r[2]:gsub("[%^%$]", ""):gsub("%(%%x%+%)", ":id") }
    end
  end
  return nil, other_method and "method" or nil
end

-- ---- route handlers: fn(self, ctx, route) ----

local H = {}

function H.health(self, ctx)
  respond(ctx, 200, { ok = true, protocol = protocol.VERSION, server = "ferry " .. core.version, time = os.time(),
    public_host = self.public_host, max_chunk = protocol.MAX_CHUNK })
end

local function label(v)
  if v == nil or v == protocol.null then return nil end
  if type(v) ~= "string" or #v > 128 or not v:match(protocol.NAME_PATTERN) then return false end
  return v
end

function H.acquire(self, ctx)
  local body = protocol.decode(ctx.req.body)
  if not body then return fail(ctx, 400, "bad_request", "the body must be a JSON object") end
  local f = {}
  for _, k in ipairs { "name", "issue", "run" } do
    f[k] = label(body[k])
    if f[k] == false then return fail(ctx, 400, "bad_request", k .. " must be 1-128 of [A-Za-z0-9._-]") end
  end
  local ttl = protocol.field(body, "ttl_s")
  if ttl ~= nil and (not protocol.int(ttl) or ttl < 1) then
    return fail(ctx, 400, "bad_request", "ttl_s must be a whole number of seconds >= 1")
  end
  f.ttl_s = protocol.int(ttl)
  local status, lease = 201, f.name and self.store:find_name(ctx.auth.key_id, f.name)
  if lease then
    status = 200
    self.store:touch(lease, ttl)
  else
    local err, code
    lease, err, code = self.store:create(ctx.auth.key_id, f)
    if not lease then return fail(ctx, code == "too_many_leases" and 429 or 500, code, err) end
  end
  ctx.lease = lease
  local live, serr = self.store:sandbox(lease)
  if not live then
    if status == 201 then self.store:finish(lease, "released") end
    return fail(ctx, 503, "sandbox_unavailable", "the sandbox did not open: " .. tostring(serr))
  end
  local out = self.store:public(lease)
  out.recovered = status == 200
  respond(ctx, status, { lease = out })
end

function H.list(self, ctx)
  local out = {}
  for _, l in ipairs(self.store:list(ctx.auth.key_id)) do out[#out + 1] = self.store:public(l) end
  respond(ctx, 200, { leases = setmetatable(out, { __jsontype = "array" }) })
end

function H.get(self, ctx)
  respond(ctx, 200, { lease = self.store:public(ctx.lease) })
end

function H.renew(self, ctx)
  local body = ctx.req.body ~= "" and protocol.decode(ctx.req.body) or {}
  if not body then return fail(ctx, 400, "bad_request", "the body must be a JSON object") end
  local ttl = protocol.field(body, "ttl_s")
  if ttl ~= nil and (not protocol.int(ttl) or ttl < 1) then
    return fail(ctx, 400, "bad_request", "ttl_s must be a whole number of seconds >= 1")
  end
  self.store:touch(ctx.lease, protocol.int(ttl) or ctx.lease.ttl_s)
  respond(ctx, 200, { lease = self.store:public(ctx.lease) })
end

function H.release(self, ctx)
  self.store:finish(ctx.lease, "released")
  respond(ctx, 200, { released = true, lease = self.store:public(ctx.lease) })
end

local function exec_spec(body)
  local spec = { has_stdin = body.has_stdin == true, env = protocol.field(body, "env"),
    cwd = protocol.field(body, "cwd"), timeout_ms = protocol.field(body, "timeout_ms"),
    kill_grace_ms = protocol.field(body, "kill_grace_ms") }
  local argv, script = protocol.field(body, "argv"), protocol.field(body, "script")
  if (argv == nil) == (script == nil) then return nil, "give exactly one of argv (a list) and script (a string)" end
  if script ~= nil and type(script) ~= "string" then return nil, "script must be a string" end
  if argv ~= nil then
    if type(argv) ~= "table" or #argv == 0 then return nil, "argv must be a non-empty list of strings" end
    for _, a in ipairs(argv) do
      if type(a) ~= "string" or a:find("%z") then return nil, "argv must be a list of strings without NUL" end
    end
  end
  spec.argv, spec.script = argv, script
  if spec.env ~= nil then
    if type(spec.env) ~= "table" then return nil, "env must be an object of strings" end
    for k, v in pairs(spec.env) do
      if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") or type(v) ~= "string" then
        return nil, "env must map variable names to strings"
      end
    end
  end
  if spec.cwd ~= nil and type(spec.cwd) ~= "string" then return nil, "cwd must be a string" end
  for _, k in ipairs { "timeout_ms", "kill_grace_ms" } do
    if spec[k] ~= nil and (type(spec[k]) ~= "number" or spec[k] < 0) then return nil, k .. " must be a number >= 0" end
    spec[k] = spec[k] and math.floor(spec[k])
  end
  return spec
end

function H.exec(self, ctx)
  local body = protocol.decode(ctx.req.body)
  if not body then return fail(ctx, 400, "bad_request", "the body must be a JSON object") end
  local spec, err = exec_spec(body)
  if not spec then return fail(ctx, 400, "bad_request", err) end
  local live, serr = self.store:sandbox(ctx.lease)
  if not live then return fail(ctx, 503, "sandbox_unavailable", "the sandbox did not open: " .. tostring(serr)) end
  local exec = execs.start(live, spec, ctx.auth.sig_hex)
  exec.lease_id, exec.owner = ctx.lease.id, ctx.auth.key_id
  self.execs[exec.id] = exec
  exec.on_finish = function() core.timer(EXEC_LINGER_MS, function() self.execs[exec.id] = nil end) end
  ctx.argv0 = spec.argv and spec.argv[1] or "sh"
  respond(ctx, 201, { exec = { id = exec.id } })
end

local function find_exec(self, ctx, route)
  local exec = self.execs[route.exec_id]
  if not exec or exec.lease_id ~= ctx.lease.id then
    fail(ctx, 404, "exec_not_found", "no exec " .. route.exec_id .. " on lease " .. ctx.lease.id)
    return nil
  end
  return exec
end

function H.output(self, ctx, route)
  local exec = find_exec(self, ctx, route)
  if not exec then return end
  if exec.attached then return fail(ctx, 409, "output_taken", "the output of this exec is already being read") end
  ctx.status, ctx.streamed = 200, true
  exec:stream(ctx.res, ctx.auth.secret, ctx.auth.sig)
  ctx.bytes_out, ctx.exit_code = exec.bytes_out, exec.result and protocol.field(exec.result, "code")
end

function H.stdin(self, ctx, route)
  local exec = find_exec(self, ctx, route)
  if not exec then return end
  local seq = tonumber(route.query:match("seq=(%d+)"))
  if not seq then return fail(ctx, 400, "bad_request", "the stdin route needs ?seq=N") end
  local eof = route.query:match("eof=1") ~= nil
  local status, body = exec:stdin_chunk(seq, eof, ctx.req.body, ctx.auth.sig_hex,
    ctx.req.headers["x-ferry-chain"] or "")
  ctx.bytes_in = #ctx.req.body
  respond(ctx, status, body)
end

function H.kill(self, ctx, route)
  local exec = find_exec(self, ctx, route)
  if not exec then return end
  exec:kill("killed by the client")
  respond(ctx, 200, { killed = not exec.finished })
end

-- ---- one request ----

-- The lease a route names: it must exist, belong to the caller and be active.
local function load_lease(self, ctx, route)
  local lease = self.store.leases[route.lease_id]
  if not lease or lease.owner ~= ctx.auth.key_id then
    fail(ctx, 404, "lease_not_found", "no lease " .. route.lease_id)
    return nil
  end
  ctx.lease = lease
  if lease.state ~= "active" then
    fail(ctx, 410, "lease_expired", "lease " .. lease.id .. " " .. (lease.state == "released" and "was released"
      or "expired"))
    return nil
  end
  return lease
end

function Server:audit(ctx)
  if not self.audit_file then return end -- (nil once shut down)
  local l = ctx.lease or {}
  self.audit_file:write(protocol.encode {
    time = os.date("!%Y-%m-%dT%H:%M:%SZ"), key = ctx.auth and ctx.auth.key_id or protocol.null,
    lease = l.id or protocol.null, issue = l.issue or protocol.null, run = l.run or protocol.null,
    route = ctx.route or (ctx.req.method .. " ?"), status = ctx.status or protocol.null,
    argv0 = ctx.argv0 or protocol.null, exit_code = ctx.exit_code or protocol.null,
    bytes_in = ctx.bytes_in or #ctx.req.body, bytes_out = ctx.bytes_out or 0,
    duration_ms = math.floor(core.now_ms() - ctx.t0 + 0.5),
  }, "\n")
  self.audit_file:flush()
end

function Server:handle(req, res)
  local ctx = { req = req, res = res, t0 = core.now_ms() }
  if self.active >= self.max_requests then
    fail(ctx, 429, "busy", string.format("the bridge is serving %d requests, its maximum", self.max_requests))
    return self:audit(ctx)
  end
  self.active = self.active + 1
  local ok, err = pcall(self.dispatch, self, ctx)
  self.active = self.active - 1
  if not ok then
    core.log("error", "bridge: " .. req.method .. " " .. req.path .. ": " .. tostring(err))
    if not ctx.status then fail(ctx, 500, "internal", "internal error") end
  end
  self:audit(ctx)
end

function Server:dispatch(ctx)
  local req = ctx.req
  if req.header_bytes > self.max_header then
    return fail(ctx, 413, "too_large", string.format("the request's headers are over %d bytes", self.max_header))
  end
  local route, why = self:route(req)
  -- a stdin chunk is signed over the signature it follows (X-Ferry-Chain); the exec checks that link when
  -- the chunk's turn comes, since a chunk may arrive before its predecessor
  local chain = route and route.name == "stdin" and req.headers["x-ferry-chain"] or ""
  local a, status, code, message = self.verifier:verify(req, chain)
  if not a then return fail(ctx, status, code, message) end
  ctx.auth = a
  if not route then
    return fail(ctx, why == "method" and 405 or 404, why == "method" and "method_not_allowed" or "not_found",
      "no route " .. req.method .. " " .. req.path:sub(1, 200))
  end
  ctx.route = route.pattern
  if self.stopping and not (route.exec_id and self.execs[route.exec_id] and not self.execs[route.exec_id].finished) then
    return fail(ctx, 503, "shutting_down", "the bridge is shutting down")
  end
  if route.lease_id then
    if not load_lease(self, ctx, route) then return end
    self.store:touch(ctx.lease)
  end
  return H[route.name](self, ctx, route)
end

-- Reap expired leases now and then (in a task: ending a lease closes its sandboxes).
function Server:schedule_reap()
  local every = math.max(500, math.min(30000, self.store.ttl_s * 250))
  self.reap_timer = core.timer(every, function()
    if self.closed then return end
    ferry.spawn(function()
      self.store:reap()
      self:schedule_reap()
    end)
  end)
end

--- Stop serving (leases stay recorded).
function Server:close()
  self.closed = true
  if self.reap_timer then self.reap_timer:stop() end
  self.http:close()
  if self.audit_file then self.audit_file:close() end
end

-- The execs whose command still runs.
function Server:running()
  local list = {}
  for _, exec in pairs(self.execs) do
    if not exec.finished then list[#list + 1] = exec end
  end
  return list
end

-- Wait (polling) until `done()` or `ms` passed.
local function wait_until(ms, done)
  local deadline = core.now_ms() + ms
  while not done() and core.now_ms() < deadline do ferry.sleep(20) end
end

--- Shut down gracefully (SIGTERM, SIGINT): take no new work (503 shutting_down for everything but the
--- requests of running commands: their stdin chunks, output streams, kills); give running commands
--- `grace_ms` to finish, then kill them ("the bridge is shutting down": their streams end with that exit
--- frame); stop listening; record every lease as it is now (so a restart finds them, expiries included);
--- close the sandboxes; flush and close the audit log. Returns once done; a second call waits for the first.
---@param grace_ms integer
function Server:shutdown(grace_ms)
  if self.stopping then
    wait_until(grace_ms + 10000, function() return self.stopped end)
    return
  end
  self.stopping = true
  self.closed = true
  if self.reap_timer then self.reap_timer:stop() end
  wait_until(grace_ms, function() return #self:running() == 0 end)
  for _, exec in ipairs(self:running()) do exec:kill("the bridge is shutting down") end
  -- the commands' streams write their exit frames before the listener and the connections go
  wait_until(5000, function()
    for _, exec in pairs(self.execs) do
      if exec.attached and not exec.streamed then return false end
    end
    return #self:running() == 0
  end)
  self.http:close()
  for _, lease in pairs(self.store.leases) do self.store:save(lease) end
  self.store:close_all()
  if self.audit_file then
    self.audit_file:flush()
    self.audit_file:close()
    self.audit_file = nil
  end
  self.stopped = true
end

--- Start a bridge server. opts: host, port, keys = {key_id = secret}, template (the --sandbox provider string,
--- holding {lease}), state_dir, public_host (default "host:port"), prefix (default ""), lease_ttl_s,
--- max_leases, audit_log (path), tls_cert, tls_key, idle_timeout_ms, max_requests, max_connections, max_header.
--- Returns the server (server.port, server.public_host, server:close()) or nil, message, code.
---@param opts table
function M.start(opts)
  local o = {}
  for k, v in pairs(M.DEFAULTS) do o[k] = v end
  for k, v in pairs(opts) do o[k] = v end
  local store, err, code = leases.open(o.state_dir, { template = o.template, ttl_s = o.lease_ttl_s,
    max_leases = o.max_leases, now = o.now })
  if not store then return nil, err, code end
  local self = setmetatable({ store = store, execs = {}, active = 0, prefix = o.prefix or "",
    max_requests = o.max_requests, max_header = o.max_header }, Server)
  if o.audit_log then
    local f, ferr = io.open(o.audit_log, "a")
    if not f then return nil, "audit log: " .. tostring(ferr), "EIO" end
    self.audit_file = f
  end
  local srv, lerr, lcode = http.listen({ host = o.host, port = o.port, tls_cert = o.tls_cert, tls_key = o.tls_key,
    max_body = protocol.MAX_CHUNK, idle_timeout_ms = o.idle_timeout_ms, max_connections = o.max_connections },
    function(req, res) self:handle(req, res) end)
  if not srv then return nil, lerr, lcode end
  self.http, self.port = srv, srv.port
  local shown = o.host:find(":", 1, true) and ("[" .. o.host .. "]") or o.host
  self.public_host = (o.public_host or (shown .. ":" .. srv.port)):lower()
  self.verifier = auth.new { keys = o.keys, public_host = self.public_host, now = o.now }
  store:reap()
  self:schedule_reap()
  return self
end

return M
