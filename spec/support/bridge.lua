--- A real `ferry bridge serve` process for the specs, on 127.0.0.1 with a free port: key files, a state dir,
--- a sandbox template (local-backed by default: commands run on this host in a dir per lease), its stderr
--- collected. Also a raw signed-request helper to test the server's rejections byte by byte.
--
--   local b = bridge.start { template = "bwrap:{dir}/sb/{lease}" }   -- {dir}: the server's temp dir
--   b:provider { issue = "I1" }    -- bridge+http://127.0.0.1:PORT?key_id=k1&key_file=...&issue=I1
--   b:signed("GET", "/v1/leases", nil, {tamper...})   -- status, body, headers
--   b:kill("KILL"); b:restart(); b:stop()
local ferry = require "ferry"
local core = require "ferry.core"
local http = require "ferry.http"
local helpers = require "support.helpers"
local protocol = require "ferry.bridge.protocol"

local M = {}

local START_TIMEOUT_MS = 15000

-- A local-backed template: commands run on the host (sh -c), the lease dir holds the workspace.
M.LOCAL_TEMPLATE = "cmd:env FERRY_LEASE_DIR={dir}/sb/{lease}"
-- A bubblewrap sandbox per lease; M.BWRAP_WORKS says whether bwrap can run here.
M.BWRAP_TEMPLATE = "bwrap:{dir}/sb/{lease}"
M.BWRAP_WORKS = require("support.sandboxes").BWRAP_WORKS

--- The bwrap template where bwrap works, else the local one.
function M.sandbox_template()
  return M.BWRAP_WORKS and M.BWRAP_TEMPLATE or M.LOCAL_TEMPLATE
end

local Bridge = {}
Bridge.__index = Bridge

local function write_key(path, secret)
  helpers.write_file(path, secret .. "\n")
  helpers.sh("chmod 600 '" .. path .. "'")
end

