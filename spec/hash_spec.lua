-- ferry.hash: SHA-256 one-shot, streaming and over files, checked against NIST vectors and sha256sum.
local ferry = require "ferry"
local helpers = require "support.helpers"
local hash = ferry.hash

local EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
local ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
local NIST_448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
local NIST_448_HEX = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
local MILLION_A_HEX = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"

local function random_bytes(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local data = n > 0 and f:read(n) or ""
  f:close()
  return data
end

local function to_hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local write_file = helpers.write_file

local function sha256sum(path)
  local res = assert(ferry.proc.run { argv = { "sha256sum", "--", path } })
  assert.are.equal(0, res.code, res.stderr)
  return res.stdout:match("^(%x+)")
end

describe("ferry.hash.sha256", function()
  it("matches the known vectors", function()
    assert.are.equal(EMPTY, hash.sha256(""))
    assert.are.equal(ABC, hash.sha256("abc"))
    assert.are.equal(NIST_448_HEX, hash.sha256(NIST_448))
    assert.are.equal(MILLION_A_HEX, hash.sha256(string.rep("a", 1000000)))
  end)

  it("hashes bytes, NUL included", function()
    assert.are_not.equal(hash.sha256("a"), hash.sha256("a\0"))
    assert.are.equal(64, #hash.sha256("\0\255"))
  end)

  it("raises on a non-string", function()
    assert.has_error(function() hash.sha256(12) end, "sha256: s must be a string, got number")
    assert.has_error(function() hash.sha256() end, "sha256: s must be a string, got no value")
  end)
end)

describe("ferry.hash.new", function()
  it("matches the known vectors when streamed", function()
    assert.are.equal(EMPTY, hash.new():hexdigest())
    assert.are.equal(ABC, hash.new():update("a"):update(""):update("bc"):hexdigest())
    local h = hash.new()
    for _ = 1, 1000 do h:update(string.rep("a", 1000)) end
    assert.are.equal(MILLION_A_HEX, h:hexdigest())
  end)

  it("gives the one-shot digest for any split of the input", function()
    math.randomseed(os.time())
    for _ = 1, 200 do
      local data = random_bytes(math.random(0, 300000))
      local h, pos = hash.new(), 1
      while pos <= #data do
        local n = math.random(1, 70000)
        h:update(data:sub(pos, pos + n - 1))
        pos = pos + n
      end
      assert.are.equal(hash.sha256(data), h:hexdigest())
    end
  end)

  it("returns itself from update, for chaining", function()
    local h = hash.new()
    assert.are.equal(h, h:update("x"))
  end)

  it("gives the raw 32 bytes from digest, the same as hexdigest", function()
    local h = hash.new():update(NIST_448)
    local raw = h:digest()
    assert.are.equal(32, #raw)
    assert.are.equal(NIST_448_HEX, to_hex(raw))
    assert.are.equal(NIST_448_HEX, h:hexdigest())
    assert.are.equal(raw, h:digest())
  end)

  it("refuses an update after a digest", function()
    local h = hash.new():update("abc")
    h:hexdigest()
    assert.has_error(function() h:update("more") end, "sha256: update after digest (the hasher is finished)")
    assert.are.equal(ABC, h:hexdigest())
  end)

  it("is closed by a <close> variable", function()
    local kept
    do
      local h <close> = hash.new()
      kept = h:update("abc")
    end
    assert.has_error(function() kept:update("x") end, "sha256: update on a closed hasher")
    assert.has_error(function() kept:hexdigest() end, "sha256: digest of a closed hasher")
  end)

  it("raises on a non-string chunk", function()
    assert.has_error(function() hash.new():update({}) end, "sha256: update: s must be a string, got table")
  end)
end)

describe("ferry.hash.sha256_file", function()
  local dir
  setup(function()
    dir = assert(ferry.proc.run { argv = { "mktemp", "-d" } }).stdout:gsub("\n$", "")
  end)
  teardown(function() assert(ferry.proc.run { argv = { "rm", "-rf", dir } }) end)

  it("equals sha256sum on files around the 64 KiB block size and a 5 MB file", function()
    for _, size in ipairs { 0, 1, 65535, 65536, 65537, 131072, 131073, 5 * 1000 * 1000 } do
      local path = dir .. "/f" .. size
      local data = random_bytes(size)
      write_file(path, data)
      local got = hash.sha256_file(path)
      assert.are.equal(sha256sum(path), got, "size " .. size)
      assert.are.equal(hash.sha256(data), got, "size " .. size)
    end
  end)

  it("reports a missing file with its path and ENOENT", function()
    local path = dir .. "/missing"
    local hex, err, code = hash.sha256_file(path)
    assert.is_nil(hex)
    assert.are.equal("sha256 " .. path .. ": No such file or directory", err)
    assert.are.equal("ENOENT", code)
  end)

  it("reports a directory with EISDIR", function()
    local hex, err, code = hash.sha256_file(dir)
    assert.is_nil(hex)
    assert.are.equal("sha256 " .. dir .. ": Is a directory", err)
    assert.are.equal("EISDIR", code)
  end)

  it("raises on a bad path argument", function()
    assert.has_error(function() hash.sha256_file(nil) end, "sha256_file: path must be a string, got nil")
    assert.has_error(function() hash.sha256_file(dir .. "/a\0b") end, "sha256_file: path contains a NUL byte")
  end)
end)
