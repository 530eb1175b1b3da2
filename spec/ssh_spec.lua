-- The ssh provider against a real sshd on 127.0.0.1 (spec/support/sshd.lua): commands, binary transfers,
-- awkward names, one shared connection for every command, its round trip, and the connection errors.
local ferry = require "ferry"
local core = require "ferry.core"
local policy = require "ferry.policy"
local sshd = require "support.sshd"
local helpers = require "support.helpers"

local ssh = assert(policy.load("providers", "ssh"))

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

local function time_ms(fn)
  local t0 = core.now_ms()
  fn()
  return core.now_ms() - t0
end

-- Processes whose command line mentions `text` (an ssh master shows its control path there).
local function processes_mentioning(text)
  local out = {}
  for _, name in ipairs(core.fs_readdir("/proc") or {}) do
    local f = name:match("^%d+$") and io.open("/proc/" .. name .. "/cmdline", "rb")
    if f then
      local cmdline = f:read("a") or ""
      f:close()
      if cmdline:find(text, 1, true) then out[#out + 1] = tonumber(name) end
    end
  end
  return out
end

-- The stdout of a shell command (which must succeed).
local function capture(cmd)
  local f = assert(io.popen(cmd))
  local out = f:read("a")
  assert(f:close(), "command failed: " .. cmd)
  return out
end

local function eventually(pred, ms)
  local deadline = core.now_ms() + (ms or 3000)
  while core.now_ms() < deadline do
    if pred() then return true end
    ferry.sleep(20)
  end
  return pred()
end

describe("ssh provider", function()
  local server, sb, remote

  lazy_setup(function()
    server = sshd.start()
    sb = assert(ferry.open(server:url()))
    remote = assert(sb:exec("mktemp -d")).stdout:gsub("\n$", "")
    assert.truthy(remote:match("^/tmp/"))
  end)

  lazy_teardown(function()
    if sb then
      sb:exec("rm -rf " .. ferry.sh.quote(remote))
      sb:close()
    end
    if server then server:stop() end
  end)

  describe("the URL", function()
    it("gives user, host, port and the query options, URL-decoded, in order", function()
      local t = assert(ssh.parse("//deploy@build.example:2222?IdentityFile=/home/a%20b/key&Compression=yes"))
      assert.same({ "deploy", "build.example", 2222 }, { t.user, t.host, t.port })
      assert.same({ { "IdentityFile", "/home/a b/key" }, { "Compression", "yes" } }, t.options)
      assert.equal("ssh://deploy@build.example:2222", t.name)
      local v6 = assert(ssh.parse("//[::1]:22"))
      assert.same({ "::1", 22, "ssh://[::1]:22" }, { v6.host, v6.port, v6.name })
      local bare = assert(ssh.parse("//box"))
      assert.same({ "box", "ssh://box" }, { bare.host, bare.name })
      assert.is_nil(bare.user)
      assert.is_nil(bare.port)
    end)

    it("refuses a missing host, a bad port, a bad option name and an option without a value", function()
      for arg, why in pairs {
        ["//"] = "got no host",
        ["//u@"] = "got no host",
        ["//h:99999"] = "expected a port number from 1 to 65535 after ':', got '99999'",
        ["//h:ab"] = "expected a port number from 1 to 65535 after ':', got 'ab'",
        ["//-oProxyCommand=x"] = "is not a host name",
        ["//h?Bad-Name=1"] = "'Bad-Name' is not an ssh option name",
        ["//h?Compression"] = "expected Option=Value in the query, got 'Compression'",
        ["//h?Compression="] = "the value of Compression must be non-empty",
        ["//h?ProxyCommand=a%0Ab"] = "without control characters",
      } do
        local p, err, code = ssh.open(arg, { probe = false })
        assert.is_nil(p)
        assert.equal("EINVAL", code)
        assert.truthy(err:find("ssh:" .. arg .. ": ", 1, true) == 1, err)
        assert.truthy(err:find(why, 1, true), err)
      end
    end)

    it("passes query options before the defaults (ssh keeps the first value) and the script as one string", function()
      local dir = helpers.tmpdir()
      local ctl = { probe = false, control_dir = dir .. "/ferry" }
      local p = assert(ssh.open("//me@h:2200?ConnectTimeout=3&ControlPersist=5s", ctl))
      local argv = p:command("echo 'it''s' $HOME")
      assert.truthy(p.control_path:sub(#dir + 1):match("^/ferry/%x+$") and p.control_path:sub(1, #dir) == dir,
        p.control_path)
      assert.same({
        "ssh", "-T", "-o", "ConnectTimeout=3", "-o", "ControlPersist=5s", "-o", "BatchMode=yes",
        "-o", "LogLevel=ERROR", "-o", "ServerAliveInterval=15", "-o", "ControlMaster=auto",
        "-o", "ControlPath=" .. p.control_path, "-l", "me", "-p", "2200", "--", "h",
        "sh -c 'echo '\\''it'\\'''\\''s'\\'' $HOME'",
      }, argv)
      local defaults = assert(ssh.open("//h", ctl))
      local joined = table.concat(defaults:command("true"), " ")
      assert.truthy(joined:find("-o ConnectTimeout=10 ", 1, true))
      assert.truthy(joined:find("-o ControlPersist=10m ", 1, true))
      -- one socket per destination and options: another port, user, option or host is another master
      local names = { [p.control_path] = true, [defaults.control_path] = true }
      for _, other in ipairs { "//h:2201", "//you@h", "//h?Compression=yes", "//h2" } do
        local o = assert(ssh.open(other, ctl))
        assert.is_nil(names[o.control_path], other)
        names[o.control_path] = true
      end
      assert.equal(defaults.control_path, assert(ssh.open("//h", ctl)).control_path)
      helpers.rmtree(dir)
    end)

    it("keeps the connection socket in a private runtime dir: $XDG_RUNTIME_DIR/ferry, else /tmp/ferry-UID", function()
      local dir = helpers.tmpdir()
      local p = assert(ssh.open("//h", { probe = false, control_dir = dir .. "/ferry" }))
      local st = assert(core.fs_lstat(dir .. "/ferry"))
      assert.same({ "dir", tonumber("700", 8), core.getuid() }, { st.kind, st.mode, st.uid })
      p:close()
      assert.truthy(core.fs_lstat(dir .. "/ferry"), "the dir stays for the next ferry process")
      local script = dir .. "/path.lua"
      helpers.write_file(script, 'print(assert(require("ferry.policy").load("providers", "ssh")'
        .. '.open("//h", {probe = false})).control_path)')
      local out = capture("XDG_RUNTIME_DIR=" .. dir .. " " .. helpers.ferry_bin .. " run " .. script)
      assert.equal(dir .. "/ferry/", out:sub(1, #dir + 7))
      assert.truthy(out:sub(#dir + 8):match("^%x+\n$"), out)
      out = capture("env -u XDG_RUNTIME_DIR " .. helpers.ferry_bin .. " run " .. script)
      assert.truthy(out:match("^/tmp/ferry%-" .. core.getuid() .. "/%x+\n$"), out)
      helpers.rmtree(dir)
    end)

    it("refuses a socket dir that is not private: a wider mode, another owner, a symlink", function()
      local dir = helpers.tmpdir()
      local ctl = dir .. "/ferry"
      assert(core.fs_safe_mkdir(dir, "ferry", tonumber("755", 8)))
      local p, err, code = ssh.open("//h", { probe = false, control_dir = ctl })
      assert.is_nil(p)
      assert.equal("EACCES", code)
      assert.equal("ssh://h: the ssh socket dir " .. ctl .. " is mode 0755, not 0700: it must be a directory of "
        .. "its own user with mode 0700 (others could use or replace the shared connection); remove it or fix it",
        err)
      assert(core.fs_safe_chmod(dir, "ferry", tonumber("700", 8)))
      assert.equal(0, ferry.proc.run({ argv = { "chown", "65534", ctl } }).code)
      p, err, code = ssh.open("//h", { probe = false, control_dir = ctl })
      assert.is_nil(p)
      assert.equal("EACCES", code)
      assert.truthy(err:find("the ssh socket dir " .. ctl .. " is owned by uid 65534, not " .. core.getuid()
        .. ": ", 1, true), err)
      helpers.rmtree(ctl)
      assert(core.fs_safe_mkdir(dir, "real", tonumber("700", 8)))
      assert(core.fs_safe_symlink(dir, "ferry", dir .. "/real"))
      p, err = ssh.open("//h", { probe = false, control_dir = ctl })
      assert.is_nil(p)
      assert.truthy(err:find("the ssh socket dir " .. ctl .. " is a symlink: ", 1, true), err)
      helpers.rmtree(dir)
    end)
  end)

  describe("commands", function()
    it("run with sh -c in /, with exit code, stdout and stderr apart, env and stdin", function()
      local res = assert(sb:exec("pwd; echo \"$GREETING\"; echo oops >&2; exit 7", { env = { GREETING = "hi there" } }))
      assert.same({ 7, "/\nhi there\n", "oops\n" }, { res.code, res.stdout, res.stderr })
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      local all = table.concat(bytes)
      local echoed = assert(sb:exec("cat", { stdin = all }))
      assert.equal(0, echoed.code)
      assert.equal(all, echoed.stdout)
    end)

    it("run as the URL's user", function()
      assert.equal(server.user .. "\n", assert(sb:exec("id -un")).stdout)
    end)

    it("accept an argv whose words hold quotes, spaces and shell syntax", function()
      local words = { "printf", "%s|", "a b", "it's", '"dq"', "$HOME", "`id`", "x\ny" }
      local res = assert(sb:exec(words))
      assert.equal("a b|it's|\"dq\"|$HOME|`id`|x\ny|", res.stdout)
    end)
  end)

  describe("transfers", function()
    it("write and read 5 MB holding every byte value, unchanged", function()
      local block = {}
      for i = 0, 255 do block[#block + 1] = string.char(i) end
      local chunk = table.concat(block):rep(64) -- 16 KiB
      local data = chunk:rep(320) .. "tail\0\255\n" -- 5 MiB and a bit
      local path = remote .. "/blob.bin"
      assert(sb:write(path, data))
      local sum = assert(sb:exec("sha256sum " .. ferry.sh.quote(path)))
      assert.equal(ferry.hash.sha256(data), sum.stdout:match("^(%x+)"))
      local back = assert(sb:read(path))
      assert.equal(#data, #back)
      assert.equal(ferry.hash.sha256(data), ferry.hash.sha256(back))
    end)

    it("handle names with spaces, quotes, newlines, dashes and UTF-8", function()
      local dir = remote .. "/d i r 'q' \"dq\""
      assert(sb:mkdir(dir))
      local names = { "a b", "it's", 'say "hi"', "line\nbreak", "-dash", "$(id)", "caf\195\169" }
      for i, name in ipairs(names) do assert(sb:write(dir .. "/" .. name, "content " .. i)) end
      local listed = {}
      for _, e in ipairs(assert(sb:ls(dir))) do listed[e.name] = e.size end
      for i, name in ipairs(names) do
        assert.equal(#("content " .. i), listed[name], name)
        assert.equal("content " .. i, sb:read(dir .. "/" .. name))
      end
      assert(sb:rm(dir))
      local _, err, code = sb:ls(dir)
      assert.equal("ENOENT", code, err)
    end)

    it("report a missing remote file as ENOENT", function()
      local data, err, code = sb:read(remote .. "/no such file")
      assert.is_nil(data)
      assert.equal("ENOENT", code)
      assert.truthy(err:find("no such file", 1, true))
    end)
  end)

  describe("the shared connection", function()
    it("is opened once and reused by every command", function()
      local dir = helpers.tmpdir()
      local before = server:accepted()
      local box = assert(ferry.open(server:url(), { session = false, control_dir = dir }))
      for i = 1, 15 do
        assert.equal(tostring(i) .. "\n", assert(box:exec("echo " .. i)).stdout)
      end
      assert(box:write(remote .. "/shared.txt", "x"))
      assert.equal("x", box:read(remote .. "/shared.txt"))
      assert.equal(before + 1, server:accepted())
      -- a new plain ssh is a new connection: the count above is not blind
      assert.equal(0, ferry.proc.run({ argv = server:ssh_argv("true") }).code)
      assert.equal(before + 2, server:accepted())
      box:close()
      box.provider:disconnect()
      helpers.rmtree(dir)
    end)

    it("outlives close() and the ferry process: the next open and the next `ferry exec` reuse it", function()
      local dir = helpers.tmpdir()
      local box = assert(ferry.open(server:url(), { control_dir = dir .. "/ferry" }))
      local path = box.provider.control_path
      box:close()
      assert.equal("socket", assert(core.fs_lstat(path)).kind)
      assert.is_true(#processes_mentioning(path) >= 1)
      local before = server:accepted()
      box = assert(ferry.open(server:url(), { control_dir = dir .. "/ferry" }))
      assert.equal("again\n", assert(box:exec("echo again")).stdout)
      box:close()
      -- two consecutive ferry processes: neither handshakes again
      local exec = "XDG_RUNTIME_DIR=" .. dir .. " " .. helpers.ferry_bin .. " exec -p " .. ferry.sh.quote(server:url())
        .. " -- "
      assert.equal("first\n", capture(exec .. "echo first"))
      local t0 = core.now_ms()
      assert.equal("second\n", capture(exec .. "echo second"))
      local second_ms = core.now_ms() - t0
      assert.equal(before, server:accepted())
      print(string.format("\nferry exec with the shared connection warm: %.0f ms", second_ms))
      assert(box.provider:disconnect())
      assert.is_true(eventually(function() return #processes_mentioning(path) == 0 end))
      -- the count above is not blind: with the master gone the next ferry exec handshakes
      assert.equal("third\n", capture(exec .. "echo third"))
      assert.equal(before + 1, server:accepted())
      box.provider:disconnect()
      helpers.rmtree(dir)
    end)

    it("replaces a stale socket (its master gone) and a foreign one (not a socket of the user)", function()
      local dir = helpers.tmpdir()
      local opts = { control_dir = dir .. "/ferry" }
      local box = assert(ferry.open(server:url(), opts))
      local p = box.provider
      local path = p.control_path
      box:close()
      local check = table.move(p.argv, 1, #p.argv, 1, {})
      for _, a in ipairs { "-O", "check", "--", p.host } do check[#check + 1] = a end
      local pid = ferry.proc.run({ argv = check }).stderr:match("pid=(%d+)")
      assert.truthy(pid)
      ferry.proc.run { argv = { "kill", "-s", "KILL", pid } } -- the master dies, its socket file stays
      assert.is_true(eventually(function() return #processes_mentioning(path) == 0 end))
      assert.equal("socket", assert(core.fs_lstat(path)).kind)
      local before = server:accepted()
      box = assert(ferry.open(server:url(), opts))
      assert.equal("new\n", assert(box:exec("echo new")).stdout)
      assert.equal(before + 1, server:accepted())
      box:close()
      assert.is_true(#processes_mentioning(path) >= 1)
      assert(p:disconnect())
      assert.is_true(eventually(function() return core.fs_lstat(path) == nil end))
      helpers.write_file(path, "not a socket")
      box = assert(ferry.open(server:url(), opts))
      assert.equal("ok\n", assert(box:exec("echo ok")).stdout)
      assert.equal("socket", assert(core.fs_lstat(path)).kind)
      box:close()
      p:disconnect()
      helpers.rmtree(dir)
    end)

    it("comes back on the next command when the master went away", function()
      local box = assert(ferry.open(server:url()))
      local p = box.provider
      local argv = table.move(p.argv, 1, #p.argv, 1, {})
      for _, a in ipairs { "-O", "exit", "--", p.host } do argv[#argv + 1] = a end
      assert.equal(0, ferry.proc.run({ argv = argv }).code)
      local before = server:accepted()
      assert.equal("back\n", assert(box:exec("echo back")).stdout)
      assert.equal(before + 1, server:accepted())
      box:close()
    end)

    it("makes a command cost one round trip, far less than a new connection", function()
      local shared, fresh = {}, {}
      for _ = 1, 21 do
        shared[#shared + 1] = time_ms(function() assert.equal(0, sb:exec("true").code) end)
      end
      for _ = 1, 7 do
        fresh[#fresh + 1] = time_ms(function()
          assert.equal(0, ferry.proc.run({ argv = server:ssh_argv("true") }).code)
        end)
      end
      local s, f = median(shared), median(fresh)
      print(string.format("\nssh round trip, median: shared connection %.1f ms, new connection %.1f ms (x%.1f)",
        s, f, f / s))
      assert.is_true(s < f, string.format("shared %.1f ms is not faster than new %.1f ms", s, f))
    end)
  end)

  describe("errors name the host and the reason", function()
    it("nobody listening on the port: cannot connect", function()
      local p, err, code = ferry.open(server:url({}, 1))
      assert.is_nil(p)
      assert.equal("ECONNREFUSED", code)
      assert.equal("ssh://" .. server.user .. "@127.0.0.1:1: cannot connect: Connection refused "
        .. "(connect timeout 10 s)", err)
    end)

    it("no answer within the connect timeout: cannot connect", function()
      local port = server.port + 1 == 65536 and server.port - 1 or server.port + 1
      local pid
      -- a listener that accepts and never speaks: ssh waits for the banner until ConnectTimeout
      local silent = ferry.spawn(function()
        return ferry.proc.run {
          argv = { "busybox", "nc", "-l", "-p", tostring(port), "-e", "sleep", "30" },
          on_spawn = function(p) pid = p end,
        }
      end)
      ferry.sleep(200)
      local t0 = core.now_ms()
      local p, err, code = ferry.open(server:url({ ConnectTimeout = "1" }, port))
      local took = core.now_ms() - t0
      ferry.proc.run { argv = { "kill", "-s", "KILL", "--", "-" .. pid } }
      ferry.wait(silent)
      assert.is_nil(p)
      assert.equal("ETIMEDOUT", code)
      assert.equal(string.format("ssh://%s@127.0.0.1:%d: cannot connect: Connection timed out during banner "
        .. "exchange (connect timeout 1 s)", server.user, port), err)
      assert.is_true(took < 5000, "took " .. took .. " ms")
    end)

    it("a key the server does not know: authentication refused", function()
      local other = sshd.new_key(server, "stranger key")
      local p, err, code = ferry.open(server:url { IdentityFile = other })
      assert.is_nil(p)
      assert.equal("EACCES", code)
      assert.equal(string.format("ssh://%s@127.0.0.1:%d: authentication refused for user %s: check "
        .. "IdentityFile/agent", server.user, server.port, server.user), err)
    end)

    it("a known_hosts entry that does not match: host key mismatch", function()
      local imposter = sshd.new_key(server, "imposter")
      local f = assert(io.open(imposter .. ".pub"))
      local pub = f:read("l")
      f:close()
      local tampered = server.dir .. "/known_hosts.tampered"
      f = assert(io.open(tampered, "w"))
      f:write(string.format("[127.0.0.1]:%d %s\n", server.port, pub))
      f:close()
      local p, err, code = ferry.open(server:url { UserKnownHostsFile = tampered, StrictHostKeyChecking = "yes" })
      assert.is_nil(p)
      assert.equal("EHOSTKEY", code)
      assert.truthy(err:find(string.format("ssh://%s@127.0.0.1:%d: host key does not match known_hosts",
        server.user, server.port), 1, true) == 1, err)
    end)

    it("a host missing from known_hosts with strict checking: host key unknown", function()
      local p, err, code = ferry.open(server:url { UserKnownHostsFile = "/dev/null", StrictHostKeyChecking = "yes" })
      assert.is_nil(p)
      assert.equal("EHOSTKEY", code)
      assert.truthy(err:find(string.format("ssh://%s@127.0.0.1:%d: host key is not in known_hosts",
        server.user, server.port), 1, true) == 1, err)
    end)

    it("an option ssh cannot read: ssh refused an option", function()
      local p, err, code = ferry.open(server:url() .. "&SendEnv=A%20B&IdentityFile=/tmp/no%20quotes")
      assert.is_nil(p)
      assert.equal("EINVAL", code)
      assert.truthy(err:find(string.format("ssh://%s@127.0.0.1:%d: ssh refused an option: keyword identityfile "
        .. "extra arguments at end of line", server.user, server.port), 1, true) == 1, err)
    end)

    it("a failed open leaves no socket behind", function()
      local dir = helpers.tmpdir()
      assert.is_nil(ferry.open(server:url({}, 1), { control_dir = dir .. "/ferry" }))
      assert.same({}, core.fs_readdir(dir .. "/ferry"))
      helpers.rmtree(dir)
    end)
  end)
end)
