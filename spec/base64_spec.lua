-- ferry.b64: RFC 4648 base64 with padding, one-shot and streaming, checked against coreutils `base64`.
local ferry = require "ferry"
local b64 = ferry.b64

local MiB = 1024 * 1024

local function random_bytes(n)
  if n > 4096 then
    local f = assert(io.open("/dev/urandom", "rb"))
    local data = f:read(n)
    f:close()
    return data
  end
  local t = {}
  for i = 1, n do t[i] = math.random(0, 255) end
  return string.char(table.unpack(t))
end

-- Run a coreutils command with `input` on stdin; its stdout.
local function coreutils(argv, input)
  local res = assert(ferry.proc.run { argv = argv, stdin = input, max_output = 64 * MiB })
  assert.are.equal(0, res.code, table.concat(argv, " ") .. ": " .. res.stderr)
  return res.stdout
end

-- Split s into random pieces, empty ones included.
local function random_split(s, max_piece)
  local pieces, i = {}, 1
  while i <= #s do
    local len = math.random(0, max_piece)
    pieces[#pieces + 1] = s:sub(i, i + len - 1)
    i = i + len
  end
  if math.random(2) == 1 then pieces[#pieces + 1] = "" end
  return pieces
end

-- Feed the pieces to a streaming object: the concatenated output, or nil, err, code at the first failure.
local function stream(obj, pieces)
  local out = {}
  for _, piece in ipairs(pieces) do
    local res, err, code = obj:update(piece)
    if not res then return nil, err, code end
    out[#out + 1] = res
  end
  local res, err, code = obj:finish()
  if not res then return nil, err, code end
  out[#out + 1] = res
  return table.concat(out)
end

-- Big strings are compared without busted printing them.
local function same(expected, actual, what)
  assert.is_true(expected == actual, what .. ": outputs differ (" .. #expected .. " vs " .. tostring(actual and
    #actual) .. " bytes)")
end

local function assert_invalid(offset, res, err, code)
  assert.is_nil(res)
  assert.are.equal("invalid base64 at offset " .. offset, err)
  assert.are.equal("EINVAL", code)
end

describe("ferry.b64", function()
  before_each(function() math.randomseed(4648) end)

  describe("encode and decode", function()
    it("match the RFC 4648 test vectors", function()
      local vectors = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==", fooba = "Zm9vYmE=",
        foobar = "Zm9vYmFy" }
      for plain, encoded in pairs(vectors) do
        assert.are.equal(encoded, b64.encode(plain))
        assert.are.equal(plain, b64.decode(encoded))
      end
    end)

    it("use the standard alphabet and are binary safe", function()
      assert.are.equal("AAAA", b64.encode("\0\0\0"))
      assert.are.equal("++//", b64.encode("\251\239\255"))
      assert.are.equal("\0\0\0", b64.decode("AAAA"))
      assert.are.equal("\251\239\255", b64.decode("++//"))
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      assert.are.equal(all, b64.decode(b64.encode(all)))
    end)

    it("round-trip random buffers of every length up to 1000", function()
      for len = 0, 1000 do
        local data = random_bytes(len)
        local encoded = b64.encode(data)
        assert.are.equal((len + 2) // 3 * 4, #encoded)
        assert.is_truthy(encoded:match("^[A-Za-z0-9+/]*=?=?$"))
        assert.are.equal(data, b64.decode(encoded))
      end
    end)

    it("round-trip MB-sized buffers, past the size where results get their own mapping", function()
      for _, len in ipairs { MiB, 3 * MiB + 1, 7 * MiB + 2, 12 * MiB } do
        local data = random_bytes(len)
        local encoded = b64.encode(data)
        assert.are.equal((len + 2) // 3 * 4, #encoded)
        same(data, b64.decode(encoded), len .. " bytes")
      end
    end)

    it("skip ASCII whitespace anywhere, padding included", function()
      assert.are.equal("foobar", b64.decode(" Zm9v\tYm\nFy\r\n"))
      assert.are.equal("foobar", b64.decode("Z\vm\f9vYmFy"))
      assert.are.equal("f", b64.decode("Zg=\n="))
      assert.are.equal("fo", b64.decode("Zm8=\n\n  "))
      assert.are.equal("", b64.decode(" \t\r\n\v\f"))
    end)

    it("accept nonzero unused bits in the last group, like coreutils", function()
      assert.are.equal("f", b64.decode("Zh=="))
      assert.are.equal("fo", b64.decode("Zm9="))
    end)
  end)

  describe("decode errors", function()
    local cases = {
      { "!", 0, "a character outside the alphabet" },
      { "Zm9vYmF-", 7, "the URL-safe alphabet" },
      { "Zm9v_w==", 4, "the URL-safe alphabet" },
      { "Zm9\0", 3, "a NUL byte" },
      { "Zm9v\128AAA", 4, "a byte above 127" },
      { "Zm9v\28YmFy", 4, "a control character that is not whitespace" },
      { "Zm9v\194\160YmFy", 4, "non-ASCII whitespace" },
      { "=", 0, "padding first in a group" },
      { "Zm9v=AAA", 4, "padding first in a group" },
      { "Z===", 1, "padding second in a group" },
      { "Zg=a", 3, "data after padding in the group" },
      { "Zg==Zg==", 4, "data after a padded group" },
      { "Zm8=Zm8=", 4, "data after a padded group" },
      { "Zm8==", 4, "too much padding" },
      { "Zg==\n=", 5, "padding after a padded group and whitespace" },
      { "Zg==\tx", 5, "a bad character after padding" },
      { "Zg=", 3, "a truncated padded group" },
      { "Zm9", 3, "a truncated group" },
      { "Zm9vY", 5, "one character too many" },
      { "Zm9v Y\n", 7, "a truncated group followed by whitespace" },
      { "Zg= ", 4, "missing padding followed by whitespace" },
    }
    for _, case in ipairs(cases) do
      local input, offset, what = case[1], case[2], case[3]
      it(string.format("report %s at offset %d: %q", what, offset, input), function()
        assert_invalid(offset, b64.decode(input))
      end)
    end

    it("report the offset in a large input", function()
      local encoded = b64.encode(random_bytes(6 * MiB))
      local bad = #encoded - 100
      assert_invalid(bad, b64.decode(encoded:sub(1, bad) .. "*" .. encoded:sub(bad + 2)))
      assert_invalid(#encoded - 1, b64.decode(encoded:sub(1, -2)))
    end)
  end)

  describe("argument checks", function()
    it("raise an error naming the argument for non-strings", function()
      for _, fn in ipairs { b64.encode, b64.decode } do
        for _, bad in ipairs { 42, {}, true } do
          assert.error_matches(function() fn(bad) end, "bad argument #1 to '.-' %(string expected, got %a+%)")
        end
        assert.error_matches(function() fn() end, "bad argument #1 to '.-' %(string expected, got no value%)")
      end
      local enc, dec = b64.encoder(), b64.decoder()
      assert.error_matches(function() enc:update(42) end, "bad argument #1 to 'update' %(string expected")
      assert.error_matches(function() dec:update(nil) end, "bad argument #1 to 'update' %(string expected")
      assert.error_matches(function() b64.encoder { wrap = -1 } end, "wrap must be an integer >= 0")
      assert.error_matches(function() b64.encoder { wrap = 1.5 } end, "wrap must be an integer >= 0")
      assert.error_matches(function() b64.encoder("76") end, "bad argument #1 to '.-' %(table expected")
    end)
  end)

  describe("compared with coreutils base64", function()
    local function sizes()
      local list = { 0, 1, 2, 3, 56, 57, 58, 100000, MiB + 1 }
      for _ = 1, 12 do list[#list + 1] = math.random(0, 5000) end
      return list
    end

    it("encode like base64 -w0", function()
      for _, len in ipairs(sizes()) do
        local data = random_bytes(len)
        same(coreutils({ "base64", "-w0" }, data), b64.encode(data), len .. " bytes")
      end
    end)

    it("decode the line-wrapped output of base64", function()
      for _, len in ipairs(sizes()) do
        local data = random_bytes(len)
        same(data, b64.decode(coreutils({ "base64" }, data)), len .. " bytes")
      end
    end)

    it("produce what base64 -d decodes", function()
      for _, len in ipairs(sizes()) do
        local data = random_bytes(len)
        same(data, coreutils({ "base64", "-d" }, b64.encode(data)), len .. " bytes")
      end
    end)

    it("wrap lines like base64 and base64 -w N", function()
      for _, len in ipairs(sizes()) do
        local data = random_bytes(len)
        local pieces = random_split(data, 300)
        same(coreutils({ "base64" }, data), stream(b64.encoder { wrap = 76 }, pieces), len .. " bytes, wrap 76")
        for _, wrap in ipairs { 1, 5, 64 } do
          same(coreutils({ "base64", "-w", tostring(wrap) }, data), stream(b64.encoder { wrap = wrap }, pieces),
            len .. " bytes, wrap " .. wrap)
        end
      end
    end)
  end)

  describe("encoder", function()
    it("equals the one-shot encoding for random chunk splits", function()
      for _ = 1, 300 do
        local data = random_bytes(math.random(0, 2000))
        assert.are.equal(b64.encode(data), stream(b64.encoder(), random_split(data, 50)))
      end
    end)

    it("emits only complete groups from update and pads in finish", function()
      local enc = b64.encoder()
      assert.are.equal("", enc:update("f"))
      assert.are.equal("", enc:update("o"))
      assert.are.equal("Zm9v", enc:update("ob"))
      assert.are.equal("YmFy", enc:update("ar"))
      assert.are.equal("", enc:update(""))
      assert.are.equal("", enc:finish())
      enc = b64.encoder()
      assert.are.equal("Zm9v", enc:update("foob"))
      assert.are.equal("Yg==", enc:finish())
      assert.are.equal("", b64.encoder():finish())
    end)

    it("handles chunks of several MB", function()
      local data = random_bytes(10 * MiB + 1)
      local pieces = { data:sub(1, 5 * MiB + 1), data:sub(5 * MiB + 2, 6 * MiB), data:sub(6 * MiB + 1) }
      same(b64.encode(data), stream(b64.encoder(), pieces), "10 MiB in 3 chunks")
    end)

    it("with wrap 0 writes one line", function()
      assert.are.equal("Zm9vYmFy", stream(b64.encoder { wrap = 0 }, { "foobar" }))
    end)

    it("raises an error when used after finish()", function()
      local enc = b64.encoder()
      enc:finish()
      assert.has_error(function() enc:update("x") end, "b64 encoder: used after finish()")
      assert.has_error(function() enc:finish() end, "b64 encoder: used after finish()")
    end)
  end)

  describe("decoder", function()
    it("equals the one-shot decoding for random chunk splits, whitespace included", function()
      for _ = 1, 300 do
        local data = random_bytes(math.random(0, 2000))
        local text = stream(b64.encoder { wrap = math.random(0, 80) }, { data })
        assert.are.equal(data, stream(b64.decoder(), random_split(text, 50)))
      end
    end)

    it("carries partial groups across chunks", function()
      local dec = b64.decoder()
      assert.are.equal("", dec:update("Zm"))
      assert.are.equal("foo", dec:update("9vY"))
      assert.are.equal("", dec:update("m"))
      assert.are.equal("ba", dec:update("E="))
      assert.are.equal("", dec:update("\n"))
      assert.are.equal("", dec:finish())
    end)

    it("handles chunks of several MB", function()
      local data = random_bytes(9 * MiB)
      local text = b64.encode(data)
      local pieces = { text:sub(1, 6 * MiB + 1), text:sub(6 * MiB + 2) }
      same(data, stream(b64.decoder(), pieces), "9 MiB in 2 chunks")
    end)

    it("reports errors at their offset in the whole stream, and keeps failing", function()
      local dec = b64.decoder()
      assert.are.equal("foo", dec:update("Zm9v\n"))
      assert_invalid(8, dec:update("Zg=a"))
      assert_invalid(8, dec:update("Zm9v"))
      assert_invalid(8, dec:finish())
      assert.has_error(function() dec:update("Zm9v") end, "b64 decoder: used after finish()")
    end)

    it("reports padding split across chunks and data after it", function()
      local dec = b64.decoder()
      assert.are.equal("", dec:update("Zg="))
      assert.are.equal("f", dec:update("="))
      assert_invalid(5, dec:update(" Z"))
    end)

    it("reports a truncated stream in finish() at the stream's length", function()
      local dec = b64.decoder()
      assert.are.equal("foo", dec:update("Zm9vY"))
      assert.are.equal("", dec:update("m\n"))
      assert_invalid(7, dec:finish())
      assert.has_error(function() dec:finish() end, "b64 decoder: used after finish()")
    end)

    it("agrees with the one-shot decoder on every error case, split anywhere", function()
      for _, input in ipairs { "Zm9vYmF-", "Zg=a", "Zg==\n=", "Zm9v Y\n", "Zm8==", "Z===", "Zm9v\0" } do
        local _, want = b64.decode(input)
        for cut = 0, #input do
          local _, got = stream(b64.decoder(), { input:sub(1, cut), input:sub(cut + 1) })
          assert.are.equal(want, got)
        end
      end
    end)
  end)
end)
