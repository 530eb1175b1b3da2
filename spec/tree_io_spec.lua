-- A tree to bytes and back (tree:dump, core.tree_load): every field survives, and anything cut short,
-- flipped or crafted is refused with "corrupt tree: <why>", never a crash. And the sandbox's listing read
-- straight into a tree (core.tree_parse_listing), checked against a second reader of the format, on crafted
-- listings and on what a `local` sandbox prints.
local ferry = require "ferry"
local core = require "ferry.core"
local listing = require "ferry.listing"
local helpers = require "support.helpers"
local trees = require "support.trees"
local W = require "support.workspaces"

local SUM = ("0123456789abcdef"):rep(4)
local ALL = "kind mode size mtime_ns ino dev sha256 target flags implied name"

-- Every entry with every field, in order.
local function rows(t)
  local out = {}
  for rel, kind, mode, size, mtime_ns, ino, dev, sha, target, flags, implied, name in t:iter(nil, ALL) do
    out[#out + 1] = { rel, kind, mode, size, mtime_ns, ino, dev, sha or false, target or false, flags, implied, name }
  end
  return out
end

local function sample()
  local t = core.tree_new()
  t:add("d", { kind = "dir", mode = 1517, mtime_ns = 1700000000123456789, ino = 12, dev = 2049 })
  t:add("d/f", { kind = "file", mode = 420, size = 123456789012, mtime_ns = -5, ino = 1 << 62, dev = 77,
    sha256 = SUM, flags = 9 })
  t:add("d/g", { kind = "file", size = 3 })
  t:add("d/l", { kind = "symlink", target = "../ü\n" })
  t:add("new\nline \255", { kind = "other", mode = 4095 })
  t:add(("p"):rep(4096), { kind = "file" })
  t:taken_at(1700000000.5)
  return t
end

-- The dump format, written by hand for crafted inputs (see tree_io.c).
local function varint(n)
  local out = {}
  repeat
    local b = n & 127
    n = n >> 7
    out[#out + 1] = string.char(n ~= 0 and (b | 128) or b)
  until n == 0
  return table.concat(out)
end

local function le(n, bytes)
  local out = {}
  for i = 1, bytes do out[i] = string.char((n >> (8 * (i - 1))) & 255) end
  return table.concat(out)
end

local function sealed(body, count, version)
  local h = core.sha256_new()
  h:update(body)
  return "FERRYTRE" .. le(version or 1, 4) .. le(count, 8) .. le(#body, 8) .. h:digest() .. body
end

-- One encoded entry: prefix shared with the previous path, the rest, then the fields.
local function entry(common, rest, f)
  f = f or {}
  return varint(common) .. varint(#rest) .. rest .. string.char(f.bits or 2) .. string.char(f.flags or 0)
    .. varint(f.mode or 493) .. varint(f.size or 0) .. varint(f.sec or 0) .. varint(f.nsec or 0) .. varint(0)
    .. string.char(f.dev or 0) .. (f.sha or "") .. varint(f.link and #f.link or 0) .. (f.link or "")
    .. (f.counts or "")
end

local PRELUDE = "\0" .. varint(0) .. varint(0) .. varint(1) .. varint(0) -- no taken_at, one device (0)

describe("tree:dump and core.tree_load", function()
  it("round-trip every field, and taken_at", function()
    local t = sample()
    local u = assert(core.tree_load(t:dump()))
    assert.same(rows(t), rows(u))
    assert.equal(1700000000.5, u:taken_at())
    assert.equal(t:dump(), u:dump())
  end)

  it("round-trip an empty tree, and leave removed entries out", function()
    local e = assert(core.tree_load(core.tree_new():dump()))
    assert.equal(0, e:count())
    assert.is_nil(e:taken_at())
    local t = sample()
    t:remove("d/g")
    local u = assert(core.tree_load(t:dump()))
    assert.is_nil(u:get("d/g"))
    assert.equal(t:count(), u:count())
  end)

  it("front-codes the paths: a deep tree dumps smaller than its paths alone", function()
    local t, bytes = core.tree_new(), 0
    for i = 1, 2000 do
      local rel = string.format("some/long/directory/name/%04d.txt", i)
      t:add(rel, { kind = "file", size = i })
      bytes = bytes + #rel
    end
    local dump = t:dump()
    assert.is_true(#dump < bytes * 0.6, #dump .. " bytes for " .. bytes .. " bytes of paths")
  end)

  it("refuses the dump cut at every length", function()
    local dump = sample():dump()
    for n = 0, #dump - 1 do
      local t, err, code = core.tree_load(dump:sub(1, n))
      assert.is_nil(t, "cut at " .. n)
      assert.matches("^corrupt tree: ", err)
      assert.equal("EINVAL", code)
    end
  end)

  it("refuses the dump with any byte flipped", function()
    local dump = sample():dump()
    for i = 1, #dump do
      local bad = dump:sub(1, i - 1) .. string.char(dump:byte(i) ~ 0x41) .. dump:sub(i + 1)
      local t, err = core.tree_load(bad)
      assert.is_nil(t, "byte " .. i)
      assert.matches("^corrupt tree: ", err)
    end
  end)

  it("names what is wrong with the header", function()
    local dump = core.tree_new():dump()
    assert.same({ nil, "corrupt tree: 10 bytes, shorter than the header", "EINVAL" },
      { core.tree_load(dump:sub(1, 10)) })
    assert.same({ nil, "corrupt tree: not a ferry tree (bad magic)", "EINVAL" },
      { core.tree_load("X" .. dump:sub(2)) })
    assert.same({ nil, "corrupt tree: version 2, this ferry reads version 1", "EINVAL" },
      { core.tree_load(sealed(PRELUDE, 0, 2)) })
    assert.same({ nil, "corrupt tree: the header says " .. (#dump - 60) .. " bytes of entries, " .. (#dump - 59)
      .. " follow", "EINVAL" }, { core.tree_load(dump .. "x") })
    assert.same({ nil, "corrupt tree: checksum mismatch", "EINVAL" },
      { core.tree_load(dump:sub(1, 59) .. string.char(dump:byte(60) ~ 1) .. dump:sub(61)) })
  end)

  it("refuses crafted entries that carry a valid checksum", function()
    local sha = ("\171"):rep(32)
    local cases = {
      ["entry 2: out of order"] = { entry(0, "b") .. entry(0, "a"), 2 },
      ["entry 2: out of order "] = { entry(0, "a") .. entry(0, "a"), 2 },
      ["entry 2: bad path length"] = { entry(0, "a") .. entry(5, "b"), 2 },
      ["entry 1: bad path"] = { entry(0, "a/../b"), 1 },
      ["entry 1: bad path "] = { entry(0, ""), 1 },
      ["entry 1: bad kind"] = { entry(0, "a", { bits = 5 }), 1 },
      ["entry 1: bad kind "] = { entry(0, "a", { bits = 2 | 64 }), 1 },
      ["entry 1: bad mode"] = { entry(0, "a", { mode = 4096 }), 1 },
      ["entry 1: bad mtime"] = { entry(0, "a", { nsec = 1000000000 }), 1 },
      ["entry 1: bad device index"] = { entry(0, "a", { dev = 1 }), 1 },
      ["entry 1: bad link length"] = { entry(0, "a", { bits = 3, link = ("x"):rep(32768) }), 1 },
      ["entry 1: bad name counts"] = { entry(0, "a", { bits = 2 | 32, counts = "\0\0" }), 1 },
      ["entry 1: truncated"] = { entry(0, "a", { bits = 1 | 8, sha = sha:sub(1, 10) }), 1 },
      ["entry 2: truncated"] = { entry(0, "a", { bits = 3, link = ("x"):rep(40) }) .. entry(1, "/b"):sub(1, 4), 2 },
      ["bytes after the last entry"] = { entry(0, "a") .. "\0", 1 },
      ["more entries than the bytes can hold"] = { entry(0, "a"), 1000 },
      ["entry 1: a number over 64 bits"] = { varint(0) .. ("\255"):rep(10) .. "\1", 1 },
    }
    for want, case in pairs(cases) do
      local t, err, code = core.tree_load(sealed(PRELUDE .. case[1], case[2]))
      assert.is_nil(t, want)
      assert.equal("corrupt tree: " .. want:gsub(" $", ""), err)
      assert.equal("EINVAL", code)
    end
    local ok = assert(core.tree_load(sealed(PRELUDE .. entry(0, "a", { bits = 1 | 8, sha = sha, size = 4 })
      .. entry(1, "/b", { bits = 3, link = "t" }), 2)))
    assert.equal(("ab"):rep(32), ok:get("a").sha256)
    assert.equal("t", ok:get("a/b").target)
  end)

  it("refuses what is no string", function()
    assert.has_error(function() core.tree_load(nil) end, "tree_load: bytes must be a string, got nil")
  end)
end)

describe("tree:write and core.tree_read", function()
  local tmp
  before_each(function()
    tmp = helpers.tmpdir()
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  it("write the dump atomically (mode 0600 unless told) and read it back, each giving the checksum", function()
    local t = sample()
    local path = tmp .. "/state.tree"
    helpers.write_file(path, "an older file")
    local ok, sum = t:write(path)
    assert.is_true(ok)
    local dump = t:dump()
    assert.equal(dump, helpers.read_file(path))
    assert.equal(core.sha256(dump:sub(61)), sum) -- the header's checksum of the body
    assert.equal(384, core.fs_lstat(path).mode)
    local back, read_sum = assert(core.tree_read(path))
    assert.same(rows(t), rows(back))
    assert.equal(sum, read_sum)
    assert.equal(sum, select(2, core.tree_load(dump)))
    assert.same({ "state.tree" }, core.fs_readdir(tmp)) -- no temp file left
    assert.is_true(core.tree_new():write(tmp .. "/empty.tree", 420))
    assert.equal(420, core.fs_lstat(tmp .. "/empty.tree").mode)
    assert.equal(0, assert(core.tree_read(tmp .. "/empty.tree")):count())
  end)

  it("fail clearly on a missing dir or file, an empty or damaged file, and misuse", function()
    local t = sample()
    assert.same({ nil, "tree_write " .. tmp .. "/no/x.tree: No such file or directory", "ENOENT" },
      { t:write(tmp .. "/no/x.tree") })
    assert.same({ nil, "tree_read " .. tmp .. "/none: No such file or directory", "ENOENT" },
      { core.tree_read(tmp .. "/none") })
    assert.same({ nil, "tree_read " .. tmp .. ": Invalid argument", "EINVAL" }, { core.tree_read(tmp) })
    helpers.write_file(tmp .. "/empty", "")
    assert.same({ nil, "corrupt tree: 0 bytes, shorter than the header", "EINVAL" },
      { core.tree_read(tmp .. "/empty") })
    local dump = t:dump()
    helpers.write_file(tmp .. "/bad", dump:sub(1, 100) .. "x" .. dump:sub(102))
    assert.same({ nil, "corrupt tree: checksum mismatch", "EINVAL" }, { core.tree_read(tmp .. "/bad") })
    assert.has_error(function() t:write(tmp .. "/") end, "tree: write: path must name a file, got '" .. tmp .. "/'")
    assert.has_error(function() t:write(tmp .. "/m", 4095) end, "tree: write: mode must be in 0..0777")
    assert.has_error(function() core.tree_read("") end, "tree_read: path is empty")
  end)
end)

-- One listing record: changed mark, kind letter, mode, size, mtime, inode, device, ./path, link target.
local function rec(kind, mode, size, path, target, mtime, mark)
  return table.concat({ mark or "u", kind, mode, size, mtime or "1700000000.2500000000", "7", "2049", "./" .. path,
    target or "" }, "\0") .. "\0"
end

local LISTING = rec("d", "755", "4096", "dir") .. rec("f", "644", "6", "dir/a b.txt", "", nil, "c")
  .. rec("l", "777", "5", "link", "dir/a") .. rec("p", "644", "0", "fifo") .. rec("f", "600", "3", "new\nline")

-- A second reader of the format (fields split on NUL), for what the tree must hold.
local function reference(text)
  local fields = {}
  for field in text:gmatch("([^\0]*)\0") do fields[#fields + 1] = field end
  local out, i = {}, 2
  if fields[1] == "I" and fields[2] == "R" then i = 3 end
  while fields[i] ~= "E" and fields[i] ~= "H" do
    local mark, kind, mode, size, mtime, ino, dev, path, target = table.unpack(fields, i, i + 8)
    local k = ({ f = "file", d = "dir", l = "symlink" })[kind] or "other"
    out[path:sub(3)] = { kind = k, mode = tonumber(mode, 8), size = k == "file" and tonumber(size) or 0,
      mtime = mtime, ino = tonumber(ino), dev = tonumber(dev), target = k == "symlink" and target or nil,
      flags = mark == "c" and 1 or 0 }
    i = i + 9
  end
  if fields[i] == "H" then
    i = i + 1
    while fields[i] ~= "E" do
      local e, sum = out[fields[i]:sub(3)], fields[i + 1]:match("^(%x+)")
      if e and e.kind == "file" and sum and #sum == 64 then e.sha256 = sum:lower() end
      i = i + 2
    end
  end
  return out
end

-- The tree holds what the reference reads, every field.
local function assert_same_listing(text)
  local want = reference(text)
  local t, info = assert(core.tree_parse_listing(text))
  local n = 0
  for rel, kind, mode, size, mtime_ns, ino, dev, sha, target, flags in
      t:iter(nil, "kind mode size mtime_ns ino dev sha256 target flags") do
    n = n + 1
    local e = want[rel]
    assert.same({ e.kind, e.mode, e.size, e.ino, e.dev, e.sha256, e.target, e.flags },
      { kind, mode, size, ino, dev, sha, target, flags }, rel)
    local sec, frac = e.mtime:match("^(%d+)%.(%d+)$")
    assert.equal(tonumber(sec) * 1000000000 + tonumber((frac .. "000000000"):sub(1, 9)), mtime_ns, rel)
  end
  assert.equal(W.count(want), n)
  return t, info
end

describe("core.tree_parse_listing", function()
  it("reads a full listing: every field, the changed marks, the hashes", function()
    local t, info = assert_same_listing("F\0" .. LISTING .. "H\0./dir/a b.txt\0" .. SUM:upper() .. "  -\n\0"
      .. "./new\nline\0\0./dir\0" .. SUM .. "\0./unlisted\0" .. SUM .. "\0./fifo\0" .. SUM:sub(1, 40)
      .. "\0E\0trailing")
    assert.same({ incremental = false, root_changed = false }, info)
    assert.equal(SUM, t:get("dir/a b.txt").sha256)
    assert.equal(1, t:get("dir/a b.txt").flags)
    assert.same({ "dir", "dir/a b.txt", "fifo", "link", "new\nline" }, trees.paths(t))
    assert.equal(0, assert(core.tree_parse_listing("F\0E\0")):count())
    assert.equal(0, assert(core.tree_parse_listing("F\0H\0E\0")):count())
  end)

  it("reads an incremental listing's header: what changed, and whether the remote dir did", function()
    local _, info = assert_same_listing("I\0R\0" .. LISTING .. "E\0")
    assert.same({ incremental = true, root_changed = true }, info)
    _, info = assert_same_listing("I\0E\0")
    assert.same({ incremental = true, root_changed = false }, info)
  end)

  it("keeps the last record of a path listed twice", function()
    local t = assert(core.tree_parse_listing("F\0" .. rec("f", "644", "1", "x") .. rec("d", "700", "0", "x") .. "E\0"))
    assert.equal("dir", t:get("x").kind)
    assert.equal(448, t:get("x").mode)
  end)

  it("reads negative and fractionless mtimes exactly", function()
    local t = assert(core.tree_parse_listing("F\0" .. rec("f", "644", "1", "a", "", "-1.25")
      .. rec("f", "644", "1", "b", "", "7")
      .. rec("f", "644", "1", "c", "", "1.1234567891") .. "E\0"))
    assert.equal(-1250000000, t:get("a").mtime_ns)
    assert.equal(7000000000, t:get("b").mtime_ns)
    assert.equal(1123456789, t:get("c").mtime_ns)
  end)

  it("returns nil and why for output cut short anywhere", function()
    local full = "F\0" .. LISTING .. "H\0./dir/a b.txt\0" .. SUM .. "\0E\0"
    for cut = 0, #full - 1 do
      local t, err, code = core.tree_parse_listing(full:sub(1, cut))
      assert.is_nil(t, "cut at " .. cut)
      assert.matches("^listing: ", err)
      assert.equal("EINVAL", code)
    end
    assert.same({ nil, "listing: cut short", "EINVAL" }, { core.tree_parse_listing("") })
  end)

  it("refuses malformed records, naming the byte where the record starts", function()
    local first = "F\0" .. rec("d", "755", "1", "ok")
    local bad = {
      ["bad path"] = "u\0f\0" .. "644\0" .. "1\0" .. "1.0\0" .. "7\0" .. "1\0" .. "plain\0" .. "\0E\0",
      ["bad mode"] = rec("f", "rw-", "1", "x") .. "E\0",
      ["bad path "] = rec("f", "644", "1", "") .. "E\0",
      ["bad mode "] = rec("f", "8", "1", "x") .. "E\0",
      ["bad mode  "] = rec("f", "17777", "1", "x") .. "E\0",
      ["bad size"] = rec("f", "644", "1x", "x") .. "E\0",
      ["bad mtime"] = rec("f", "644", "1", "x", "", "1.2.3") .. "E\0",
      ["bad mtime "] = rec("f", "644", "1", "x", "", "") .. "E\0",
      ["bad path  "] = rec("f", "644", "1", "a/../b") .. "E\0",
      ["bad record"] = rec("f", "644", "1", "x", "", nil, "x") .. "E\0",
      ["bad inode"] = "u\0f\0" .. "644\0" .. "1\0" .. "1.0\0" .. "-7\0" .. "1\0" .. "./x\0" .. "\0E\0",
      ["bad device"] = "u\0f\0" .. "644\0" .. "1\0" .. "1.0\0" .. "7\0" .. "d\0" .. "./x\0" .. "\0E\0",
      ["bad path in the hashes"] = "H\0" .. "dir/a b.txt\0" .. SUM .. "\0E\0",
    }
    for what, text in pairs(bad) do
      local t, err = core.tree_parse_listing(first .. text)
      assert.is_nil(t, what)
      local at = #first + (text:sub(1, 2) == "H\0" and 2 or 0)
      assert.equal("listing: malformed record at byte " .. at .. ": " .. what:gsub(" +$", ""), err)
    end
    assert.same({ nil, "listing: malformed record at byte " .. (#LISTING + 4) .. ": bad path in the hashes", "EINVAL" },
      { core.tree_parse_listing("F\0" .. LISTING .. "H\0H\0E\0") }) -- a second hash section
    assert.same({ nil, "listing: malformed record at byte 0: no header", "EINVAL" },
      { core.tree_parse_listing(LISTING .. "E\0") })
    assert.has_error(function() core.tree_parse_listing(false) end,
      "tree_parse_listing: bytes must be a string, got boolean")
  end)

  describe("on a local sandbox's listing", function()
    local tmp
    before_each(function()
      tmp = helpers.tmpdir()
    end)
    after_each(function()
      helpers.rmtree(tmp)
    end)

    it("reads what the listing command prints, inodes, devices and hashes included", function()
      local root = tmp .. "/remote"
      W.fill(root)
      W.write(root, ".ferry-runtime/x", "kept for ferry\n")
      W.write(root, ".ferry-runtime/sync.mark", "")
      helpers.sh("touch -d '-1 hour' " .. core.sh_quote(root .. "/.ferry-runtime/sync.mark"))
      helpers.sh("mkfifo " .. core.sh_quote(root .. "/pipe"))
      local sb = assert(ferry.open("local"))
      local res = assert(sb:exec(listing.list_script(root, { ".ferry-runtime" }, { "node_modules/" })))
      sb:close()
      assert.equal(0, res.code, res.stderr)
      assert.matches("H%z", res.stdout)
      local t = assert_same_listing(res.stdout)
      assert.equal(core.sha256_file(root .. "/plain.txt"), t:get("plain.txt").sha256)
      assert.equal(1, t:get("plain.txt").flags) -- changed after the marker
      local st = assert(core.fs_lstat(root .. "/plain.txt"))
      assert.same({ st.ino, st.dev }, { t:get("plain.txt").ino, t:get("plain.txt").dev })
      assert.equal("other", t:get("pipe").kind)
      assert.is_nil(t:get("node_modules/pkg"))
    end)
  end)
end)
