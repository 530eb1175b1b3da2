-- ferry.sh: POSIX quoting, checked against real shells (dash, bash, busybox sh) in two locales.
local ferry = require "ferry"
local sh = ferry.sh

local RANDOM_STRINGS = 100000
local ARGS_PER_LINE = 100
local JOIN_LISTS = 200

-- Every shell the quoting must hold in. "bash -H" turns on the history expansion of interactive bash: there
-- `!` and `^` stay literal in a one-line word, but bash expands each input line anew, so a quoted word spanning
-- lines cannot be protected by POSIX quoting; that variant gets the one-line strings only.
local SHELLS = {
  { name = "dash", argv = { "dash", "-s" }, inner = { "dash" } },
  { name = "bash", argv = { "bash", "-s" }, inner = { "bash" } },
  { name = "bash -H", argv = { "bash", "-s" }, inner = { "bash" }, prelude = "set -o history -H\n", one_line = true },
  { name = "busybox sh", argv = { "busybox", "sh", "-s" }, inner = { "busybox", "sh" } },
}
local LOCALES = { "C.UTF-8", "C" }

-- Characters a shell treats specially somewhere, plus bytes that trip up multibyte decoding and bash's
-- internal quoting markers (\1, \127).
local SPECIAL = {
  "\n", "'", '"', "\\", "$", "`", "!", "{", "}", "~", "#", "-", "*", "?", "[", "]", "\r", "\t", " ", "=",
  "&", ";", "|", "<", ">", "(", ")", "^", "%", "\xA0", "\xFF", "\x80", "\1", "\127", "é", "€", "\xC3",
}
local SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:,+@%-"

