--- ferry.bridge.protocol: what the bridge's client and server share (README "Bridge"): the string every request
-- signature covers, the response signature, the binary frames of an output stream with their chained MACs,
-- the limits, key files and the JSON error envelope.
local core = require "ferry.core"
local cjson = require "cjson"

local M = {}

M.VERSION = "v1"
M.SIGN_TAG = "ferry-bridge-v1"
M.RESPONSE_TAG = "ferry-bridge-v1-response"
M.MAX_SKEW_S = 300                 -- a request's X-Ferry-Time may differ from the server's clock by this much
M.MAX_CHUNK = 1024 * 1024          -- a stdin chunk (a request body) at most
M.STDIN_WINDOW = 4                 -- stdin chunks in flight at most: a server takes seq next .. next+3
M.MAX_FRAME = 1024 * 1024          -- a frame's payload at most
M.MIN_KEY_BYTES = 32
M.EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

-- Frame types of an output stream.
M.STDOUT, M.STDERR, M.KEEPALIVE, M.EXIT = "o", "e", "k", "x"

-- Identifiers the server mints or accepts (lease and exec ids, key ids, lease names).
M.ID_PATTERN = "^[a-f0-9]+$"
M.KEY_ID_PATTERN = "^[%w._-]+$"
M.NAME_PATTERN = "^[%w._-]+$"

--- Lowercase hex of bytes.
---@param s string
---@return string
function M.hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

--- Bytes of lowercase or uppercase hex; nil when `h` is not hex of even length.
---@param h string
---@return string|nil
function M.unhex(h)
  if type(h) ~= "string" or #h % 2 ~= 0 or h:find("[^%x]") then return nil end
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

--- A fresh random id: `bytes` random bytes in hex.
---@param bytes integer
---@return string
function M.new_id(bytes)
  return M.hex(core.random_bytes(bytes))
end

--- The string a request signature covers: fields joined by "\n" (see README "Bridge", "Signing").
--- f: key_id, method, path (with the query, as sent), host (lowercase), time (string), nonce, body_sha256,
--- chain ("" or the hex signature the request is chained to).
---@param f table
---@return string
function M.string_to_sign(f)
  return table.concat({ M.SIGN_TAG, f.key_id, f.method, f.path, f.host:lower(), f.time, f.nonce, f.body_sha256,
    f.chain or "" }, "\n")
end

--- The raw 32-byte signature of a request.
---@param secret string
---@param f table  see string_to_sign
---@return string
function M.sign(secret, f)
  return core.hmac_sha256(secret, M.string_to_sign(f))
end

--- The hex signature of a response: covers the request's signature, the status and the body.
---@param secret string
---@param request_sig_hex string
---@param status integer
---@param body string
---@return string
function M.sign_response(secret, request_sig_hex, status, body)
  return M.hex(core.hmac_sha256(secret, table.concat({ M.RESPONSE_TAG, request_sig_hex, tostring(status),
    core.sha256(body) }, "\n")))
end

local function be32(n)
  return string.char((n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255)
end

--- A frame writer: w:frame(type, payload) -> the frame's bytes, each MAC chained on the one before; the
--- first is chained on `seed` (the raw signature of the request that opened the stream).
---@param secret string
---@param seed string
---@return table
function M.frame_writer(secret, seed)
  local w = { prev = seed }
  function w:frame(kind, payload)
    local head = kind .. be32(#payload)
    local mac = core.hmac_sha256(secret, self.prev, head, payload)
    self.prev = mac
    return head .. payload .. mac
  end
  return w
end

--- A frame reader: r:push(bytes) feeds the stream and calls on_frame(type, payload) for each whole frame
--- whose MAC checks; returns nil, message at the first frame that fails (the stream must be dropped).
---@param secret string
---@param seed string
---@param on_frame fun(kind: string, payload: string)
---@return table
function M.frame_reader(secret, seed, on_frame)
  local r = { prev = seed, parts = {}, size = 0, frames = 0, need = 5 } -- need: bytes the next frame takes
  local function take_buffer()
    local buf = #r.parts == 1 and r.parts[1] or table.concat(r.parts)
    r.parts, r.size = {}, 0
    return buf
  end
  function r:push(bytes)
    if self.err then return nil, self.err end
    self.parts[#self.parts + 1] = bytes
    self.size = self.size + #bytes
    if self.size < self.need then return true end
    local buf, at = take_buffer(), 1
    while #buf - at + 1 >= 5 do
      local kind = buf:sub(at, at)
      local b1, b2, b3, b4 = buf:byte(at + 1, at + 4)
      local len = b1 << 24 | b2 << 16 | b3 << 8 | b4
      if not (kind == M.STDOUT or kind == M.STDERR or kind == M.KEEPALIVE or kind == M.EXIT) or len > M.MAX_FRAME then
        self.err = string.format("bad frame header at frame %d", self.frames + 1)
        return nil, self.err
      end
      self.need = 5 + len + 32
      if #buf - at + 1 < self.need then break end
      local head, payload = buf:sub(at, at + 4), buf:sub(at + 5, at + 4 + len)
      local mac = buf:sub(at + 5 + len, at + 36 + len)
      if not core.hmac_equal(mac, core.hmac_sha256(secret, self.prev, head, payload)) then
        self.err = string.format("frame %d failed its MAC check (a spliced, reordered or altered stream)",
          self.frames + 1)
        return nil, self.err
      end
      self.prev, self.frames, self.need = mac, self.frames + 1, 5
      at = at + 37 + len
      on_frame(kind, payload)
    end
    if at <= #buf then
      self.parts[1] = at == 1 and buf or buf:sub(at)
      self.size = #self.parts[1]
    end
    return true
  end
  return r
end

--- The JSON error body: {"error": code, "message": message}.
---@param code string
---@param message string
---@return string
function M.error_body(code, message)
  return cjson.encode { error = code, message = message }
end

--- Decode a JSON object; nil, message when `s` is not one.
---@param s string
---@return table|nil
---@return string|nil err
function M.decode(s)
  local ok, v = pcall(cjson.decode, s)
  if not ok or type(v) ~= "table" then return nil, "not a JSON object" end
  return v
end

--- A value of a decoded JSON object with JSON null read as nil.
function M.field(t, k)
  local v = t[k]
  if v == cjson.null then return nil end
  return v
end

--- A JSON number as an integer (lua-cjson decodes every number as a float); nil when it is not integral.
function M.int(v)
  return type(v) == "number" and math.tointeger(v) or nil
end

M.encode = cjson.encode
M.null = cjson.null

--- Read a key file: its bytes without one trailing newline, at least 32 bytes, readable by its owner only.
--- Returns the secret or nil, message, code.
---@param path string
---@return string|nil secret
---@return string|nil err
---@return string|nil code
function M.read_key(path)
  local st, serr, scode = core.fs_stat(path)
  if not st then return nil, "key file " .. path .. ": " .. tostring(serr), scode end
  if st.mode & 63 ~= 0 then
    return nil, string.format("key file %s is readable by others (mode %o): chmod 600 %s", path, st.mode & 511,
      path), "EPERM"
  end
  local f, err = io.open(path, "rb")
  if not f then return nil, "key file " .. tostring(err), "EACCES" end
  local data = f:read("a") or ""
  f:close()
  data = data:gsub("\r?\n$", "", 1)
  if #data < M.MIN_KEY_BYTES then
    return nil, string.format("key file %s holds %d bytes; a key needs at least %d (e.g. openssl rand -hex 32 > %s)",
      path, #data, M.MIN_KEY_BYTES, path), "EINVAL"
  end
  return data
end

return M
