-- core.hmac_sha256 / hmac_equal / random_bytes (engine/src/hmac.c): the primitives the bridge signs with.
local core = require "ferry.core"

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

describe("core.hmac_sha256", function()
  -- RFC 4231 test cases 1, 2 and 6 (a key longer than the block size)
  it("matches the RFC 4231 vectors", function()
    assert.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
      hex(core.hmac_sha256(string.rep("\x0b", 20), "Hi There")))
    assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      hex(core.hmac_sha256("Jefe", "what do ya want for nothing?")))
    assert.equal("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
      hex(core.hmac_sha256(string.rep("\xaa", 131), "Test Using Larger Than Block-Size Key - Hash Key First")))
  end)

  it("takes the message in pieces, without concatenating them first", function()
    local key = core.random_bytes(32)
    local whole = core.hmac_sha256(key, "abc\0def" .. string.rep("x", 70000))
    assert.equal(whole, core.hmac_sha256(key, "abc", "\0def", string.rep("x", 70000)))
    assert.equal(whole, core.hmac_sha256(key, "", "abc\0def" .. string.rep("x", 70000), ""))
    assert.not_equal(whole, core.hmac_sha256(key .. "x", "abc\0def" .. string.rep("x", 70000)))
    assert.equal(32, #whole)
  end)

  it("raises on misuse, naming the argument", function()
    assert.has_error(function() core.hmac_sha256(nil, "x") end, "hmac_sha256: key must be a string, got nil")
    assert.has_error(function() core.hmac_sha256("", "x") end, "hmac_sha256: key must not be empty")
    assert.has_error(function() core.hmac_sha256("k") end, "hmac_sha256: expected the key and at least one string")
    assert.has_error(function() core.hmac_sha256("k", "a", 3) end,
      "hmac_sha256: argument #3 must be a string, got number")
  end)
end)

describe("core.hmac_equal", function()
  it("compares whole strings, and strings of other lengths are never equal", function()
    local mac = core.hmac_sha256("k", "m")
    assert.is_true(core.hmac_equal(mac, mac:sub(1)))
    assert.is_false(core.hmac_equal(mac, mac:sub(1, 31) .. string.char((mac:byte(32) + 1) % 256)))
    assert.is_false(core.hmac_equal(string.char((mac:byte(1) + 1) % 256) .. mac:sub(2), mac))
    assert.is_false(core.hmac_equal(mac, mac:sub(1, 31)))
    assert.is_true(core.hmac_equal("", ""))
    assert.has_error(function() core.hmac_equal(mac, nil) end, "hmac_equal: b must be a string, got nil")
  end)
end)

describe("core.random_bytes", function()
  it("returns n fresh bytes", function()
    local a, b = core.random_bytes(32), core.random_bytes(32)
    assert.equal(32, #a)
    assert.not_equal(a, b)
    assert.equal(4096, #core.random_bytes(4096))
    assert.has_error(function() core.random_bytes(0) end, "random_bytes: n must be between 1 and 4096")
    assert.has_error(function() core.random_bytes(4097) end, "random_bytes: n must be between 1 and 4096")
  end)
end)
