-- Terminal-safe output (issue 8, item 6): bytes from a hostile sandbox — its tar's stderr, entry names in a
-- refusal, names in a listing or a restore summary, an install's output in a warning — never reach the
-- terminal raw: ESC, BEL, CR, C1 controls are printed as escapes. Colour only on a terminal without NO_COLOR.
local ferry = require "ferry"
local cjson = require "cjson"
local helpers = require "support.helpers"

local FERRY = helpers.ferry_bin
local OSC52 = "\27]52;c;aGFja2Vk\7" -- write "hacked" to the clipboard
local CLEAR = "\27[2J"

local function run(args, opts)
  opts = opts or {}
  local argv = { FERRY }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return assert(ferry.proc.run { argv = argv, env = opts.env, cwd = opts.cwd, timeout_ms = 60000 })
end

local function no_raw_escape(text, what)
  assert.is_nil(text:find("[\27\7\8\13\155]"), what .. " holds a raw control byte: " .. string.format("%q", text))
end

describe("ferry.printable", function()
  local printable = require "ferry.printable"

  it("text keeps printable ASCII, UTF-8, newlines and tabs, and escapes what a terminal acts on", function()
    assert.equal("plain é ü 日本\n\tend", printable.text("plain é ü 日本\n\tend"))
    assert.equal("\\e]52;c;aGFja2Vk\\x07 \\e[2J \\r \\x08 \\x7f \\x00", printable.text(OSC52 .. " " .. CLEAR
      .. " \r \8 \127 \0"))
    -- a raw C1 byte, a stray continuation byte, an overlong form, a surrogate; C1 and bidi overrides in UTF-8
    assert.equal("\\x9b \\x80 \\xc0\\xaf \\xed\\xa0\\x80 \\xc2\\x9b \\xe2\\x80\\xae", printable.text(
      "\155 \128 \192\175 \237\160\128 \194\155 \226\128\174"))
    assert.equal("a\\b", printable.text("a\\b"))
  end)

  it("name is one line that tells names apart", function()
    assert.equal("a\\\\b\\nc\\td é \\e[2J", printable.name("a\\b\nc\td é " .. CLEAR))
  end)

  it("json escapes control bytes, C1 controls and bytes that are not UTF-8 as \\u escapes", function()
    assert.equal('q\\"\\\\/\\n\\u0001\\u007f\\u001b é \\u009b \\u009b',
      printable.json("q\"\\/\n\1\127\27 é \194\155 \155"))
    assert.same("\27 é \194\155", cjson.decode('"' .. printable.json("\27 é \194\155") .. '"'))
  end)
end)

