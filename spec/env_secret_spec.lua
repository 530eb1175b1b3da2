-- No secret on any command line (issue 8, item 7), and NUL bytes in cwd and env values raise (item 12).
-- sb:exec's env and `ferry exec --env-file` reach the sandbox on the command's stdin or through the session:
-- while a command runs, no process on this host (ssh's, sshd's, bwrap's and the sandbox's own processes
-- included: the sandboxes here all run on this host) nor in the sandbox's own process list shows the value.
local ferry = require "ferry"
local core = require "ferry.core"
local helpers = require "support.helpers"
local sandboxes = require "support.sandboxes"
local sshd = require "support.sshd"

local BWRAP_WORKS = require("support.sandboxes").BWRAP_WORKS

local function unique_token()
  return "ferrysecret" .. ferry.hash.sha256(tostring(core.time_ms()) .. math.random()):sub(1, 24)
end

-- A value that breaks naive quoting: newlines, both quotes, command substitutions, backslashes, CR, UTF-8.
local function awkward_value(token, marker)
  return token .. "\nline two 'single' \"double\" $(touch " .. marker .. ") `touch " .. marker .. "` $HOME \\n\\"
    .. "\r\t é\n\n"
end

-- The script the command runs: it looks for TOKEN in its own sandbox's process list (every cmdline, read by
-- one cat and matched by a shell builtin, so no process of the check shows it), waits so that the host can
-- look too, then prints SECRET exactly.
local PROBE = [[
all=$(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\000' ' ')
case $all in *"$TOKEN"*) echo inside=leak ;; *) echo inside=clean ;; esac
sleep 1
printf '%s' "$SECRET"
]]

-- Run PROBE with the secret in its env; meanwhile scan this host's processes. Returns the result and the pids
-- whose command line showed the token.
local function run_probe(sb, token, value, extra)
  local opts = { env = { SECRET = value, TOKEN = token } }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local runner = ferry.spawn(function() return assert(sb:exec(PROBE, opts)) end)
  ferry.sleep(500)
  local seen = helpers.pids_with(token)
  return ferry.wait(runner), seen
end

local function check_provider(label, open)
  describe("env on " .. label, function()
    local sb, tmp
    before_each(function()
      tmp = helpers.tmpdir()
      sb = open()
    end)
    after_each(function()
      sb:close()
      helpers.rmtree(tmp)
    end)

    it("never shows the value on a command line (host and sandbox), and it arrives exactly", function()
      local token = unique_token()
      local marker = tmp .. "/substituted"
      local value = awkward_value(token, marker)
      local res, seen = run_probe(sb, token, value)
      assert.same({}, seen)
      assert.equal(0, res.code, res.stderr)
      assert.equal("inside=clean\n" .. value, res.stdout)
      assert.is_nil(helpers.read_file(marker))
    end)

    it("still streams the command's stdin after the environment", function()
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      local data = table.concat(bytes):rep(300)
      local res = assert(sb:exec('printf "%s|" "$A"; cat', { env = { A = "x\ny" }, stdin = data }))
      assert.equal("x\ny|" .. data, res.stdout)
      local pieces = { "one\n", "two", "", "three" }
      res = assert(sb:exec('printf "%s|" "$A"; cat', { env = { A = "v" },
        stdin = function() return table.remove(pieces, 1) end }))
      assert.equal("v|one\ntwothree", res.stdout)
    end)

    it("unsets a variable given as false and exports numbers", function()
      local res = assert(sb:exec('printf "%s|%s" "${HOME-unset}" "$N"', { env = { HOME = false, N = 42 } }))
      assert.equal("unset|42", res.stdout)
    end)
  end)
end

check_provider("local", function() return assert(ferry.open("local")) end)
check_provider("cmd", function() return assert(ferry.open("cmd:env FERRY_SPEC=1")) end)
check_provider("busybox (busybox sh)", function()
  return assert(ferry.open("cmd:env PATH=" .. sandboxes.busybox_path()))
end)
check_provider("local, base64 channel (values as printf escapes)", function()
  return assert(ferry.open("local", { caps = { binary = false } }))
end)
check_provider("local session", function() return assert(ferry.open("local", { session = true })) end)
if BWRAP_WORKS then
  local box_dir = helpers.tmpdir()
  check_provider("bwrap", function() return assert(ferry.open("bwrap:" .. box_dir)) end)
  check_provider("bwrap session", function() return assert(ferry.open("bwrap:" .. box_dir, { session = true })) end)
end