local function random_string()
  local len = math.random(0, 64)
  local parts = {}
  if math.random() < 0.1 then -- all safe: exercises the bare form
    for i = 1, len do
      local k = math.random(#SAFE)
      parts[i] = SAFE:sub(k, k)
    end
    return table.concat(parts)
  end
  for i = 1, len do
    parts[i] = math.random() < 0.5 and SPECIAL[math.random(#SPECIAL)] or string.char(math.random(1, 255))
  end
  return table.concat(parts)
end

local function make_dir()
  local res = assert(ferry.proc.run { argv = { "mktemp", "-d" } })
  local dir = res.stdout:gsub("\n$", "")
  -- Files for an unquoted glob (*, ?, [ab]) to match, so that a missed quote changes the output.
  assert(ferry.proc.run { argv = { "touch", dir .. "/a", dir .. "/b" } })
  return dir
end

local function run_script(shell, locale, dir, script)
  return assert(ferry.proc.run {
    argv = shell.argv,
    stdin = (shell.prelude or "") .. script,
    cwd = dir,
    env = { LC_ALL = locale, HOME = dir, ENV = false, BASH_ENV = false },
    timeout_ms = 60000,
    max_output = 256 * 1024 * 1024,
  })
end

-- One `printf '%s\0' q1 q2 ...` per ARGS_PER_LINE strings, each string quoted on its own.
local function printf_script(strings)
  local lines = {}
  for first = 1, #strings, ARGS_PER_LINE do
    local words = { "printf '%s\\0'" }
    for i = first, math.min(first + ARGS_PER_LINE - 1, #strings) do words[#words + 1] = sh.quote(strings[i]) end
    lines[#lines + 1] = table.concat(words, " ")
  end
  return table.concat(lines, "\n") .. "\n"
end

local function nul_records(strings)
  if #strings == 0 then return "" end
  return table.concat(strings, "\0") .. "\0"
end

local function split_nul(s)
  local out, pos = {}, 1
  while pos <= #s do
    local z = s:find("\0", pos, true) or #s + 1
    out[#out + 1] = s:sub(pos, z - 1)
    pos = z + 1
  end
  return out
end

-- Fails naming the first string that did not come back, its quoted form and what the shell printed.
local function assert_round_trip(label, res, strings)
  assert.are.equal("", res.stderr, label .. ": stderr")
  assert.are.equal(0, res.code, label .. ": exit code")
  assert.is_false(res.truncated, label .. ": output truncated")
  if res.stdout == nul_records(strings) then return end
  local got = split_nul(res.stdout)
  for i, s in ipairs(strings) do
    if got[i] ~= s then
      error(string.format("%s: string %d %q (quoted %s) came back as %q", label, i, s, sh.quote(s),
        tostring(got[i])), 0)
    end
  end
  error(string.format("%s: %d strings sent, %d came back", label, #strings, #got), 0)
end

local function for_shell(shell, strings)
  if not shell.one_line then return strings end
  local kept = {}
  for _, s in ipairs(strings) do
    if not s:find("\n", 1, true) then kept[#kept + 1] = s end
  end
  return kept
end

-- In every shell and locale at once: build(shell) -> script, expected strings; each must come back exactly.
local function in_every_shell(dir, label, build)
  local tasks, labels, expected = {}, {}, {}
  for _, shell in ipairs(SHELLS) do
    local script, strings = build(shell)
    for _, locale in ipairs(LOCALES) do
      labels[#labels + 1] = string.format("%s (LC_ALL=%s) %s", shell.name, locale, label)
      expected[#expected + 1] = strings
      tasks[#tasks + 1] = ferry.spawn(run_script, shell, locale, dir, script)
    end
  end
  local results = ferry.wait(tasks)
  for i, res in ipairs(results) do assert_round_trip(labels[i], res, expected[i]) end
end

local CLASSES = {
  newline = "a\nb", lone_newline = "\n", single_quote = "it's", only_quotes = "'''", double_quote = 'say "hi"',
  backslash = "a\\b\\", trailing_backslash = "x\\", dollar = "$HOME", command_subst = "$(echo pwned)",
  arith = "$((1+1))", backtick = "`echo pwned`", bang = "!", history = "!!", history_word = "a!$b",
  braces = "{a,b}", lone_brace = "{", close_brace = "}", tilde = "~", tilde_user = "~root/x", hash = "#c",
  mid_hash = "a#b", leading_dash = "-rf", double_dash = "--", star = "*", question = "?", bracket = "[ab]",
  lone_bracket = "[", utf8 = "héllo wörld €", invalid_utf8 = "\xC3\x28\xA0\xA1\xE2\x82", nbsp = "a\xA0b",
  lone_nbsp = "\xA0", ff = "\xFF\xFE", cr = "a\rb", crlf = "line\r\n", tab = "a\tb", space = " ", empty = "",
  assignment = "a=b", equals = "=", semicolon = "a;b", pipe = "a|b", ampersand = "a&b", redirect = ">x",
  parens = "(x)", control = "\1\2\3\127", percent = "%1", caret = "^x", safe = "a/b.c",
}

describe("ferry.sh.quote", function()
  it("leaves strings made of safe characters bare", function()
    assert.are.equal("abc", sh.quote("abc"))
    assert.are.equal("a/b.c", sh.quote("a/b.c"))
    assert.are.equal("-x", sh.quote("-x"))
    assert.are.equal("user@host:/p_1,2+3%4", sh.quote("user@host:/p_1,2+3%4"))
  end)

  it("writes the empty string as ''", function()
    assert.are.equal("''", sh.quote(""))
  end)

  it("single-quotes everything else, writing ' as '\\''", function()
    assert.are.equal("'a b'", sh.quote("a b"))
    assert.are.equal("'it'\\''s'", sh.quote("it's"))
    assert.are.equal("''\\'''", sh.quote("'"))
    assert.are.equal("'a=b'", sh.quote("a=b"))
    assert.are.equal("'~'", sh.quote("~"))
    assert.are.equal("'$x'", sh.quote("$x"))
    assert.are.equal("'\xA0'", sh.quote("\xA0"))
  end)

  it("raises on a NUL byte", function()
    assert.has_error(function() sh.quote("a\0b") end, "sh.quote: string contains a NUL byte")
  end)

  it("raises on a non-string, naming the argument", function()
    assert.has_error(function() sh.quote(42) end, "sh.quote: s must be a string, got number")
    assert.has_error(function() sh.quote() end, "sh.quote: s must be a string, got no value")
  end)
end)

describe("ferry.sh.join", function()
  it("quotes each element and separates them with single spaces", function()
    assert.are.equal("ls -l 'my file' '' 'it'\\''s'", sh.join { "ls", "-l", "my file", "", "it's" })
  end)

  it("gives an empty string for an empty list", function()
    assert.are.equal("", sh.join {})
  end)

  it("raises on a NUL byte, naming the element", function()
    assert.has_error(function() sh.join { "a", "b", "c\0" } end, "sh.join: argv[3] contains a NUL byte")
  end)

  it("raises on anything but a list of strings", function()
    assert.has_error(function() sh.join("ls") end, "sh.join: argv must be a list of strings, got string")
    assert.has_error(function() sh.join { "ls", 1 } end, "sh.join: argv[2] must be a string, got number")
    assert.has_error(function() sh.join { "ls", x = "y" } end,
      "sh.join: argv must be a list of strings (keys 1..n only)")
    assert.has_error(function() sh.join { [2] = "y" } end)
  end)
end)

describe("ferry.sh quoting through dash, bash and busybox sh", function()
  local dir
  setup(function() dir = make_dir() end)
  teardown(function() assert(ferry.proc.run { argv = { "rm", "-rf", dir } }) end)

  it("reads back every special character class unchanged", function()
    local names, strings = {}, {}
    for name in pairs(CLASSES) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do strings[#strings + 1] = CLASSES[name] end
    strings[#strings + 1] = table.concat(strings) -- all of them in one word
    in_every_shell(dir, "classes", function(shell)
      local sent = for_shell(shell, strings)
      return printf_script(sent), sent
    end)
  end)

  it("reads back " .. RANDOM_STRINGS .. " random byte strings unchanged", function()
    local seed = os.time()
    math.randomseed(seed)
    local strings = {}
    for i = 1, RANDOM_STRINGS do strings[i] = random_string() end
    local script = printf_script(strings)
    in_every_shell(dir, "seed " .. seed, function(shell)
      if not shell.one_line then return script, strings end
      local sent = for_shell(shell, strings)
      return printf_script(sent), sent
    end)
  end)

  it("joins a command line whose words reach a child process as its argv", function()
    local seed = os.time()
    math.randomseed(seed)
    local lists = {}
    for i = 1, JOIN_LISTS do
      local list = {}
      for k = 1, math.random(0, 6) do list[k] = random_string() end
      lists[i] = list
    end
    in_every_shell(dir, "seed " .. seed, function(shell)
      local child = {}
      for _, word in ipairs(shell.inner) do child[#child + 1] = word end
      for _, word in ipairs { "-c", 'printf "%s\\0" "$#" "$@"', "argv0" } do child[#child + 1] = word end
      local lines, expected = {}, {}
      for _, list in ipairs(lists) do
        local sent = for_shell(shell, list)
        lines[#lines + 1] = sh.join(child) .. " " .. sh.join(sent)
        expected[#expected + 1] = tostring(#sent)
        for _, s in ipairs(sent) do expected[#expected + 1] = s end
      end
      return table.concat(lines, "\n") .. "\n", expected
    end)
  end)
end)