describe("a hostile sandbox", function()
  local tmp, ws, remote
  before_each(function()
    tmp = helpers.tmpdir()
    ws, remote = tmp .. "/ws", tmp .. "/remote"
    helpers.sh("mkdir -p " .. ws .. " " .. remote .. " " .. tmp .. "/bin " .. tmp .. "/policy/adapters")
    helpers.write_file(ws .. "/a.txt", "a\n")
  end)
  after_each(function() helpers.rmtree(tmp) end)

  it("cannot reach the terminal through its tar's stderr in an error message", function()
    helpers.write_file(tmp .. "/bin/tar", "#!/bin/sh\nprintf 'tar: \\033]52;c;aGFja2Vk\\007clipboard "
      .. "\\033[2J cleared \\233 c1\\r\\n' >&2\nexit 2\n")
    helpers.sh("chmod +x " .. tmp .. "/bin/tar")
    local res = run { "prepare", "-p", "cmd:env PATH=" .. tmp .. "/bin:/usr/bin:/bin", "-w", ws, "-r", remote,
      "--state", tmp .. "/state.json" }
    assert.equal(1, res.code)
    assert.equal("ferry: prepare: sync to " .. remote .. ": exit code 2: tar: \\e]52;c;aGFja2Vk\\x07"
      .. "clipboard \\e[2J cleared \\x9b c1\n", res.stderr)
    no_raw_escape(res.stderr, "stderr")
  end)

  it("cannot reach the terminal through entry names: ls, a refusal, a restore summary, --json", function()
    local state = tmp .. "/state.json"
    assert.equal(0, run({ "prepare", "-p", "local", "-w", ws, "-r", remote, "--state", state }).code)
    local fifo = remote .. "/" .. OSC52 .. "p"
    helpers.sh("mkfifo '" .. fifo .. "'")
    helpers.write_file(remote .. "/" .. CLEAR .. "name", "x\n")

    local ls = run { "ls", "-p", "local", remote }
    assert.equal(0, ls.code)
    assert.truthy(ls.stdout:find(" \\e[2Jname\n", 1, true))
    assert.truthy(ls.stdout:find(" \\e]52;c;aGFja2Vk\\x07p\n", 1, true))
    no_raw_escape(ls.stdout, "ls")

    local refused = run { "restore", "--state", state }
    assert.equal(1, refused.code)
    assert.equal("  refused  ./\\e]52;c;aGFja2Vk\\x07p: fifo\n"
      .. "ferry: restore: restore refused: ./\\e]52;c;aGFja2Vk\\x07p: fifo\n", refused.stderr)

    os.remove(fifo)
    local restored = run { "restore", "--state", state }
    assert.equal(0, restored.code, restored.stderr)
    assert.truthy(restored.stdout:find("\n  changed  \\e[2Jname\n", 1, true))
    no_raw_escape(restored.stdout, "the summary")
    no_raw_escape(restored.stderr, "stderr")
    helpers.write_file(remote .. "/" .. CLEAR .. "name", "changed again\n")
    local json = run { "restore", "--state", state, "--json" }
    assert.equal(0, json.code, json.stderr)
    no_raw_escape(json.stdout, "--json")
    assert.truthy(json.stdout:find('"\\u001b[2Jname"', 1, true))
  end)

  describe("an install warning", function()
    local function adapter()
      helpers.write_file(tmp .. "/policy/adapters/evil.lua", "return { name = 'evil', detect = 'ferry-no-such-tool-x', "
        .. "install = [[printf 'boom \\033]52;c;aGk=\\007 \\033[31mred\\n'; exit 1]] }\n")
    end
    local WARNING = "install exited with code 1: boom \\e]52;c;aGk=\\x07 \\e[31mred"

    it("is escaped, and without colour when stderr is not a terminal", function()
      adapter()
      local res = run({ "prepare", "-p", "local", "-a", "evil", "-w", ws, "-r", remote, "--state",
        tmp .. "/state.json" }, { env = { FERRY_PATH = tmp .. "/policy", NO_COLOR = false } })
      assert.equal(0, res.code, res.stderr)
      assert.equal("ferry: warning: " .. WARNING .. "\n", res.stderr)
    end)

    -- Run ferry on a terminal: script(1) gives it a pty; what ferry wrote to the terminal comes back.
    local function on_a_terminal(no_color)
      adapter()
      local cmd = string.format("%s prepare -p local -a evil -w %s -r %s --state %s/state.json", FERRY, ws, remote, tmp)
      local env = { FERRY_PATH = tmp .. "/policy", NO_COLOR = no_color or false, TERM = "xterm" }
      local res = assert(ferry.proc.run { argv = { "script", "-qec", cmd, "/dev/null" }, env = env,
        timeout_ms = 60000 })
      assert.equal(0, res.code, res.stdout)
      return res.stdout
    end

    it("is coloured on a terminal, the sandbox's bytes still escaped", function()
      local out = on_a_terminal()
      assert.truthy(out:find("ferry: \27[33mwarning\27[0m: " .. WARNING, 1, true))
      assert.truthy(out:find("\27[1;36minstall ", 1, true)) -- the progress bar's phase
      local stripped = out:gsub("\27%[[%d;]*m", "")
      no_raw_escape((stripped:gsub("\r", "")), "the terminal output without ferry's colours")
    end)

    it("has no colour on a terminal when NO_COLOR is set", function()
      local out = on_a_terminal("1")
      assert.truthy(out:find("ferry: warning: " .. WARNING, 1, true))
      assert.is_nil(out:find("\27", 1, true))
    end)
  end)
end)