-- The server's command line: `ferry bridge serve`, or the Worker's Node harness.
function Bridge:command()
  local argv
  if self.kind == "worker" then
    argv = { "node", M.WORKER_HARNESS, "--dist", M.WORKER_DIST, "--listen", "127.0.0.1:" .. (self.port or 0), "--root",
      self.dir, "--state", self.dir .. "/worker-state.json" }
  else
    argv = { helpers.ferry_bin, "bridge", "serve", "--listen", "127.0.0.1:" .. (self.port or 0),
      "--state-dir", self.dir .. "/state", "--sandbox", self.template }
  end
  for id, path in pairs(self.key_files) do table.move({ "--key", id .. "=" .. path }, 1, 2, #argv + 1, argv) end
  return argv
end

-- Start the server process; returns once its "listening" line names the port.
function Bridge:launch()
  local argv = self:command()
  for _, a in ipairs(self.extra or {}) do argv[#argv + 1] = a end
  self.stderr = ""
  local listening
  self.runner = ferry.spawn(function()
    return ferry.proc.run { argv = argv, on_spawn = function(pid) self.pid = pid end,
      on_stderr = function(c)
        self.stderr = self.stderr .. c
        listening = listening or self.stderr:match("listening on 127%.0%.0%.1:(%d+)")
      end,
      on_stdout = function() end }
  end)
  local deadline = core.now_ms() + START_TIMEOUT_MS
  while not listening and not self.runner.done and core.now_ms() < deadline do ferry.sleep(10) end
  if not listening then
    self:kill("KILL")
    error("bridge serve did not start: " .. self.stderr)
  end
  self.port = tonumber(listening)
  self.url = "http://127.0.0.1:" .. self.port
end

-- The Cloudflare Worker under Node (providers/bridge/test/harness.mjs over the tsc output of `make worker`).
M.WORKER_HARNESS = "providers/bridge/test/harness.mjs"
M.WORKER_DIST = "build/worker/dist"

--- Why the Worker cannot run here (nil when it can): node missing, or the Worker not built.
function M.worker_missing()
  local node = ferry.proc.run { argv = { "sh", "-c", "command -v node" } }
  if not node or node.code ~= 0 then return "node is not installed (the Cloudflare Worker runs under Node)" end
  if not core.fs_stat(M.WORKER_DIST .. "/worker.js") then
    return "the Worker is not built: make worker (needs npm: it installs typescript into build/npm)"
  end
  return nil
end

--- The servers the shared specs run against: {name, start(opts), missing (why it cannot run, or nil)}.
function M.servers()
  return {
    { name = "ferry bridge serve", start = M.start },
    { name = "the Cloudflare Worker under Node", missing = M.worker_missing(),
      start = function(opts)
        opts = opts or {}
        opts.kind = "worker"
        return M.start(opts)
      end },
  }
end

--- Start a server. opts: kind ("ferry", default, or "worker": the Worker's Node harness), template ("{dir}"
--- is the server's temp dir; default M.LOCAL_TEMPLATE; the Worker's sandboxes are always local ones), extra
--- (more arguments), keys (id -> secret; default k1 and k2 with random secrets), root (where the temp dir
--- goes, default /tmp).
function M.start(opts)
  opts = opts or {}
  local dir = opts.root and assert(core.fs_mkdtemp(opts.root .. "/ferry-bridge-")) or helpers.tmpdir()
  local b = setmetatable({ dir = dir, extra = opts.extra, key_files = {}, secrets = {}, kind = opts.kind or "ferry" },
    Bridge)
  b.template = (opts.template or M.LOCAL_TEMPLATE):gsub("{dir}", dir)
  for id, secret in pairs(opts.keys or { k1 = protocol.hex(core.random_bytes(32)),
    k2 = protocol.hex(core.random_bytes(32)) }) do
    b.key_files[id] = dir .. "/" .. id .. ".key"
    b.secrets[id] = secret
    write_key(b.key_files[id], secret)
  end
  b:launch()
  return b
end

--- The provider string: bridge+http://127.0.0.1:PORT?key_id=ID&key_file=FILE&... params: key (default k1),
--- and any of lease, name, issue, run, ttl.
function Bridge:provider(params)
  params = params or {}
  local key = params.key or "k1"
  local q = { "key_id=" .. key, "key_file=" .. (self.key_files[key] or (self.dir .. "/" .. key .. ".key")) }
  for _, k in ipairs { "lease", "name", "issue", "run", "ttl" } do
    if params[k] then q[#q + 1] = k .. "=" .. params[k] end
  end
  return "bridge+" .. self.url .. "?" .. table.concat(q, "&")
end

--- The host dir holding a lease's workspace (bwrap binds {dir}/sb/LEASE at /sandbox).
function Bridge:workspace_dir(lease)
  return self.dir .. "/sb/" .. lease .. "/workspace"
end

--- Signal the server process (KILL, TERM) and wait for it to end.
function Bridge:kill(signal)
  if self.pid and self.runner and not self.runner.done then
    ferry.proc.run { argv = { "kill", "-s", signal or "TERM", tostring(self.pid) } }
    ferry.wait(self.runner)
  end
end

--- Start the server again on the same port, state dir and keys.
function Bridge:restart()
  self:launch()
end

--- Stop the server and remove its files.
function Bridge:stop()
  self:kill("KILL")
  http.close_idle() -- the client's connections to it
  ferry.proc.run { argv = { "rm", "-rf", self.dir } }
end

--- Send a signed request, with tampering for the security specs. opts: key (default k1), secret (override),
--- host (the Host header sent), sign_host (the host signed), time, nonce, sign_path, sign_body, chain,
--- sign_method, headers (extra). Returns status, decoded body (or raw), response headers, signature hex.
function Bridge:signed(method, path, body, opts)
  opts = opts or {}
  local key = opts.key or "k1"
  local secret = opts.secret or self.secrets[key] or "x"
  local text = type(body) == "table" and protocol.encode(body) or body or ""
  local host = opts.host or ("127.0.0.1:" .. self.port)
  local time = opts.time or tostring(os.time())
  local nonce = opts.nonce or protocol.hex(core.random_bytes(16))
  local sig_hex = protocol.hex(protocol.sign(secret, { key_id = key, method = opts.sign_method or method,
    path = opts.sign_path or path, host = opts.sign_host or host, time = time, nonce = nonce,
    body_sha256 = core.sha256(opts.sign_body or text), chain = opts.chain }))
  local headers = { "Host: " .. host, "X-Ferry-Key: " .. key, "X-Ferry-Time: " .. time, "X-Ferry-Nonce: " .. nonce,
    "X-Ferry-Signature: " .. (opts.signature or sig_hex), "Content-Type: application/json" }
  if opts.chain then headers[#headers + 1] = "X-Ferry-Chain: " .. opts.chain end
  local expect = "Expect:"
  for _, h in ipairs(opts.headers or {}) do
    if h:lower():match("^expect:") then expect = h else headers[#headers + 1] = h end
  end
  headers[#headers + 1] = expect
  local res, err = http.request { url = self.url .. path, method = method, headers = headers,
    body = body ~= nil and text or nil, timeout_ms = opts.timeout_ms or 30000 }
  assert(res, err)
  return res.status, protocol.decode(res.body) or res.body, res.headers, sig_hex, nonce
end

M.Bridge = Bridge

--- Poll `fn` every 20 ms until it returns true or `ms` passed; returns whether it did.
function M.eventually(ms, fn)
  local deadline = core.now_ms() + ms
  while core.now_ms() < deadline do
    if fn() then return true end
    ferry.sleep(20)
  end
  return fn()
end

--- Close an in-process server with no connection left behind (later specs count descriptors).
function M.close_server(srv)
  http.close_idle()
  local deadline = core.now_ms() + 3000
  while srv:connections() > 0 and core.now_ms() < deadline do ferry.sleep(10) end
  srv:close()
end

return M
