-- ferry.remote.parse_listing: what the sandbox's listing prints (NUL-separated records, "H" then the hashes
-- of the files modified since the last sync, then "E") read back, and nil for anything cut short or
-- malformed (a delta then falls back to a full sync).
local ferry = require "ferry"
local remote = require "ferry.remote"
local helpers = require "support.helpers"
local W = require "support.workspaces"

local SUM = ("0123456789abcdef"):rep(4)

-- One listing record: kind letter, mode, size, mtime, ./path, link target.
local function rec(kind, mode, size, path, target)
  return table.concat({ kind, mode, size, "1700000000.2500000000", "./" .. path, target or "" }, "\0") .. "\0"
end

local LISTING = rec("d", "755", "4096", "dir") .. rec("f", "644", "6", "dir/a b.txt")
  .. rec("l", "777", "5", "link", "dir/a") .. rec("p", "644", "0", "fifo") .. rec("f", "600", "3", "new\nline")

describe("remote.parse_listing", function()
  it("reads every record: kind, mode, size, mtime, link target", function()
    local entries = assert(remote.parse_listing(LISTING .. "E\0"))
    assert.same({ kind = "dir", mode = "755", size = "4096", mtime = "1700000000.2500000000", target = "" },
      entries["dir"])
    assert.same({ kind = "file", mode = "644", size = "6", mtime = "1700000000.2500000000", target = "" },
      entries["dir/a b.txt"])
    assert.equal("symlink", entries["link"].kind)
    assert.equal("dir/a", entries["link"].target)
    assert.equal("other", entries["fifo"].kind)
    assert.equal("file", entries["new\nline"].kind)
  end)

  it("reads an empty tree", function()
    assert.same({}, remote.parse_listing("E\0"))
    assert.same({}, remote.parse_listing("H\0E\0"))
  end)

  it("takes each file's hash from sha256sum's output, lowercased", function()
    local entries = assert(remote.parse_listing(LISTING .. "H\0"
      .. "./dir/a b.txt\0" .. SUM:upper() .. "  -\n\0"
      .. "./new\nline\0" .. SUM .. "\n\0"
      .. "E\0"))
    assert.equal(SUM, entries["dir/a b.txt"].sha256)
    assert.equal(SUM, entries["new\nline"].sha256)
  end)

  it("ignores a hash that is empty (unreadable file), short, or of something that is not a listed file", function()
    local entries = assert(remote.parse_listing(LISTING .. "H\0"
      .. "./dir/a b.txt\0\0"
      .. "./new\nline\0" .. SUM:sub(1, 40) .. "\0"
      .. "./dir\0" .. SUM .. "\0"
      .. "./unlisted\0" .. SUM .. "\0"
      .. "E\0"))
    assert.is_nil(entries["dir/a b.txt"].sha256)
    assert.is_nil(entries["new\nline"].sha256)
    assert.is_nil(entries["dir"].sha256)
    assert.is_nil(entries["unlisted"])
  end)

  it("returns nil for output cut short anywhere", function()
    local full = LISTING .. "H\0./dir/a b.txt\0" .. SUM .. "\0E\0"
    for cut = 0, #full - 1 do
      assert.is_nil(remote.parse_listing(full:sub(1, cut)), "cut at " .. cut)
    end
    assert.is_nil(remote.parse_listing(""))
  end)

  it("returns nil for malformed records", function()
    local bad = {
      ["a path without ./"] = "f\0" .. "644\0" .. "1\0" .. "1.0\0" .. "plain\0" .. "\0E\0",
      ["a mode that is not a number"] = rec("f", "rw-", "1", "x") .. "E\0",
      ["an empty path"] = rec("f", "644", "1", "") .. "E\0",
      ["a record with fields missing"] = "f\0" .. "644\0" .. "1\0" .. "E\0",
      ["a hash record without ./"] = LISTING .. "H\0" .. "dir/a b.txt\0" .. SUM .. "\0E\0",
      ["a second hash section"] = LISTING .. "H\0H\0E\0",
      ["text that is no listing"] = "find: unknown predicate `-printf'\n",
    }
    for what, text in pairs(bad) do
      assert.is_nil(remote.parse_listing(text), what)
    end
  end)
end)

describe("remote.list_script", function()
  local tmp

  before_each(function()
    tmp = helpers.tmpdir()
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  it("prints what parse_listing reads, preserved names and pruned excludes left out", function()
    local root = tmp .. "/remote"
    W.write(root, "sub dir/file.txt", "hello\n", 384)
    W.write(root, "node_modules/pkg/index.js", "excluded\n")
    W.write(root, ".ferry-runtime/x", "kept for ferry\n")
    W.symlink(root, "link", "sub dir/file.txt")
    local sb = assert(ferry.open("local"))
    local res = assert(sb:exec(remote.list_script(root, { ".ferry-runtime" }, { "node_modules/" })))
    sb:close()
    assert.equal(0, res.code, res.stderr)
    local entries = assert(remote.parse_listing(res.stdout))
    assert.same({ "link", "node_modules", "sub dir", "sub dir/file.txt" }, (function()
      local names = {}
      for rel in pairs(entries) do names[#names + 1] = rel end
      table.sort(names)
      return names
    end)())
    assert.same({ kind = "file", mode = "600", size = "6" }, { kind = entries["sub dir/file.txt"].kind,
      mode = entries["sub dir/file.txt"].mode, size = entries["sub dir/file.txt"].size })
    assert.equal("sub dir/file.txt", entries["link"].target)
    assert.equal("dir", entries["node_modules"].kind)
  end)
end)
