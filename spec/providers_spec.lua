-- Providers: provider strings, errors that name the provider, bwrap isolation, cmd: word splitting, policy lookup.
local ferry = require "ferry"
local helpers = require "support.helpers"
local sandboxes = require "support.sandboxes"

-- The built-in providers come first; others (ssh, docker, ... and user ones) follow in name order.
local KNOWN = "known providers are local, bwrap:DIR, cmd:ARGV..."

local function unknown(err, name)
  local prefix = "unknown provider '" .. name .. "': " .. KNOWN
  return err:sub(1, #prefix) == prefix and err:sub(-#" (see ferry providers)") == " (see ferry providers)"
end

-- Run a Lua chunk in a fresh ferry process with the given environment prefix (`env VAR=... `).
local function ferry_in(env, code)
  local p = io.popen(env .. " " .. helpers.ferry_bin .. " -e " .. ferry.sh.quote(code) .. " 2>&1")
  local out = p:read("a")
  p:close()
  return out
end

-- A dir to use as PATH holding symlinks to the given host programs only.
local function path_with(tmp, programs)
  local dir = tmp .. "/bin"
  assert(os.execute("mkdir -p " .. dir))
  for _, prog in ipairs(programs) do
    assert(os.execute("ln -s \"$(command -v " .. prog .. ")\" " .. dir .. "/" .. prog))
  end
  return dir
end

describe("provider strings", function()
  it("an unknown provider names itself and lists the known ones", function()
    local sb, err, code = ferry.open("nosuch:thing")
    assert.is_nil(sb)
    assert.is_true(unknown(err, "nosuch"), err)
    assert.equal("EINVAL", code)
    sb, err, code = ferry.open("not a provider")
    assert.is_nil(sb)
    assert.is_true(unknown(err, "not a provider"), err)
    assert.equal("EINVAL", code)
  end)

  it("declares the channel's capabilities, overridable per open", function()
    local sb = assert(ferry.open("local"))
    assert.same({ stdin = true, binary = true }, sb.caps)
    assert.is_true(sb:is_binary())
    assert.is_nil(sb:default_remote_dir()) -- remote paths are host paths: -r is needed
    assert.equal("local", sb.provider.name)
    sb = assert(ferry.open("local", { caps = { binary = false } }))
    assert.same({ stdin = true, binary = false }, sb.caps)
    assert.is_false(sb:is_binary())
    assert.equal("b64", sb:input_mode())
    sb = assert(ferry.open("local", { caps = { stdin = false } }))
    assert.equal("chunks", sb:input_mode())
  end)

  it("local takes no argument", function()
    local sb, err, code = ferry.open("local:x")
    assert.is_nil(sb)
    assert.equal("local:x: the local provider takes no argument (use -p local)", err)
    assert.equal("EINVAL", code)
  end)

  it("finds providers through FERRY_PATH before the built-in ones", function()
    local tmp = helpers.tmpdir()
    assert(os.execute("mkdir -p " .. tmp .. "/providers"))
    helpers.write_file(tmp .. "/providers/local.lua", [[
      local M = { usage = "local" }
      function M.open() return { name = "shadowed", caps = { stdin = true, binary = true },
        command = function(_, s) return { "sh", "-c", "echo shadowed; " .. s } end } end
      return M]])
    helpers.write_file(tmp .. "/providers/extra.lua", [[return { usage = "extra:X", open = function(arg)
      return { name = "extra:" .. arg, caps = {}, command = function(_, s) return { "sh", "-c", s } end } end }]])
    local out = ferry_in("FERRY_PATH=" .. tmp, [[
      local ferry = require "ferry"
      local sb = assert(ferry.open("local"))
      io.write(sb.provider.name, " ", sb:exec("echo hi").stdout)
      io.write(assert(ferry.open("extra:thing")).name, "\n")
      io.write(select(2, ferry.open("nope")), "\n")
      for _, p in ipairs(ferry.policy.list("providers")) do io.write(p.name, "=", p.from, "\n") end]])
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.same({ "shadowed shadowed", "hi", "extra:thing" }, { table.unpack(lines, 1, 3) })
    assert.is_true(unknown(lines[4], "nope"), lines[4])
    assert.truthy(lines[4]:find(", extra:X", 1, true))
    local from = {}
    for i = 5, #lines do
      local name, where = lines[i]:match("^(.-)=(.*)$")
      from[name] = where
    end
    assert.equal("[ferry]/providers/bwrap.lua", from.bwrap)
    assert.equal("[ferry]/providers/cmd.lua", from.cmd)
    assert.equal(tmp .. "/providers/local.lua", from["local"])
    assert.equal(tmp .. "/providers/extra.lua", from.extra)
    helpers.rmtree(tmp)
  end)

  it("a provider file that fails to load is reported as such, not as unknown", function()
    local tmp = helpers.tmpdir()
    assert(os.execute("mkdir -p " .. tmp .. "/providers"))
    helpers.write_file(tmp .. "/providers/broken.lua", "error('boom')")
    local out = ferry_in("FERRY_PATH=" .. tmp, [[
      local sb, err, code = require("ferry").open("broken:x")
      io.write(tostring(sb), "|", err, "|", code)]])
    assert.equal("nil|provider 'broken': " .. tmp .. "/providers/broken.lua:1: boom|EINVAL", out)
    helpers.rmtree(tmp)
  end)

  it("policy.find looks in the source tree when run from it", function()
    local where, text = ferry.policy.find("providers", "bwrap")
    assert.truthy(where:find("providers/bwrap.lua", 1, true))
    assert.truthy(text:find("bubblewrap", 1, true))
    local none, err, code = ferry.policy.find("providers", "nosuch")
    assert.is_nil(none)
    assert.equal("no provider named 'nosuch'", err)
    assert.equal("ENOENT", code)
    assert.has_error(function() ferry.policy.find("providers", "../etc") end)
    assert.has_error(function() ferry.policy.find("things", "x") end)
  end)
end)

describe("cmd: provider", function()
  local split = require("ferry.provider_util").split_words

  it("splits the prefix as a shell splits words, without expansion", function()
    assert.same({ "docker", "exec", "-i", "box" }, split("  docker exec\t-i   box "))
    assert.same({ "a b", "c'd", 'e"f', "g h", "$HOME", "x\\y", "" }, split([['a b' "c'd" 'e"f' g\ h $HOME "x\\y" '']]))
    assert.same({ "ab", "c$d`e\\f" }, split([[a'b' "c\$d\`e\f"]]))
    assert.same({ "joined" }, split("join\\\ned"))
    assert.same({}, split(""))
    assert.same({ nil, "unterminated ' quote" }, { split("a 'b") })
    assert.same({ nil, 'unterminated " quote' }, { split('a "b') })
  end)

  it("runs ARGV... sh -c SCRIPT: quoted words arrive intact", function()
    local sb = assert(ferry.open([[cmd:env "FERRY_WORD=a b 'c'" FERRY_X=\$HOME]]))
    assert.same({ "env", "FERRY_WORD=a b 'c'", "FERRY_X=$HOME" }, sb.provider.prefix)
    local r = assert(sb:exec('printf "%s|%s" "$FERRY_WORD" "$FERRY_X"'))
    assert.equal("a b 'c'|$HOME", r.stdout)
  end)

  it("a bad prefix is an error naming the provider", function()
    local sb, err, code = ferry.open("cmd:")
    assert.is_nil(sb)
    assert.equal("cmd:: expected a command prefix after cmd:, e.g. cmd:docker exec -i BOX", err)
    assert.equal("EINVAL", code)
    sb, err, code = ferry.open("cmd:docker 'exec")
    assert.is_nil(sb)
    assert.equal("cmd:docker 'exec: unterminated ' quote in the command prefix", err)
    assert.equal("EINVAL", code)
  end)

  it("a program that does not exist is reported with what to do", function()
    local sb, err, code = ferry.open("cmd:ferry-no-such-program -i box")
    assert.is_nil(sb)
    assert.equal("ENOENT", code)
    assert.truthy(err:find("^cmd:ferry%-no%-such%-program %-i box: cannot run 'ferry%-no%-such%-program': "))
    assert.truthy(err:find("must start with an installed program (e.g. cmd:docker exec -i BOX)", 1, true))
  end)

  it("a sandbox that is unreachable (exit 127 or 255 on the probe) is reported with what to do", function()
    for _, rc in ipairs { 127, 255 } do
      local spec = "cmd:sh -c 'echo connection refused >&2; exit " .. rc .. "'"
      local sb, err, code = ferry.open(spec)
      assert.is_nil(sb)
      assert.equal("EHOSTUNREACH", code)
      assert.equal(spec .. ": the sandbox is unreachable: a probe exited with code " .. rc
        .. " (connection refused); check that `sh -c 'echo connection refused >&2; exit " .. rc
        .. "' sh -c true` works in a terminal", err)
    end
  end)

  it("runs with busybox instead of GNU coreutils", function()
    local box = sandboxes.make("busybox")
    local sb = box:open()
    local r = assert(sb:exec("readlink -f \"$(command -v find)\"; find --help 2>&1 | head -1"))
    assert.truthy(r.stdout:find("busybox", 1, true))
    assert.truthy(r.stdout:find("BusyBox", 1, true))
    box:cleanup()
  end)
end)

describe("bwrap: provider", function()
  local box, sb
  setup(function()
    box = sandboxes.make("bwrap")
    sb = box:open()
  end)
  teardown(function() box:cleanup() end)

  it("binds DIR at /sandbox with home and workspace, HOME set, cwd /", function()
    assert.equal("/sandbox/workspace", sb.remote_dir_default)
    assert.equal("/sandbox/workspace", sb:default_remote_dir())
    local r = assert(sb:exec('echo "$HOME"; pwd; ls /sandbox'))
    assert.equal("/sandbox/home\n/\nhome\ntmp\nworkspace\n", r.stdout)
    assert(sb:write("/sandbox/home/x", "seen from the host"))
    assert.equal("seen from the host", helpers.read_file(box.tmp .. "/box/home/x"))
  end)

  it("the host system is read-only", function()
    local r = assert(sb:exec("echo x > /etc/ferry-test"))
    assert.not_equal(0, r.code)
    assert.truthy(r.stderr:find("Read-only file system", 1, true))
    r = assert(sb:exec("touch /ferry-test"))
    assert.not_equal(0, r.code)
    r = assert(sb:exec("cat /etc/hostname"))
    assert.equal(0, r.code)
    local ok, err = sb:write("/usr/ferry-test", "x")
    assert.is_nil(ok)
    assert.truthy(err:find("write /usr/ferry-test: ", 1, true))
  end)

  it("has no network: only its own loopback interface; the host's listening port is out of reach", function()
    local r = assert(sb:exec("cat /proc/net/dev"))
    local ifaces = {}
    for name in r.stdout:gmatch("\n%s*([%w%-_.]+):") do ifaces[#ifaces + 1] = name end
    assert.same({ "lo" }, ifaces)
    local port = 20000 + math.random(0, 20000)
    local p = io.popen("busybox nc -ll -p " .. port .. " -e /bin/true >/dev/null 2>&1 & echo $!")
    local pid = p:read("l")
    p:close()
    local connect = "busybox nc -w 2 127.0.0.1 " .. port .. " </dev/null"
    local from_host = assert(ferry.open("local"))
    for _ = 1, 50 do -- the listener is up once the host reaches it
      if from_host:exec(connect).code == 0 then break end
      ferry.sleep(20)
    end
    assert.equal(0, from_host:exec(connect).code)
    r = assert(sb:exec(connect))
    os.execute("kill " .. pid)
    assert.not_equal(0, r.code)
  end)

  it("/tmp is private to each command and hides the host's", function()
    local marker = os.tmpname()
    local r = assert(sb:exec("ls " .. marker .. " ; echo inside > /tmp/ferry-inside; cat /tmp/ferry-inside"))
    assert.truthy(r.stderr:find("No such file", 1, true))
    assert.equal("inside\n", r.stdout)
    r = assert(sb:exec("ls -A /tmp"))
    assert.equal("", r.stdout)
    assert.is_nil(helpers.read_file("/tmp/ferry-inside"))
    os.remove(marker)
  end)

  it("opening another sandbox does not probe bwrap again", function()
    local other = sandboxes.make("bwrap")
    local calls = 0
    local sb2 = other:open { on_exec = function() calls = calls + 1 end }
    assert.equal(0, calls)
    assert(sb2:exec("true"))
    assert.equal(1, calls)
    other:cleanup()
  end)

  it("missing bubblewrap is reported with the package to install", function()
    local tmp = helpers.tmpdir()
    local path = path_with(tmp, { "sh", "mkdir" })
    local out = ferry_in("PATH=" .. path, [[
      local sb, err, code = require("ferry").open("bwrap:]] .. tmp .. [[/box")
      io.write(tostring(sb), "|", err, "|", code)]])
    assert.equal("nil|bwrap:" .. tmp .. "/box: bubblewrap is not installed (apt-get install bubblewrap) or not on "
      .. "PATH; use -p local to run without isolation|ENOENT", out)
    helpers.rmtree(tmp)
  end)

  it("a bwrap that cannot create a sandbox here is reported with its error", function()
    local tmp = helpers.tmpdir()
    local path = path_with(tmp, { "sh", "mkdir" })
    helpers.write_file(path .. "/bwrap",
      "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    assert(os.execute("chmod +x " .. path .. "/bwrap"))
    local out = ferry_in("PATH=" .. path, [[
      local sb, err, code = require("ferry").open("bwrap:]] .. tmp .. [[/box")
      io.write(tostring(sb), "|", err, "|", code)]])
    assert.equal("nil|bwrap:" .. tmp .. "/box: bubblewrap cannot create a sandbox here (bwrap: No permissions to "
      .. "create new namespace); use -p local to run without isolation|EPERM", out)
    helpers.rmtree(tmp)
  end)

  it("bwrap without a dir is an error", function()
    local s, err, code = ferry.open("bwrap:")
    assert.is_nil(s)
    assert.equal("bwrap:: expected a host dir to hold the sandbox's files, e.g. bwrap:/tmp/box", err)
    assert.equal("EINVAL", code)
  end)
end)
