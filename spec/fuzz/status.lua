--- Fuzz target: ferry.transfer.status_sink, which strips the status line ("::ferry:: rc=N\n COUNT\n") off a
-- sandbox command's stdout while streaming the rest to the consumer (decoding base64 on the way when the
-- channel is not 8-bit clean). Contract: push/finish never raise, whatever the sandbox prints and however it
-- is chunked; bad base64 and a failing consumer end up in sink.err.
--
-- Input: a flags byte (1: base64 channel, 2: a well-formed output built from the rest, 4: the consumer
-- raises, high nibble: spaces before the count as busybox's wc prints them), a chunking byte, then
--   well-formed: rc byte, count (2 bytes), data: the output is data (base64-wrapped on a base64 channel), then
--   the status line. Everything before it must reach the consumer exactly, rc and count come back.
--   otherwise: the rest is the output as is. What reaches the consumer is a prefix of it; with no status
--   mark it is all of it; a mark within the last HOLD bytes (512, transfer.lua's hold-back) is the status
--   line and exactly what precedes it is delivered.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/")
local common = dofile(DIR .. "/common.lua")
local core = require "ferry.core"
local transfer = require "ferry.transfer"

local MARK, HOLD = "::ferry:: ", 512
local CONSUMER_ERROR = "consumer failed"

local function wrapped_b64(data)
  local text = core.b64_encode(data)
  return (text:gsub(("."):rep(76), "%0\n")) .. "\n"
end

local function last_mark(s)
  local at, from = nil, 1
  while true do
    local i = s:find(MARK, from, true)
    if not i then return at end
    at, from = i, i + 1
  end
end

local function run_sink(payload, b64, seed, failing)
  local got = {}
  local sink = transfer.status_sink(function(d)
    got[#got + 1] = d
    if failing then error(CONSUMER_ERROR, 0) end
  end, b64)
  for _, piece in ipairs(common.pieces(payload, seed)) do
    local ok, err = pcall(sink.push, piece)
    if not ok then common.fail("push raised: %s", tostring(err)) end
  end
  local ok, rc, n = pcall(sink.finish)
  if not ok then common.fail("finish raised: %s", tostring(rc)) end
  return table.concat(got), rc, n, sink
end

local function check_well_formed(c, flags, seed)
  local b64, failing = flags & 1 == 1, flags & 4 == 4
  local want_rc, want_n = c.byte(), c.byte() << 8 | c.byte()
  local data = c.rest()
  local payload = (b64 and wrapped_b64(data) or data) .. MARK .. "rc=" .. want_rc .. "\n"
    .. (" "):rep(flags >> 4) .. want_n .. "\n"
  local emitted, rc, n, sink = run_sink(payload, b64, seed, failing)
  if rc ~= want_rc or n ~= want_n then
    common.fail("status rc=%s count=%s, want rc=%d count=%d", tostring(rc), tostring(n), want_rc, want_n)
  end
  if failing then
    if #data > 0 and sink.err ~= CONSUMER_ERROR then common.fail("consumer error lost: %q", tostring(sink.err)) end
    if data:sub(1, #emitted) ~= emitted then common.fail("delivered bytes that were not sent") end
    return
  end
  if sink.err then common.fail("error on a well-formed output: %s", sink.err) end
  if emitted ~= data then common.fail("delivered %d bytes, want %d (%q...)", #emitted, #data, data:sub(1, 40)) end
  if sink.bytes ~= #data then common.fail("sink.bytes %d, want %d", sink.bytes, #data) end
end

local function check_any(payload, flags, seed)
  local b64, failing = flags & 1 == 1, flags & 4 == 4
  local emitted, rc, n, sink = run_sink(payload, b64, seed, failing)
  if sink.err ~= nil and type(sink.err) ~= "string" then common.fail("sink.err is a %s", type(sink.err)) end
  if (rc == nil) ~= (n == nil) then common.fail("rc %s with count %s", tostring(rc), tostring(n)) end
  if b64 or failing then
    local bad_b64 = "^bad base64 from the sandbox: invalid base64 at offset %d+$"
    if sink.err and not failing and not sink.err:find(bad_b64) then
      common.fail("unexpected error: %q", sink.err)
    end
    return
  end
  if sink.err then common.fail("error on a raw channel: %q", sink.err) end
  if payload:sub(1, #emitted) ~= emitted then common.fail("delivered bytes that were not sent") end
  local at = last_mark(payload)
  if not at then
    if rc ~= nil or emitted ~= payload then common.fail("no status mark, but not everything delivered") end
  elseif at > #payload - HOLD then
    if emitted ~= payload:sub(1, at - 1) then
      common.fail("delivered %d bytes, the status mark is at %d", #emitted, at)
    end
    local want_rc, want_n = payload:sub(at):match("^" .. MARK .. "rc=(%d+)%s+(%d+)%s*$")
    if rc ~= tonumber(want_rc) or n ~= tonumber(want_n) then
      common.fail("status %s/%s, the line says %s/%s", tostring(rc), tostring(n), tostring(want_rc), tostring(want_n))
    end
  end
end

return function(data)
  local c = common.cursor(data)
  local flags, seed = c.byte(), c.byte()
  if flags & 2 == 2 then return check_well_formed(c, flags, seed) end
  return check_any(c.rest(), flags, seed)
end
