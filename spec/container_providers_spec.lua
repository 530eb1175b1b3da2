-- docker:, podman: and kubectl: providers. No container engine or cluster runs here: a fake `docker` /
-- `podman` / `kubectl` first on PATH records its argv and runs the trailing `sh -c SCRIPT` on this host. Lua
-- cannot change its own PATH, so the sandbox operations run in a child Lua process started with that PATH;
-- it reports what it saw as JSON.
local ferry = require "ferry"
local policy = require "ferry.policy"
local cjson = require "cjson"
local helpers = require "support.helpers"

local docker = assert(policy.load("providers", "docker"))
local podman = assert(policy.load("providers", "podman"))
local kubectl = assert(policy.load("providers", "kubectl"))

-- Records "<program>\0<arg>\0..." of its last run, then runs the `sh -c SCRIPT` its argv ends with.
local FAKE = [[#!/bin/sh
printf '%s\0' "${0##*/}" "$@" > "${0%/*}/argv"
for a in "$@"; do
  [ "$a" = gone ] && { echo "Error response from daemon: No such container: gone" >&2; exit 1; }
done
[ $# -ge 3 ] || { echo "fake: too few arguments" >&2; exit 125; }
eval "ferry_s=\${$(($# - 2))} ferry_c=\${$(($# - 1))} ferry_script=\${$#}"
[ "$ferry_s" = sh ] && [ "$ferry_c" = -c ] || { echo "fake: argv does not end in sh -c SCRIPT" >&2; exit 125; }
exec sh -c "$ferry_script"
]]

-- What the child process does with the provider: every sandbox operation, reported as JSON.
local CHILD = [=[
local ferry = require "ferry"
local cjson = require "cjson"
local provider, dir = ...
local function fake_argv()
  local f = io.open(os.getenv("FAKE_DIR") .. "/argv", "rb")
  if not f then return {} end
  local text = f:read("a")
  f:close()
  local argv = {}
  for word in text:gmatch("([^%z]*)%z") do argv[#argv + 1] = word end
  return argv
end
local built
local sb, err, code = ferry.open(provider, {
  on_exec = function(argv, script) built = { argv = argv, script = script } end, session = false,
})
if not sb then
  print(cjson.encode { err = err, code = code })
  return
end
local out = { probe = fake_argv(), mismatches = {} }
-- the fake saw exactly the argv the provider built for the last command
local function check(what)
  local got = fake_argv()
  local ok = #got == #built.argv
  for i = 1, #got do ok = ok and got[i] == built.argv[i] end
  if not ok then out.mismatches[#out.mismatches + 1] = what end
end
check("probe")
local res = sb:exec("pwd; echo out; echo err >&2; exit 7")
check("exec")
out.exec = { code = res.code, stdout = res.stdout, stderr = res.stderr, argv = fake_argv(), script = built.script }
local bytes = {}
for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
local data = table.concat(bytes):rep(4096)
out.echo_ok = sb:exec("cat", { stdin = data }).stdout == data
check("exec with stdin")
out.path = dir .. "/a b 'c'\nd"
out.write_ok = sb:write(out.path, data) == true
check("write")
out.read_ok = sb:read(out.path) == data
check("read")
out.missing_code = select(3, sb:read(dir .. "/missing"))
sb:close()
-- by default (caps.costly) every command goes through one session: one provider process
local s = ferry.open(provider, { probe = false })
out.session = { default = s.provider.session ~= nil, first = s:exec("echo one").stdout,
  second = s:exec("cat", { stdin = "two" }).stdout, starts = s.provider.session.starts }
s:close()
print(cjson.encode(out))
]=]

local function lua_binary()
  local res = assert(ferry.proc.run { argv = { "sh", "-c", "command -v lua5.4" } })
  return (res.stdout:gsub("%s+$", ""))
end

local function make_fakes(dir)
  for _, program in ipairs { "docker", "podman", "kubectl" } do
    helpers.write_file(dir .. "/" .. program, FAKE)
    assert(os.execute("chmod 0755 '" .. dir .. "/" .. program .. "'"))
  end
end

describe("container providers", function()
  local fakes, work, lua

  -- Run CHILD with `path` as PATH, on `provider`, working in the host dir `work`.
  local function in_child(provider, path)
    local res = assert(ferry.proc.run {
      argv = { lua, "-", provider, work },
      stdin = CHILD,
      cwd = helpers.root,
      env = {
        PATH = path, FAKE_DIR = fakes,
        LUA_PATH = "scripts/?.lua;scripts/?/init.lua;spec/?.lua;;", LUA_CPATH = "build/lua/?.so;;",
      },
      timeout_ms = 60000,
    })
    assert.equal(0, res.code, res.stderr)
    return cjson.decode(res.stdout)
  end

  lazy_setup(function()
    lua = lua_binary()
    fakes = helpers.tmpdir()
    work = helpers.tmpdir()
    make_fakes(fakes)
  end)

  lazy_teardown(function()
    helpers.rmtree(fakes)
    helpers.rmtree(work)
  end)

  describe("build the argv", function()
    it("docker:CONTAINER and podman:CONTAINER: exec -i CONTAINER sh -c SCRIPT", function()
      local d = assert(docker.open("box", { probe = false }))
      assert.same({ "docker", "exec", "-i", "box", "sh", "-c", "echo 'a b'" }, d:command("echo 'a b'"))
      assert.same({ "docker:box", true, true, true }, { d.name, d.caps.stdin, d.caps.binary, d.caps.costly })
      local p = assert(podman.open("f00d-1.web_2", { probe = false }))
      assert.same({ "podman", "exec", "-i", "f00d-1.web_2", "sh", "-c", "x" }, p:command("x"))
      assert.equal("podman:f00d-1.web_2", p.name)
    end)

    it("kubectl:[NAMESPACE/]POD[:CONTAINER][?context=CTX]", function()
      local cases = {
        ["web-0"] = { "kubectl", "exec", "-i", "web-0", "--", "sh", "-c", "S" },
        ["prod/web-0"] = { "kubectl", "exec", "-i", "-n", "prod", "web-0", "--", "sh", "-c", "S" },
        ["web-0:app"] = { "kubectl", "exec", "-i", "web-0", "-c", "app", "--", "sh", "-c", "S" },
        ["prod/web-0:app?context=kind-dev"] = { "kubectl", "--context", "kind-dev", "exec", "-i", "-n", "prod",
          "web-0", "-c", "app", "--", "sh", "-c", "S" },
        ["web-0?context=arn%3Aaws%3Aeks%3Acluster%2Fx"] = { "kubectl", "--context", "arn:aws:eks:cluster/x",
          "exec", "-i", "web-0", "--", "sh", "-c", "S" },
      }
      for arg, want in pairs(cases) do
        local k = assert(kubectl.open(arg, { probe = false }))
        assert.same(want, k:command("S"), arg)
        assert.equal("kubectl:" .. arg, k.name)
        assert.is_true(k.caps.stdin and k.caps.binary and k.caps.costly)
      end
    end)

    it("refuse names the CLI would misread, with the reason", function()
      local bad = {
        { docker, "", "docker:: expected a container name or id, e.g. docker:box" },
        { docker, "-it", "docker:-it: '-it' is not a container name or id" },
        { podman, "a b", "podman:a b: 'a b' is not a container name or id" },
        { kubectl, "", "kubectl:: expected a pod name, e.g. kubectl:default/my-pod" },
        { kubectl, "ns/", "kubectl:ns/: expected a pod name, e.g. kubectl:default/my-pod" },
        { kubectl, "Prod/web", "kubectl:Prod/web: 'Prod' is not a namespace name" },
        { kubectl, "a/b/c", "kubectl:a/b/c: 'b/c' is not a pod name" },
        { kubectl, "web:-c", "kubectl:web:-c: '-c' is not a container name" },
        { kubectl, "web?ctx=x", "kubectl:web?ctx=x: the only query key is context (?context=CTX), got 'ctx=x'" },
        { kubectl, "web?context=-x", "kubectl:web?context=-x: '-x' is not a context name" },
      }
      for _, case in ipairs(bad) do
        local p, err, code = case[1].open(case[2], { probe = false })
        assert.is_nil(p)
        assert.equal(case[3], err)
        assert.equal("EINVAL", code)
      end
    end)
  end)

  for _, case in ipairs {
    { "docker:box", { "docker", "exec", "-i", "box", "sh", "-c" } },
    { "podman:box", { "podman", "exec", "-i", "box", "sh", "-c" } },
    { "kubectl:ns/pod-1:main?context=dev", { "kubectl", "--context", "dev", "exec", "-i", "-n", "ns", "pod-1",
      "-c", "main", "--", "sh", "-c" } },
  } do
    local provider, prefix = case[1], case[2]
    describe(provider .. " through a fake CLI on PATH", function()
      local out

      lazy_setup(function()
        out = in_child(provider, fakes .. ":" .. os.getenv("PATH"))
      end)

      it("probes once at open with that argv", function()
        assert.is_nil(out.err)
        local want = table.move(prefix, 1, #prefix, 1, {})
        want[#want + 1] = "echo ferry-probe-ok"
        assert.same(want, out.probe)
      end)

      it("runs sb:exec as exactly PREFIX sh -c SCRIPT, cwd /, stdout and stderr apart, exit code", function()
        assert.same({ 7, "/\nout\n", "err\n" }, { out.exec.code, out.exec.stdout, out.exec.stderr })
        local want = table.move(prefix, 1, #prefix, 1, {})
        want[#want + 1] = out.exec.script
        assert.same(want, out.exec.argv)
        assert.truthy(out.exec.script:find("echo out; echo err >&2; exit 7", 1, true))
      end)

      it("runs every command through one session by default (caps.costly)", function()
        assert.same({ default = true, first = "one\n", second = "two", starts = 1 }, out.session)
      end)

      it("carries binary stdin, write and read through it; a missing file is ENOENT", function()
        assert.same({}, out.mismatches)
        assert.is_true(out.echo_ok)
        assert.is_true(out.write_ok)
        assert.is_true(out.read_ok)
        local on_disk = helpers.read_file(out.path)
        assert.equal(256 * 4096, #on_disk)
        assert.equal("\0\1\2", on_disk:sub(1, 3))
        assert.equal("ENOENT", out.missing_code)
        os.remove(out.path)
      end)
    end)
  end

  describe("errors", function()
    it("name the provider when its CLI is not on PATH", function()
      local empty = helpers.tmpdir()
      for _, case in ipairs {
        { "docker:box", "docker:box: docker is not installed or not on PATH" },
        { "podman:box", "podman:box: podman is not installed or not on PATH" },
        { "kubectl:web-0", "kubectl:web-0: kubectl is not installed or not on PATH" },
      } do
        local out = in_child(case[1], empty)
        assert.same({ case[2], "ENOENT" }, { out.err, out.code })
      end
      helpers.rmtree(empty)
    end)

    it("name the container or pod that cannot run a command, with the CLI's reason", function()
      local path = fakes .. ":" .. os.getenv("PATH")
      local out = in_child("docker:gone", path)
      assert.same({ "docker:gone: cannot run a command in container gone: Error response from daemon: No such "
        .. "container: gone; check that it is running (docker ps)", "EHOSTUNREACH" }, { out.err, out.code })
      out = in_child("kubectl:ns/gone", path)
      assert.same({ "kubectl:ns/gone: cannot run a command in pod gone: Error response from daemon: No such "
        .. "container: gone; check the pod (kubectl get pod -n ns) and the context", "EHOSTUNREACH" },
        { out.err, out.code })
    end)
  end)
end)
