-- The sandbox verbs of build/ferry (exec, put, get, ls, prepare, restore, adapters, providers) run as a user
-- runs them, against the local, bwrap and cmd providers.
local ferry = require "ferry"
local cjson = require "cjson"
local helpers = require "support.helpers"

local FERRY = helpers.ferry_bin

local function run_ferry(args, opts)
  opts = opts or {}
  local argv = { FERRY }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return assert(ferry.proc.run { argv = argv, stdin = opts.stdin, env = opts.env, cwd = opts.cwd,
    timeout_ms = opts.timeout_ms or 60000 })
end

local function last_json_line(stdout)
  local last
  for line in stdout:gmatch("[^\n]+") do last = line end
  assert.is_string(last, "no output")
  return cjson.decode(last)
end

local function contains(list, item)
  for _, v in ipairs(list) do
    if v == item then return true end
  end
  return false
end

local BWRAP_WORKS = require("support.sandboxes").BWRAP_WORKS

-- Each provider: its string and how a path of its sandbox maps to a host path, given a fresh temp dir.
local PROVIDERS = {
  { name = "local", make = function(tmp)
      return "local", tmp .. "/remote", tmp .. "/remote"
    end },
  { name = "bwrap", skip = not BWRAP_WORKS, make = function(tmp)
      return "bwrap:" .. tmp, "/sandbox/remote", tmp .. "/remote"
    end },
  { name = "cmd:env", make = function(tmp)
      return "cmd:env FERRY_SPEC=1", tmp .. "/remote", tmp .. "/remote"
    end },
}

