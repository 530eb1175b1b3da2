local ferry = require "ferry"
local helpers = require "support.helpers"

local function sh(script, env)
  return assert(ferry.proc.run { argv = { "sh", "-c", script }, env = env, timeout_ms = 120000 })
end

describe("embedding ferry in a C host", function()
  local prefix, work

  setup(function()
    prefix = helpers.tmpdir()
    work = helpers.tmpdir()
    local r = sh("make -s install PREFIX=" .. prefix .. " 2>&1", { MAKEFLAGS = false })
    assert(r.code == 0, r.stdout)
  end)

  teardown(function()
    helpers.rmtree(prefix)
    helpers.rmtree(work)
  end)

  local expected = table.concat({
    "log[2]: from lua",
    "result: hello from a child",
    "error has traceback: 1",
    "error names it: 1",
    "error cleared: 1",
    "log lines: 1",
    "host loop closes after free: 0",
    "dofile: 0 ",
    "missing file fails: 1",
  }, "\n") .. "\n"

  it("builds against the installed shared library through pkg-config and runs ferry code", function()
    local env = { PKG_CONFIG_PATH = prefix .. "/lib/pkgconfig" }
    local r = sh("cd " .. work .. " && cc -Wall -Werror -o host " .. helpers.root ..
      "/spec/support/host/host.c $(pkg-config --cflags --libs ferry) && LD_LIBRARY_PATH=" .. prefix ..
      "/lib ./host", env)
    assert.equal("", r.stderr)
    assert.equal(0, r.code)
    assert.equal(expected, r.stdout)
  end)

  it("links libferry.a into a host", function()
    -- the static archive with the dependencies' shared libraries (Debian lacks some static ones)
    local env = { PKG_CONFIG_PATH = prefix .. "/lib/pkgconfig" }
    local r = sh("cd " .. work .. " && cc -o host-static " .. helpers.root ..
      "/spec/support/host/host.c " .. prefix .. "/lib/libferry.a $(pkg-config --cflags ferry) " ..
      "$(pkg-config --libs lua5.4 libuv libarchive libcrypto libssl libedit libcurl libh2o) -llua5.4-cjson -lm" ..
      " && ./host-static", env)
    assert.equal(0, r.code)
    assert.equal(expected, r.stdout)
  end)

  it("runs two engines on two threads at once, each closing only its own children", function()
    local env = { PKG_CONFIG_PATH = prefix .. "/lib/pkgconfig" }
    local mark = "31.6" .. math.random(100000, 999999)
    local r = sh("cd " .. work .. " && cc -Wall -Werror -pthread -o host-threads " .. helpers.root ..
      "/spec/support/host/threads.c $(pkg-config --cflags --libs ferry) && LD_LIBRARY_PATH=" .. prefix ..
      "/lib ./host-threads " .. mark, env)
    assert.equal("", r.stderr)
    assert.equal("a: 0 \nb: 0 \n", r.stdout)
    assert.equal(0, r.code)
    assert.same({}, helpers.pids_with(mark)) -- engine a's child was killed when a was freed
  end)

  it("installs the Lua module so plain lua5.4 can require ferry", function()
    local r = sh("cd / && lua5.4 -e \"package.path='" .. prefix .. "/share/lua/5.4/?.lua;" .. prefix ..
      "/share/lua/5.4/?/init.lua;'..package.path; package.cpath='" .. prefix ..
      "/lib/lua/5.4/?.so;'..package.cpath; io.write(require('ferry').proc.run{argv={'echo','ok'}}.stdout)\"")
    assert.equal("ok\n", r.stdout)
  end)

  it("installs the command line's verb files under ferry/cli/", function()
    local r = sh("cd / && lua5.4 -e \"package.path='" .. prefix .. "/share/lua/5.4/?.lua;" .. prefix ..
      "/share/lua/5.4/?/init.lua;'..package.path; package.cpath='" .. prefix ..
      "/lib/lua/5.4/?.so;'..package.cpath; os.exit(require('ferry.cli').main({[0]='ferry','help','ls'}))\"")
    assert.equal(0, r.code, r.stderr)
    assert.matches("^usage: ferry ls %-p PROVIDER %[%-%-no%-session%] REMOTE_DIR\n", r.stdout)
    for _, name in ipairs { "run", "sandbox", "runtime", "policy", "many", "report", "options", "registry" } do
      assert.truthy(helpers.read_file(prefix .. "/share/lua/5.4/ferry/cli/" .. name .. ".lua"), name)
    end
  end)
end)