describe("env over ssh", function()
  local server
  lazy_setup(function() server = sshd.start() end)
  lazy_teardown(function() if server then server:stop() end end)

  for _, session in ipairs { false, true } do
    it("never shows the value on the ssh command line nor in the remote process list" ..
      (session and " (session)" or ""), function()
      local sb = assert(ferry.open(server:url(), { session = session }))
      local token = unique_token()
      local tmp = helpers.tmpdir()
      local value = awkward_value(token, tmp .. "/substituted")
      local res, seen = run_probe(sb, token, value)
      sb:close()
      assert.same({}, seen)
      assert.equal("inside=clean\n" .. value, res.stdout)
      assert.is_nil(helpers.read_file(tmp .. "/substituted"))
      helpers.rmtree(tmp)
    end)
  end
end)

describe("env without stdin", function()
  it("is refused: the values would be on the command line", function()
    local sb = assert(ferry.open("local", { caps = { stdin = false } }))
    assert.has_error(function() sb:exec("true", { env = { A = "x" } }) end,
      "exec: opts.env needs a channel with stdin: local has none, and the values would be on the command line")
  end)
end)

describe("ferry exec --env-file", function()
  local tmp
  before_each(function() tmp = helpers.tmpdir() end)
  after_each(function() helpers.rmtree(tmp) end)

  local function ferry_exec(args, opts)
    local argv = { helpers.ferry_bin, "exec", "-p", "local" }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    opts = opts or {}
    opts.argv = argv
    opts.timeout_ms = 30000
    return assert(ferry.proc.run(opts))
  end

  it("sets every NAME=VALUE line (comments and blank lines skipped, --env wins), off the command lines",
    function()
      local token = unique_token()
      local file = tmp .. "/env"
      helpers.write_file(file, "# credentials\n\nAPI_TOKEN=" .. token .. " 'kept as is' $(not run)\n"
        .. "  INDENTED=yes\nEMPTY=\nOVERRIDDEN=file\n")
      local seen
      local runner = ferry.spawn(function()
        return ferry_exec { "--env-file", file, "--env", "OVERRIDDEN=flag", "--", "sh", "-c",
          'sleep 1; printf "%s|%s|%s|%s" "$API_TOKEN" "$INDENTED" "${EMPTY-unset}" "$OVERRIDDEN"' }
      end)
      ferry.sleep(500)
      seen = helpers.pids_with(token)
      local res = ferry.wait(runner)
      assert.same({}, seen)
      assert.equal(0, res.code, res.stderr)
      assert.equal(token .. " 'kept as is' $(not run)|yes||flag", res.stdout)
    end)

  it("names FILE:LINE of a bad line (without quoting it) and exits 2", function()
    local file = tmp .. "/env"
    helpers.write_file(file, "A=1\n# ok\nnot a variable sk-secret\n")
    local res = ferry_exec { "--env-file", file, "--", "true" }
    assert.equal(2, res.code)
    assert.equal("ferry: exec: --env-file " .. file .. ":3: expected NAME=VALUE\n(see ferry exec --help)\n",
      res.stderr)
  end)

  it("fails on a file it cannot read", function()
    local res = ferry_exec { "--env-file", tmp .. "/missing", "--", "true" }
    assert.equal(1, res.code)
    assert.equal("ferry: exec: --env-file " .. tmp .. "/missing: No such file or directory\n", res.stderr)
  end)
end)

describe("NUL bytes in cwd and env values", function()
  it("raise in ferry.proc.run, naming the field", function()
    assert.has_error(function() ferry.proc.run { argv = { "true" }, cwd = "/tmp\0/x" } end,
      "proc.run: opts.cwd contains a NUL byte")
    assert.has_error(function() ferry.proc.run { argv = { "true" }, env = { A = "a\0b" } } end,
      "proc.run: opts.env.A contains a NUL byte")
  end)

  it("raise in sb:exec, naming the field, before anything runs", function()
    local calls = 0
    local sb = assert(ferry.open("local", { on_exec = function() calls = calls + 1 end }))
    assert.has_error(function() sb:exec("true", { cwd = "/tmp\0/x" }) end, "exec: opts.cwd contains a NUL byte")
    assert.has_error(function() sb:exec("true", { env = { SECRET = "a\0b" } }) end,
      "exec: opts.env.SECRET contains a NUL byte")
    assert.has_error(function() sb:exec("true", { env = { ["1A"] = "x" } }) end,
      "exec: opts.env key '1A' is not a variable name")
    assert.has_error(function() sb:exec("true", { env = { A = {} } }) end,
      "exec: opts.env.A must be a string, number or false")
    assert.equal(0, calls)
  end)
end)
