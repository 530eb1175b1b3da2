-- ferry.util: the small helpers the engine library shares.
local util = require "ferry.util"
local core = require "ferry.core"
local snapshot = require "ferry.snapshot"
local helpers = require "support.helpers"

describe("util", function()
  it("parent_of: the parent of a relative path, or `top` for one component", function()
    assert.equal("a/b", util.parent_of("a/b/c"))
    assert.equal("a", util.parent_of("a/b"))
    assert.is_nil(util.parent_of("a"))
    assert.equal("", util.parent_of("a", ""))
    assert.equal("a", util.parent_of("a/b", ""))
  end)

  it("split_path: directory and last component", function()
    assert.same({ "a", "b" }, { util.split_path("a/b") })
    assert.same({ "/x/y", "z" }, { util.split_path("/x/y/z") })
    assert.same({ "/", "b" }, { util.split_path("/b") })
    assert.same({ ".", "b" }, { util.split_path("b") })
  end)

  it("trim_slashes and sorted", function()
    assert.equal("/a/b", util.trim_slashes("/a/b///"))
    assert.equal("", util.trim_slashes("/"))
    local t = { "b", "a" }
    assert.equal(t, util.sorted(t))
    assert.same({ "a", "b" }, t)
  end)

  it("absolute: relative paths from the current directory", function()
    assert.equal("/x/y", util.absolute("/x/y"))
    local pwd = util.absolute(".")
    assert.equal(core.fs_stat(".").ino, core.fs_stat(pwd).ino)
    assert.equal(pwd .. "/a/b", util.absolute("./a/b"))
    assert.equal(pwd .. "/a", util.absolute("a"))
  end)

  it("tail: the last non-blank lines, joined and cut", function()
    local text = "one\n\n  \ntwo\r\nthree\nfour\n"
    assert.equal("two; three; four", util.tail(text))
    assert.equal("", util.tail(nil))
    assert.equal("", util.tail(" \n\t\n"))
    assert.equal("three | four", util.tail(text, { lines = 2, sep = " | " }))
    assert.equal("one | two", util.tail("one\nferry-install: rc=1\ntwo\n", { sep = " | ", skip = "^ferry%-install: " }))
    local long = ("x"):rep(300) .. "\n" .. ("y"):rep(300)
    assert.equal(("y"):rep(10), util.tail(long, { max = 10 }))
    assert.equal(("x"):rep(10), util.tail(long, { max = 10, cut = "start" }))
  end)

  it("unique_hex: hex digits no other call returns", function()
    local seen = {}
    for _ = 1, 1000 do
      local id = util.unique_hex(16)
      assert.matches("^%x+$", id)
      assert.equal(16, #id)
      assert.is_nil(seen[id])
      seen[id] = true
    end
    assert.equal(40, #util.unique_hex(40))
  end)
end)

describe("the temp-name prefix", function()
  it("is one string shared by the core's safe writes and the Lua side, with this run's token", function()
    assert.equal(".ferry-tmp-", core.TEMP_PREFIX)
    assert.matches("^%x+$", core.TEMP_TOKEN)
    assert.equal(16, #core.TEMP_TOKEN)
    local mine = core.TEMP_PREFIX .. core.TEMP_TOKEN .. "-" .. util.unique_hex(16)
    assert.equal(core.TEMP_TOKEN, snapshot.temp_token(mine))
    assert.is_true(snapshot.is_temp_name(mine, { [core.TEMP_TOKEN] = true }))
    assert.is_true(snapshot.is_temp_name(mine, true))
    assert.is_false(snapshot.is_temp_name(mine, { ["0123456789abcdef"] = true }))
    assert.is_false(snapshot.is_temp_name(mine)) -- no token recorded: a name like any other
    assert.is_false(snapshot.is_temp_name(core.TEMP_PREFIX .. util.unique_hex(16), true)) -- the old shape
    assert.is_false(snapshot.is_temp_name(core.TEMP_PREFIX, true))
    assert.is_false(snapshot.is_temp_name("x" .. mine, true))
    assert.is_false(snapshot.is_temp_name(mine .. "0", true))
  end)
end)

describe("the quick key", function()
  it("is the one core.fs_safe_remove and core.tar_extract compare, from an lstat or a tree entry", function()
    local st = { mode = 33188, size = 3, ino = 12, mtime = 1700000000.25 }
    assert.equal("644 3 12 1700000000.25", snapshot.quick_key(st))
    assert.equal("file 644 3 12 1700000000.25", snapshot.expect_key({ kind = "file", mode = 33188, size = 3, ino = 12,
      mtime = 1700000000.25 }))
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/f", "abc")
    local t = assert(core.tree_walk(dir, {}))
    local e = t:get("f")
    assert.equal(snapshot.expect_key(assert(core.fs_lstat(dir .. "/f"))), snapshot.expect_key(e))
    assert(core.fs_safe_remove(dir, "f", snapshot.expect_key(e)))
    helpers.rmtree(dir)
  end)
end)
