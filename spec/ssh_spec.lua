-- The ssh provider against a real sshd on 127.0.0.1 (spec/support/sshd.lua): commands, binary transfers,
-- awkward names, one shared connection for every command, its round trip, and the connection errors.
local ferry = require "ferry"
local core = require "ferry.core"
local policy = require "ferry.policy"
local sshd = require "support.sshd"

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
      local p = assert(ssh.open("//me@h:2200?ConnectTimeout=3&ControlPersist=5s", { probe = false }))
      local argv = p:command("echo 'it''s' $HOME")
      local dir = p.control_dir
      p:close()
      assert.same({
        "ssh", "-T", "-o", "ConnectTimeout=3", "-o", "ControlPersist=5s", "-o", "BatchMode=yes",
        "-o", "LogLevel=ERROR", "-o", "ServerAliveInterval=15", "-o", "ControlMaster=auto",
        "-o", "ControlPath=" .. dir .. "/%C", "-l", "me", "-p", "2200", "--", "h",
        "sh -c 'echo '\\''it'\\'''\\''s'\\'' $HOME'",
      }, argv)
      local defaults = assert(ssh.open("//h", { probe = false }))
      local joined = table.concat(defaults:command("true"), " ")
      defaults:close()
      assert.truthy(joined:find("-o ConnectTimeout=10 ", 1, true))
      assert.truthy(joined:find("-o ControlPersist=60s ", 1, true))
    end)

    it("keeps the connection socket in a private directory and removes it on close", function()
      local p = assert(ssh.open("//h", { probe = false }))
      local st = assert(core.fs_stat(p.control_dir))
      assert.equal("dir", st.kind)
      assert.equal(tonumber("700", 8), st.mode)
      local dir = p.control_dir
      p:close()
      p:close()
      assert.is_nil(core.fs_stat(dir))
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
      local before = server:accepted()
      local box = assert(ferry.open(server:url()))
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
    end)

    it("is ended by close(): the master process exits and its socket directory is gone", function()
      local box = assert(ferry.open(server:url()))
      local dir = box.provider.control_dir
      assert.is_true(#processes_mentioning(dir) >= 1)
      box:close()
      assert.is_nil(core.fs_stat(dir))
      assert.is_true(eventually(function() return #processes_mentioning(dir) == 0 end))
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

    it("a failed open leaves no socket directory behind", function()
      local function socket_dirs()
        local n = 0
        for _, name in ipairs(core.fs_readdir("/tmp") or {}) do
          if name:find("^ferry%-ssh%-") then n = n + 1 end
        end
        return n
      end
      local before = socket_dirs()
      assert.is_nil(ferry.open(server:url({}, 1)))
      assert.equal(before, socket_dirs())
    end)
  end)
end)
