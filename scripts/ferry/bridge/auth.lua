--- ferry.bridge.auth: the server's check of a signed request (README "Bridge", "Signing"): the Host it
-- answers as, a known key, a timestamp within the window, a nonce not seen within the window, and the HMAC
-- over all of it and the body, compared in constant time.
local core = require "ferry.core"
local protocol = require "ferry.bridge.protocol"

local M = {}

local Verifier = {}
Verifier.__index = Verifier

--- A verifier. opts: keys = {key_id = secret}, public_host ("host:port" the server answers as),
--- max_nonces (replay cache bound, default 200,000), now (a clock in seconds, for the specs).
---@param opts table
---@return table
function M.new(opts)
  return setmetatable({
    keys = opts.keys, public_host = opts.public_host:lower(), max_nonces = opts.max_nonces or 200000,
    now = opts.now or os.time, seen = {}, order = {}, head = 1, count = 0,
  }, Verifier)
end

-- Forget nonces whose window has passed (they arrive in time order, so the oldest are at the head).
function Verifier:prune(now)
  while self.head <= #self.order do
    local entry = self.order[self.head]
    if entry.expires > now then break end
    self.seen[entry.nonce] = nil
    self.order[self.head] = nil
    self.head = self.head + 1
    self.count = self.count - 1
  end
  if self.head > 4096 and self.head > #self.order / 2 then -- compact the list now and then
    local rest = table.move(self.order, self.head, #self.order, 1, {})
    self.order, self.head = rest, 1
  end
end

local function reject(status, code, message)
  return nil, status, code, message
end

--- Check a request. `chain` is the hex signature a chained request must cover ("" for others).
--- Returns {key_id, secret, sig (raw), sig_hex} or nil, status, error code, message.
---@param req table  method, path, host, headers, body
---@param chain string|nil
function Verifier:verify(req, chain)
  local h = req.headers
  local key_id, time, nonce, sig_hex = h["x-ferry-key"], h["x-ferry-time"], h["x-ferry-nonce"], h["x-ferry-signature"]
  if not (key_id and time and nonce and sig_hex) then
    return reject(401, "missing_auth", "the request is not signed (X-Ferry-Key, X-Ferry-Time, X-Ferry-Nonce, "
      .. "X-Ferry-Signature)")
  end
  if (req.host or ""):lower() ~= self.public_host then
    return reject(403, "wrong_host", "this bridge answers as " .. self.public_host .. ", not " .. tostring(req.host))
  end
  local secret = self.keys[key_id]
  if not secret then return reject(401, "unknown_key", "unknown key id '" .. key_id:sub(1, 64) .. "'") end
  local t = time:match("^%d+$") and tonumber(time)
  local now = self.now()
  if not t or math.abs(now - t) > protocol.MAX_SKEW_S then
    return reject(401, "stale_time", string.format("X-Ferry-Time %s is more than %d s from the bridge's clock (%d)",
      time:sub(1, 20), protocol.MAX_SKEW_S, now))
  end
  if not nonce:match("^" .. string.rep("%x", 32) .. "$") then
    return reject(401, "bad_nonce", "X-Ferry-Nonce must be 32 hex characters")
  end
  local given = #sig_hex == 64 and protocol.unhex(sig_hex)
  local sig = protocol.sign(secret, { key_id = key_id, method = req.method, path = req.path, host = self.public_host,
    time = time, nonce = nonce, body_sha256 = core.sha256(req.body or ""), chain = chain })
  if not given or not core.hmac_equal(given, sig) then
    return reject(401, "bad_signature", "the signature does not match the request")
  end
  self:prune(now)
  local seen_key = key_id .. ":" .. nonce:lower()
  if self.seen[seen_key] then return reject(401, "replayed_nonce", "this nonce was already used") end
  if self.count >= self.max_nonces then
    return reject(429, "busy", "too many requests within the replay window; retry later")
  end
  -- kept until its timestamp can no longer pass the window check
  local entry = { nonce = seen_key, expires = math.max(now, t) + protocol.MAX_SKEW_S + 1 }
  self.seen[seen_key] = true
  self.order[#self.order + 1] = entry
  self.count = self.count + 1
  return { key_id = key_id, secret = secret, sig = sig, sig_hex = protocol.hex(sig) }
end

return M