for _, pv in ipairs(PROVIDERS) do
  local describe_or_skip = pv.skip and pending or describe
  describe_or_skip("ferry verbs with the " .. pv.name .. " provider", function()
    local tmp, P, remote, host

    before_each(function()
      tmp = helpers.tmpdir()
      P, remote, host = pv.make(tmp)
      os.execute("mkdir -p '" .. host .. "'")
    end)

    after_each(function() helpers.rmtree(tmp) end)

    describe("exec", function()
      it("streams stdout and stderr and exits with the command's code", function()
        local r = run_ferry { "exec", "-p", P, "--", "sh", "-c", "echo out; echo err >&2; exit 7" }
        assert.equal(7, r.code)
        assert.equal("out\n", r.stdout)
        assert.equal("err\n", r.stderr)
        r = run_ferry { "exec", "-p", P, "true" }
        assert.equal(0, r.code)
      end)

      it("passes arguments through unchanged, including quotes and leading dashes", function()
        local r = run_ferry { "exec", "-p", P, "printf", "[%s]", "a b", "it's", "-n", "$HOME", "ü" }
        assert.equal(0, r.code)
        assert.equal("[a b][it's][-n][$HOME][ü]", r.stdout)
      end)

      it("exits 124 when --timeout expires", function()
        local t0 = os.time()
        local r = run_ferry { "exec", "-p", P, "--timeout", "1", "--", "sleep", "5" }
        assert.equal(124, r.code)
        assert.matches("timed out", r.stderr)
        assert.is_true(os.time() - t0 < 5)
      end)

      it("reports a missing command with exit 127", function()
        local r = run_ferry { "exec", "-p", P, "--", "no-such-command-ferry" }
        assert.equal(127, r.code)
        assert.matches("no%-such%-command%-ferry", r.stderr)
      end)

      it("exits 128+N when the command dies of signal N", function()
        local r = run_ferry { "exec", "-p", P, "--", "sh", "-c", "kill -TERM $$" }
        assert.equal(143, r.code)
      end)

      it("sets --env variables and the --cwd directory", function()
        local r = run_ferry { "exec", "-p", P, "--env", "FOO=bar", "--env=SPACED=a b=c", "--cwd", remote,
          "--", "sh", "-c", 'printf "%s|%s|%s" "$FOO" "$SPACED" "$(pwd)"' }
        assert.equal(0, r.code, r.stderr)
        assert.equal("bar|a b=c|" .. remote, r.stdout)
      end)

      it("feeds --stdin FILE and --stdin - to the command, byte for byte", function()
        local data = helpers.random_bytes(100000)
        local file = tmp .. "/input.bin"
        helpers.write_file(file, data)
        local r = run_ferry { "exec", "-p", P, "--stdin", file, "--", "sha256sum" }
        assert.equal(0, r.code, r.stderr)
        assert.equal(ferry.hash.sha256(data), r.stdout:match("^(%x+)"))
        r = run_ferry({ "exec", "-p", P, "--stdin", "-", "--", "wc", "-c" }, { stdin = "hello\n" })
        assert.equal(0, r.code, r.stderr)
        assert.equal("6", r.stdout:match("%d+"))
        r = run_ferry { "exec", "-p", P, "--stdin", tmp .. "/missing", "--", "cat" }
        assert.equal(1, r.code)
        assert.matches("^ferry: exec: %-%-stdin: .*missing", r.stderr)
      end)

      it("passes binary output through untouched", function()
        local data = helpers.random_bytes(200000)
        local r = run_ferry({ "exec", "-p", P, "--stdin", "-", "--", "cat" }, { stdin = data })
        assert.equal(0, r.code, r.stderr)
        assert.equal(data, r.stdout)
      end)

      it("replaces --secret-env values by *** in the output, even split across writes", function()
        local r = run_ferry({ "exec", "-p", P, "--secret-env", "SPEC_TOKEN", "--", "sh", "-c",
          "echo token=hunter2-xyz; printf hunt; sleep 0.2; printf 'er2-xyz\\n'; printf hunter2-xyz;"
            .. "echo hunter2-xyz >&2" },
          { env = { SPEC_TOKEN = "hunter2-xyz" } })
        assert.equal(0, r.code)
        assert.equal("token=***\n***\n***", r.stdout)
        assert.equal("***\n", r.stderr)
      end)
    end)

    describe("put, get, ls", function()
      it("round-trips binary data", function()
        local data = helpers.random_bytes(300000) .. "\0\r\n\255"
        local src, back = tmp .. "/src.bin", tmp .. "/back.bin"
        helpers.write_file(src, data)
        local r = run_ferry { "put", "-p", P, src, remote .. "/data.bin" }
        assert.equal(0, r.code, r.stderr)
        assert.equal(data, helpers.read_file(host .. "/data.bin"))
        r = run_ferry { "get", "-p", P, remote .. "/data.bin", back }
        assert.equal(0, r.code, r.stderr)
        assert.equal(data, helpers.read_file(back))
        r = run_ferry { "get", "-p", P, "--max-bytes", "1M", remote .. "/data.bin", "-" }
        assert.equal(0, r.code, r.stderr)
        assert.equal(data, r.stdout)
      end)

      it("put makes the missing parent dirs of REMOTE, and names a parent that is a file", function()
        local src = tmp .. "/small.txt"
        helpers.write_file(src, "small\n")
        local r = run_ferry { "put", "-p", P, "--no-session", src, remote .. "/new/dirs/small.txt" }
        assert.equal(0, r.code, r.stderr)
        assert.equal("small\n", helpers.read_file(host .. "/new/dirs/small.txt"))
        helpers.write_file(host .. "/plain", "x")
        r = run_ferry { "put", "-p", P, src, remote .. "/plain/small.txt" }
        assert.equal(1, r.code)
        assert.equal("ferry: put: write " .. remote .. "/plain/small.txt: " .. remote .. "/plain is not a directory\n",
          r.stderr)
      end)

      it("refuses a file over --max-bytes with the sizes in the message and writes nothing", function()
        helpers.write_file(host .. "/big.txt", string.rep("x", 100))
        local r = run_ferry { "get", "-p", P, "--max-bytes", "10", remote .. "/big.txt", tmp .. "/out" }
        assert.equal(1, r.code)
        assert.matches("^ferry: get: .*big%.txt is 100 bytes, over the 10 byte limit", r.stderr)
        assert.is_nil(helpers.read_file(tmp .. "/out"))
      end)

      it("fails on a missing remote file or local file", function()
        local r = run_ferry { "get", "-p", P, remote .. "/nope", tmp .. "/out" }
        assert.equal(1, r.code)
        assert.matches("^ferry: get: .*nope", r.stderr)
        r = run_ferry { "put", "-p", P, tmp .. "/nope", remote .. "/x" }
        assert.equal(1, r.code)
        assert.matches("^ferry: put: .*nope", r.stderr)
      end)

      it("lists a directory with kind, mode, size and name", function()
        os.execute("mkdir '" .. host .. "/sub' && printf hello > '" .. host .. "/a.txt' && chmod 640 '"
          .. host .. "/a.txt' && ln -s a.txt '" .. host .. "/link'")
        local r = run_ferry { "ls", "-p", P, remote }
        assert.equal(0, r.code, r.stderr)
        assert.matches("%- 0640 +5 a%.txt\n", r.stdout)
        assert.matches("d 07%d%d +%d+ sub/\n", r.stdout)
        assert.matches("l %d+ +%d+ link\n", r.stdout)
        r = run_ferry { "ls", "-p", P, remote .. "/missing" }
        assert.equal(1, r.code)
        assert.matches("^ferry: ls: .*missing", r.stderr)
      end)
    end)

    describe("prepare and restore", function()
      local ws, state

      before_each(function()
        ws = tmp .. "/ws"
        state = tmp .. "/state.json"
        os.execute("mkdir -p '" .. ws .. "/src'")
        helpers.write_file(ws .. "/src/main.c", "int main(void) { return 0; }\n")
        helpers.write_file(ws .. "/notes.txt", "notes\n")
        helpers.write_file(ws .. "/keep.txt", "keep\n")
      end)

      local function prepare(extra)
        local args = { "prepare", "-p", P, "-w", ws, "-r", remote, "--state", state, "--json" }
        for _, a in ipairs(extra or {}) do args[#args + 1] = a end
        local r = run_ferry(args)
        assert.equal(0, r.code, r.stderr)
        return r, last_json_line(r.stdout)
      end

      local function sandbox(script)
        local r = run_ferry { "exec", "-p", P, "--cwd", remote, "--", "sh", "-c", script }
        assert.equal(0, r.code, r.stderr)
      end

      it("prints JSON lines, the result object last, and round-trips the work", function()
        local r, res = prepare { "--exclude", "notes.txt" }
        for line in r.stdout:gmatch("[^\n]+") do assert.is_table(cjson.decode(line)) end
        assert.equal(remote, res.remote_dir)
        assert.is_string(res.runtime_dir)
        assert.is_not_nil(res.install_ran)
        assert.is_number(res.bytes)
        assert.equal("int main(void) { return 0; }\n", helpers.read_file(host .. "/src/main.c"))
        assert.is_nil(helpers.read_file(host .. "/notes.txt"), "excluded")

        sandbox("echo changed > keep.txt && echo new > src/new.c && rm src/main.c")
        r = run_ferry { "restore", "--state", state, "--json" }
        assert.equal(0, r.code, r.stderr)
        res = last_json_line(r.stdout)
        assert.is_true(contains(res.changed, "keep.txt"))
        assert.is_true(contains(res.changed, "src/new.c"))
        assert.is_true(contains(res.deleted, "src/main.c"))
        assert.same({}, res.conflicts)
        assert.same({}, res.refused)
        assert.is_number(res.bytes)
        assert.equal("changed\n", helpers.read_file(ws .. "/keep.txt"))
        assert.equal("notes\n", helpers.read_file(ws .. "/notes.txt"))
      end)

      it("exits 3 on a conflict, keeping the host's version and the sandbox's beside it", function()
        prepare()
        sandbox("echo remote > keep.txt")
        helpers.write_file(ws .. "/keep.txt", "local\n")
        local r = run_ferry { "restore", "--state", state }
        assert.equal(3, r.code, r.stderr)
        assert.matches("conflict +keep%.txt", r.stdout)
        assert.equal("local\n", helpers.read_file(ws .. "/keep.txt"))
        assert.equal("remote\n", helpers.read_file(ws .. "/keep.txt.ferry-remote"))
        -- A rerun converges: the host's version stays, no conflict is reported again.
        r = run_ferry { "restore", "--state", state, "--json" }
        assert.equal(0, r.code, r.stderr)
        assert.same({}, last_json_line(r.stdout).conflicts)
        assert.equal("local\n", helpers.read_file(ws .. "/keep.txt"))
        -- A new conflict, reported in the JSON result.
        sandbox("echo remote > notes.txt")
        helpers.write_file(ws .. "/notes.txt", "local\n")
        r = run_ferry { "restore", "--state", state, "--json" }
        assert.equal(3, r.code, r.stderr)
        local res = last_json_line(r.stdout)
        assert.same({ "notes.txt" }, res.conflicts)
        assert.equal("notes.txt.ferry-remote", res.conflict_copies["notes.txt"])
        assert.is_false(contains(res.changed, "notes.txt"))
      end)

      it("refuses a symlink out of the workspace unless --allow-outside-symlinks, and honours --max-bytes",
        function()
        prepare()
        sandbox("ln -s /etc escape && echo new > keep.txt")
        local r = run_ferry { "restore", "--state", state, "--json" }
        assert.equal(1, r.code)
        assert.matches("^ferry: restore: restore refused: %.?/?escape", r.stderr)
        local res = last_json_line(r.stdout)
        assert.is_false(res.ok)
        assert.matches("escape", res.error)
        assert.equal("keep\n", helpers.read_file(ws .. "/keep.txt"), "nothing written")
        r = run_ferry { "restore", "--state", state, "--allow-outside-symlinks" }
        assert.equal(0, r.code, r.stderr)
        assert.matches("changed  escape\n", r.stdout)
        assert.equal("/etc", ferry.core.fs_readlink(ws .. "/escape"))
        sandbox("head -c 100000 /dev/zero > big.bin")
        r = run_ferry { "restore", "--state", state, "--max-bytes", "10K" }
        assert.equal(1, r.code)
        assert.matches("^ferry: restore: restore refused: archive exceeds the 10240 byte limit", r.stderr)
        assert.is_nil(helpers.read_file(ws .. "/big.bin"))
      end)

      it("prints a short summary without --json", function()
        local r = run_ferry { "prepare", "-p", P, "-w", ws, "-r", remote, "--state", state }
        assert.equal(0, r.code, r.stderr)
        assert.matches("^prepared " .. ws:gsub("%p", "%%%0") .. " in ", r.stdout)
        assert.matches("adapter +shell", r.stdout)
        assert.matches("sent +3 files, 1 dir, 0 symlinks", r.stdout)
        assert.matches("ferry restore %-%-state " .. state:gsub("%p", "%%%0"), r.stdout)
        sandbox("rm notes.txt")
        r = run_ferry { "restore", "--state", state }
        assert.equal(0, r.code, r.stderr)
        assert.matches("^restored " .. remote:gsub("%p", "%%%0") .. " into .*: 0 changed, 1 deleted, 0 conflicts",
          r.stdout)
        assert.matches("deleted +notes%.txt\n", r.stdout)
      end)

      it("lists the asset dirs it copied", function()
        local assets = tmp .. "/assets"
        os.execute("mkdir -p '" .. assets .. "' && echo cfg > '" .. assets .. "/config.json'")
        local _, res = prepare { "--asset", "home=" .. assets }
        local dir = res.asset_dirs and res.asset_dirs.home
        assert.is_string(dir)
        assert.equal("cfg\n", helpers.read_file(host .. dir:sub(#remote + 1) .. "/config.json"))
      end)

      it("fails with exit 1 and a JSON error object on a missing workspace, secrets redacted", function()
        local r = run_ferry({ "prepare", "-p", P, "-w", tmp .. "/hunter2-xyz", "--state", state, "--json",
          "--secret-env", "SPEC_TOKEN" }, { env = { SPEC_TOKEN = "hunter2-xyz" } })
        assert.equal(1, r.code)
        assert.matches("^ferry: prepare: ", r.stderr)
        assert.not_matches("hunter2", r.stderr .. r.stdout)
        assert.matches("%*%*%*", r.stderr)
        assert.is_false(last_json_line(r.stdout).ok)
      end)

      it("fails with exit 1 on a missing state file", function()
        local r = run_ferry { "restore", "--state", tmp .. "/nope.json" }
        assert.equal(1, r.code)
        assert.matches("^ferry: restore: .*nope%.json", r.stderr)
      end)
    end)
  end)
end

describe("ferry verbs", function()
  it("have --help, through `ferry VERB --help` and `ferry help VERB`", function()
    for _, verb in ipairs { "exec", "put", "get", "ls", "prepare", "restore", "adapters", "providers" } do
      local r = run_ferry { verb, "--help" }
      assert.equal(0, r.code, verb)
      assert.matches("^usage: ferry " .. verb, r.stdout)
      assert.equal(r.stdout, run_ferry({ "help", verb }).stdout)
    end
    assert.matches("prepare %-p PROVIDER", run_ferry({ "--help" }).stdout)
  end)

  it("exit 2 on usage errors, naming what is wrong", function()
    local cases = {
      { { "exec", "-p", "local", "--bogus", "--", "true" }, "exec: unknown option '%-%-bogus'" },
      { { "exec", "-p", "local", "--json=1", "true" }, "exec: unknown option '%-%-json'" },
      { { "exec", "--", "true" }, "exec: missing %-p PROVIDER" },
      { { "exec", "-p", "local" }, "exec: missing CMD" },
      { { "exec", "-p", "local", "--timeout" }, "exec: option %-%-timeout needs a SEC" },
      { { "exec", "-p", "local", "--timeout", "soon", "true" }, "exec: %-%-timeout expects a number" },
      { { "exec", "-p", "local", "--env", "NOEQUALS", "true" }, "exec: %-%-env expects NAME=VALUE" },
      { { "put", "-p", "local", "only-one" }, "put: missing LOCAL REMOTE" },
      { { "put", "-p", "local", "a", "b", "c" }, "put: unexpected argument 'c'" },
      { { "get", "-p", "local", "--max-bytes", "lots", "a", "b" }, "get: %-%-max%-bytes expects a byte count" },
      { { "ls", "-p", "local" }, "ls: missing REMOTE_DIR" },
      { { "prepare", "-p", "local" }, "prepare: missing %-w WORKSPACE" },
      { { "prepare", "-p", "local", "-w", "/tmp", "--asset", "nokey" }, "prepare: %-%-asset expects KEY=DIR" },
      { { "restore" }, "restore: missing %-%-state FILE" },
      { { "restore", "--state", "x", "--allow-outside-symlinks=yes" },
        "restore: option %-%-allow%-outside%-symlinks takes no value" },
      { { "adapters", "extra" }, "adapters: unexpected argument 'extra'" },
    }
    for _, c in ipairs(cases) do
      local r = run_ferry(c[1])
      assert.equal(2, r.code, table.concat(c[1], " "))
      assert.matches("^ferry: " .. c[2], r.stderr)
      assert.matches("see ferry %S+ %-%-help", r.stderr)
    end
  end)

  it("reports an unknown provider with exit 1, naming it", function()
    local r = run_ferry { "exec", "-p", "nosuchprovider", "--", "true" }
    assert.equal(1, r.code)
    assert.matches("^ferry: exec: .*nosuchprovider", r.stderr)
  end)

  it("list adapters and providers with the file each is loaded from, FERRY_PATH first", function()
    local dir = helpers.tmpdir()
    os.execute("mkdir -p '" .. dir .. "/providers' '" .. dir .. "/adapters'")
    helpers.write_file(dir .. "/providers/mine.lua", "return { open = function() end }\n")
    helpers.write_file(dir .. "/adapters/shell.lua", "return { name = 'shell' }\n")
    local r = run_ferry { "providers" }
    assert.equal(0, r.code, r.stderr)
    for _, name in ipairs { "local", "bwrap", "cmd" } do -- name, usage; what it does; where it is from
      assert.matches("\n?" .. name .. " +" .. name .. "[^\n]*\n +[^\n]+\n +from %S*providers/" .. name .. "%.lua\n",
        r.stdout)
    end
    r = run_ferry({ "providers" }, { env = { FERRY_PATH = dir } })
    assert.matches("mine +mine\n +from " .. dir:gsub("%p", "%%%0") .. "/providers/mine%.lua\n", r.stdout)
    r = run_ferry { "adapters" }
    assert.equal(0, r.code, r.stderr)
    for _, name in ipairs { "shell", "claude", "codex", "gemini", "opencode", "cursor", "pi" } do
      assert.matches(name .. " +%S*adapters/" .. name .. "%.lua\n", r.stdout)
    end
    r = run_ferry({ "adapters" }, { env = { FERRY_PATH = dir } })
    assert.matches("shell +" .. dir:gsub("%p", "%%%0") .. "/adapters/shell%.lua\n", r.stdout)
    helpers.rmtree(dir)
  end)

  it("make demo runs the whole story and exits 0", function()
    local r = assert(ferry.proc.run { argv = { "make", "--no-print-directory", "demo" }, timeout_ms = 120000 })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("ferry restore", r.stdout)
    assert.matches("ok   the host's edit of docs/todo.txt was kept", r.stdout)
    assert.not_matches("FAIL", r.stdout)
  end)
end)

describe("the verbs' option parser", function()
  local verbs = require "ferry.cli.options"
  local SPEC = { options = {
    { names = { "-p", "--provider" }, key = "provider", value = "PROVIDER" },
    { names = { "--env" }, key = "env", value = "K=V", multi = true },
    { names = { "--json" }, key = "json" },
  } }

  it("takes --opt value, --opt=value, repeated options and positionals in any order", function()
    local o = assert(verbs.parse({ "a", "--provider=x=y", "--env", "A=1", "-", "--env=B=2", "--json", "b" }, SPEC))
    assert.equal("x=y", o.provider)
    assert.same({ "A=1", "B=2" }, o.env)
    assert.is_true(o.json)
    assert.same({ "a", "-", "b" }, o.args)
  end)

  it("ends options at -- and, when asked, at the first positional", function()
    assert.same({ "--json", "-p" }, assert(verbs.parse({ "--", "--json", "-p" }, SPEC)).args)
    local spec = { options = SPEC.options, stop_at_positional = true }
    local o = assert(verbs.parse({ "-p", "local", "ls", "-la", "--json" }, spec))
    assert.equal("local", o.provider)
    assert.is_nil(o.json)
    assert.same({ "ls", "-la", "--json" }, o.args)
  end)

  it("names an unknown option, a missing value and a value given to a flag", function()
    assert.same({ nil, "unknown option '--nope'" }, { verbs.parse({ "--nope=1" }, SPEC) })
    assert.same({ nil, "unknown option '-x'" }, { verbs.parse({ "-x" }, SPEC) })
    assert.same({ nil, "option -p needs a PROVIDER" }, { verbs.parse({ "-p" }, SPEC) })
    assert.same({ nil, "option --json takes no value" }, { verbs.parse({ "--json=yes" }, SPEC) })
  end)

  it("reads byte counts with K, M, G suffixes and refuses anything else", function()
    assert.equal(10, verbs.parse_size("10"))
    assert.equal(2048, verbs.parse_size("2K"))
    assert.equal(3 * 1024 ^ 3, verbs.parse_size("3G"))
    assert.equal(1024 ^ 2, verbs.parse_size("1MiB"))
    assert.is_nil(verbs.parse_size("-1"))
    assert.is_nil(verbs.parse_size("1.5M"))
    assert.is_nil(verbs.parse_size("lots"))
  end)
end)
