-- The options of the bwrap provider (README "Providers"): `bwrap:DIR?net=1` shares the host's network (an
-- agent installs and reaches its API), `home=0` gives each command an empty HOME; the default has no
-- network and DIR/home as a kept HOME; a DIR whose parent does not exist is an error, not created.
local ferry = require "ferry"
local core = require "ferry.core"
local helpers = require "support.helpers"
local http = require "ferry.http"
local bwrap = require "providers.bwrap"

local BWRAP_WORKS = require("support.sandboxes").BWRAP_WORKS

describe("bwrap options", function()
  local tmp
  before_each(function() tmp = helpers.tmpdir() end)
  after_each(function() helpers.rmtree(tmp) end)

  it("parse from the provider string", function()
    assert.are.same({ dir = "/x/box", net = false, home = true }, bwrap.parse("/x/box"))
    assert.are.same({ dir = "/x/box", net = true, home = false }, bwrap.parse("/x/box?net=1&home=0"))
    assert.are.same({ dir = "/x/box", net = false, home = true }, bwrap.parse("/x/box?net=0&home=1"))
    assert.are.same({ nil, "unknown option 'nett' (home, net)" }, { bwrap.parse("/x/box?nett=1") })
    assert.are.same({ nil, "unknown option 'net' (home, net)" }, { bwrap.parse("/x/box?net") })
    assert.are.same({ nil, "option net expects 0 or 1, got 'yes'" }, { bwrap.parse("/x/box?net=yes") })
    assert.are.same({ nil, "expected a host dir to hold the sandbox's files, e.g. bwrap:/tmp/box" },
      { bwrap.parse("?net=1") })
  end)

  it("refuses a DIR whose parent does not exist, and creates nothing", function()
    local sb, err, code = ferry.open("bwrap:" .. tmp .. "/mistyped/path")
    assert.are.same({ nil, "bwrap:" .. tmp .. "/mistyped/path: " .. tmp .. "/mistyped does not exist", "ENOENT" },
      { sb, err, code })
    assert.is_nil(core.fs_lstat(tmp .. "/mistyped"))
    helpers.write_file(tmp .. "/file", "")
    sb, err = ferry.open("bwrap:" .. tmp .. "/file/box?net=1")
    assert.are.same({ nil, "bwrap:" .. tmp .. "/file/box?net=1: " .. tmp .. "/file is not a directory" }, { sb, err })
    sb, err = ferry.open("bwrap:" .. tmp .. "/box?color=1")
    assert.are.same({ nil, "bwrap:" .. tmp .. "/box?color=1: unknown option 'color' (home, net)" }, { sb, err })
  end)

  describe("in a sandbox", function()
    if not BWRAP_WORKS then
      pending("bubblewrap cannot create a sandbox here")
      return
    end

    local function run(provider, script)
      local sb = assert(ferry.open(provider))
      local res = assert(sb:exec(script))
      sb:close()
      return res
    end

    it("makes DIR when its parent exists, with home and workspace", function()
      assert.are.equal(0, run("bwrap:" .. tmp .. "/box", "true").code)
      for _, d in ipairs { "home", "workspace", "tmp" } do assert.truthy(core.fs_stat(tmp .. "/box/" .. d)) end
    end)

    it("has no network by default; net=1 reaches the host's loopback and sees resolv.conf", function()
      local srv = assert(http.listen({ host = "127.0.0.1", port = 0 }, function(_, res)
        res:respond(200, { ["content-type"] = "text/plain" }, "hello from the host\n")
      end))
      finally(function() srv:close() end)
      local fetch = "curl -sS --max-time 5 http://127.0.0.1:" .. srv.port .. "/"
      local res = run("bwrap:" .. tmp .. "/box", fetch)
      assert.are_not.equal(0, res.code)
      res = run("bwrap:" .. tmp .. "/box?net=1", fetch .. " && cat /etc/resolv.conf")
      local resolv = helpers.read_file("/etc/resolv.conf") or ""
      assert.are.same({ 0, "hello from the host\n" .. resolv }, { res.code, res.stdout })
    end)

    it("keeps DIR/home as HOME by default; home=0 gives each command an empty one", function()
      local kept = "bwrap:" .. tmp .. "/box"
      assert.are.equal(0, run(kept, 'echo kept > "$HOME/note"').code)
      assert.are.equal("kept\n", run(kept, 'cat "$HOME/note"').stdout)
      local fresh = "bwrap:" .. tmp .. "/box?home=0"
      local res = run(fresh, 'echo "$HOME"; ls -A "$HOME"; echo new > "$HOME/other" && cat "$HOME/other"')
      assert.are.same({ 0, "/sandbox/home\nnew\n" }, { res.code, res.stdout })
      assert.are.equal("", run(fresh, 'ls -A "$HOME"').stdout)
      assert.is_nil(core.fs_lstat(tmp .. "/box/home/other"))
    end)
  end)
end)
