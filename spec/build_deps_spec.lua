-- The build names the Debian packages it misses (Makefile, engine/tools/missing_debs.sh) instead of a wall of
-- pkg-config errors: a fake pkg-config first on PATH reports one library missing.
local ferry = require "ferry"
local helpers = require "support.helpers"

describe("make on a machine without a build package", function()
  local bin
  setup(function()
    bin = helpers.tmpdir()
    local found = io.popen("command -v pkg-config")
    local real = assert(found:read("l"))
    found:close()
    helpers.write_file(bin .. "/pkg-config", table.concat({
      "#!/bin/sh",
      'for a in "$@"; do [ "$a" = libh2o ] && { echo "Package libh2o was not found" >&2; exit 1; }; done',
      'exec ' .. real .. ' "$@"', "" }, "\n"))
    helpers.write_file(bin .. "/id", "#!/bin/sh\necho 1000\n") -- `make deps` as a user
    assert(os.execute("chmod +x " .. bin .. "/pkg-config " .. bin .. "/id"))
  end)
  teardown(function() helpers.rmtree(bin) end)

  local function make(...)
    return assert(ferry.proc.run { argv = { "make", "--no-print-directory", ... }, cwd = helpers.root,
      env = { PATH = bin .. ":" .. os.getenv("PATH"), MAKEFLAGS = false, MAKELEVEL = false }, timeout_ms = 60000 })
  end

  it("names the missing package and the apt-get line, before any pkg-config error", function()
    local r = make("-n", "all")
    assert.equal(2, r.code)
    assert.equal("ferry: the build needs these Debian packages, which are missing: libh2o-dev\n"
      .. "ferry: install them with:  apt-get install -y libh2o-dev   (or, as root: make deps)\n", r.stdout)
    assert.matches("^Makefile:%d+: %*%*%* missing build packages: libh2o%-dev%.  Stop%.\n$", r.stderr)
    r = make("-n", "demo")
    assert.equal(2, r.code)
    assert.matches("missing: libh2o%-dev\n", r.stdout)
  end)

  it("make deps says what to run when not root; clean and lint build nothing and skip the check", function()
    local r = make("deps")
    assert.equal(2, r.code)
    assert.matches("^deps: run as root: apt%-get install %-y libh2o%-dev\n"
      .. "make: %*%*%* %[Makefile:%d+: deps%] Error 1\n$", r.stderr)
    r = make("-n", "clean")
    assert.equal(0, r.code, r.stderr)
    assert.equal("rm -rf build\n", r.stdout)
  end)

  it("lists nothing when every package is installed; every package without a compiler or pkg-config", function()
    local r = assert(ferry.proc.run { argv = { "sh", "engine/tools/missing_debs.sh", "cc", "pkg-config" },
      cwd = helpers.root })
    assert.equal(0, r.code)
    assert.equal("", r.stdout)
    r = assert(ferry.proc.run { argv = { "sh", "engine/tools/missing_debs.sh", "/nonexistent/cc", "/nonexistent/pc" },
      cwd = helpers.root })
    assert.equal("build-essential\nlibarchive-dev\nlibcurl4-openssl-dev\nlibedit-dev\nlibh2o-dev\nliblua5.4-dev\n"
      .. "libssl-dev\nlibuv1-dev\npkgconf\n", r.stdout)
  end)
end)
