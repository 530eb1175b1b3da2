-- Policy files as checked data: the schema (ferry.schema) and where a field is set (ferry.policy_source),
-- policy.load refusing a broken adapter or provider with FILE:LINE and the field, the provider object checked
-- at open, `ferry adapters|providers --check`, and the examples of scripts/README.md. The policy files live in
-- a temp dir named by FERRY_PATH, read by a fresh ferry process.
local ferry = require "ferry"
local core = require "ferry.core"
local schema = require "ferry.schema"
local source = require "ferry.policy_source"
local helpers = require "support.helpers"

local function mkdirs(path)
  assert(os.execute("mkdir -p '" .. path .. "'"))
end

local function lines_of(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

local function messages(problems)
  local out = {}
  for i, p in ipairs(problems) do out[i] = p.message end
  return out
end

-- Run build/ferry with FERRY_PATH = `dir` and no user config dir; returns the proc.run result.
local function ferry_with(dir, argv, extra_env)
  local env = { FERRY_PATH = dir, XDG_CONFIG_HOME = dir .. "/no-config" }
  for k, v in pairs(extra_env or {}) do env[k] = v end
  local full = { helpers.ferry_bin }
  table.move(argv, 1, #argv, 2, full)
  return assert(ferry.proc.run { argv = full, env = env, timeout_ms = 60000 })
end

-- Run a Lua chunk in build/ferry with FERRY_PATH = `dir`; returns its stdout (stderr must be empty).
local function lua_with(dir, code)
  local res = ferry_with(dir, { "-e", code })
  assert.are.equal(0, res.code, res.stderr)
  assert.are.equal("", res.stderr)
  return res.stdout
end

-- ferry.open("<name>:x") for each name in a fresh process: "sandbox|err|code" lines (and what the providers print).
local function open_each(dir, names)
  return lua_with(dir, "local ferry = require 'ferry'\n"
    .. "for _, name in ipairs { '" .. table.concat(names, "', '") .. "' } do\n"
    .. "  local sb, err, code = ferry.open(name .. ':x')\n"
    .. "  io.write(tostring(sb), '|', err, '|', code, '\\n')\n"
    .. "end")
end

-- The broken and good policy files the specs load; each is written at the line numbers the messages name.
local FILES = {
  ["adapters/typo.lua"] = table.concat({
    "-- an adapter whose hooks table is misspelled",
    "return {",
    "  name = 'typo',",
    "  hook = { after_sync = function() end },",
    "}",
  }, "\n"),
  ["adapters/badtype.lua"] = table.concat({
    "return {",
    "  name = 'badtype',",
    "  excludes = 5,",
    "  preserve = { '.venv', 7 },",
    "}",
  }, "\n"),
  ["adapters/syntax.lua"] = "return {\n  name = 'syntax'\n  detect = 'x',\n}\n",
  ["adapters/boom.lua"] = "local x = nil\nreturn { name = x.y }\n",
  -- a good override of a built-in, and a good new adapter: the defaults fill what they leave out
  ["adapters/codex.lua"] = "return { name = 'codex', detect = 'codex',\n"
    .. "  hooks = { after_restore = function() return 'mine' end } }\n",
  ["adapters/aider.lua"] = "return { detect = 'aider', install = 'pip install aider-chat' }\n",
  ["providers/typo.lua"] = table.concat({
    "local M = {}",
    "M.usage = 'typo:X'",
    "M.hlep = 'runs nothing'",
    "function M.open() end",
    "return M",
  }, "\n"),
  ["providers/noopen.lua"] = "return { usage = 'noopen' }\n",
  ["providers/boom.lua"] = "error('no provider today')\n",
  ["providers/nocmd.lua"] = table.concat({
    "local M = {}",
    "function M.open(arg)",
    "  return { name = 'nocmd:' .. arg, caps = { stdin = true } }",
    "end",
    "return M",
  }, "\n"),
  ["providers/badcaps.lua"] = table.concat({
    "local M = {}",
    "function M.open()",
    "  return {",
    "    name = 'badcaps',",
    "    caps = { stdin = true, binray = true },",
    "    command = function(_, s) return { 'sh', '-c', s } end,",
    "    close = function() io.write('closed\\n') end,",
    "  }",
    "end",
    "return M",
  }, "\n"),
  ["providers/notable.lua"] = "return { open = function() return 'yes' end }\n",
  -- a user's docker that does not load must not break podman
  ["providers/docker.lua"] = "error('my docker is broken')\n",
}


-- How many built-in files of a kind the source tree holds (the counts --check prints grow with them).
local function builtin_count(kind)
  local dir = helpers.root .. (kind == "adapters" and "/scripts/adapters" or "/providers")
  local n = 0
  for _, file in ipairs(core.fs_readdir(dir)) do
    if file:match("%.lua$") then n = n + 1 end
  end
  return n
end

describe("the policy schema", function()
  it("names an unknown field and the known one it is closest to", function()
    local problems = schema.validate(schema.ADAPTER, { hook = {}, zzz = 1, instal = "x" })
    assert.are.same({ "unknown field 'hook' (did you mean 'hooks'?)",
      "unknown field 'instal' (did you mean 'install'?)", "unknown field 'zzz'" }, messages(problems))
    assert.are.same({ "hook" }, problems[1].keys)
    assert.are.equal("hooks", schema.closest("hook", { "name", "hooks" }))
    assert.are.equal("detect", schema.closest("detcet", { "detect", "install" }))
    assert.is_nil(schema.closest("zzz", { "name", "hooks" }))
  end)

  it("names a field of the wrong type, in a list or a nested table, and what it got", function()
    assert.are.same({ "field 'excludes' must be a list of strings, got number" },
      messages(schema.validate(schema.ADAPTER, { excludes = 5 })))
    assert.are.same({ "field 'excludes' must be a list of strings, got a table with key 'a'" },
      messages(schema.validate(schema.ADAPTER, { excludes = { a = "x" } })))
    assert.are.same({ "field 'preserve[2]' must be a string, got number",
      "field 'preserve[3]' must be a name in the remote dir (no '/'), got \"a/b\"" },
      messages(schema.validate(schema.ADAPTER, { preserve = { ".venv", 7, "a/b" } })))
    assert.are.same({ "unknown field 'hooks.aftersync' (did you mean 'hooks.after_sync'?)",
      "field 'hooks.before_sync' must be a function, got string" },
      messages(schema.validate(schema.ADAPTER, { hooks = { aftersync = print, before_sync = "x" } })))
    assert.are.same({ "field 'excludes[1]': exclude pattern \"a/../b\": '.' and '..' components are not allowed" },
      messages(schema.validate(schema.ADAPTER, { excludes = { "a/../b" } })))
    assert.are.same({ "field 'name' must be a name (letters, digits, '_', '-' and '.', not starting with '.' or "
      .. "'-'), got \"../x\"" }, messages(schema.validate(schema.ADAPTER, { name = "../x" })))
    assert.are.same({ "the file must return a table, got nil" }, messages(schema.validate(schema.ADAPTER, nil)))
  end)

  it("requires a provider module's open, and command or exec on the object it returns", function()
    assert.are.same({ "field 'open' must be a function, got nil" },
      messages(schema.validate(schema.PROVIDER_MODULE, { usage = "x" })))
    local methods = { __index = { command = function() end, close = function() end } }
    -- methods come from the metatable; the provider's own state is allowed beside the fields
    assert.are.same({}, schema.validate(schema.PROVIDER, setmetatable({ name = "p", host = "h" }, methods)))
    assert.are.same({}, schema.validate(schema.PROVIDER, { exec = print, caps = {} }))
    assert.are.same({ "field 'command' must be a function, got nil (a provider needs command or exec)" },
      messages(schema.validate(schema.PROVIDER, { name = "p" })))
    assert.are.same({ "unknown field 'caps.binray' (did you mean 'caps.binary'?)",
      "field 'caps.stdin' must be a boolean, got string" },
      messages(schema.validate(schema.PROVIDER, { command = print, caps = { stdin = "yes", binray = true } })))
  end)

  it("fills an adapter's defaults", function()
    local a = schema.apply_defaults(schema.ADAPTER, { detect = "x" }, "mine")
    assert.are.same({ "mine", "x", {}, {}, {} }, { a.name, a.detect, a.excludes, a.preserve, a.hooks })
    assert.are.same({}, a.assets({}))
  end)

  it("finds the line that sets a field, not a comment, a string or a local of that name", function()
    local text = table.concat({
      "-- hook = in a comment",
      "local hook = 1",
      "local s = 'hook = in a string'",
      "--[[ a long comment",
      "hooks = { after_sync = 1 } ]]",
      "return {",
      "  name = 'x', ['hook'] = 2,",
      "  hooks = {",
      "    after_sync = nil,",
      "  },",
      "}",
    }, "\n")
    local src = source.new(text)
    assert.are.equal(7, src:line_of({ "hook" }))
    assert.are.equal(7, src:line_of({ "name" }))
    assert.are.equal(9, src:line_of({ "hooks", "after_sync" }))
    assert.are.equal(8, src:line_of({ "hooks", "before_sync" })) -- the parent's line
    assert.is_nil(src:line_of({ "nope" }))
    assert.are.equal(6, src:last_return())
    src = source.new("local M = {}\nM.usage = 'x'\nfunction M.open(arg)\nend\nreturn M")
    assert.are.same({ 2, 3, 5 }, { src:line_of({ "usage" }), src:line_of({ "open" }), src:last_return() })
  end)

  it("reports FILE:LINE: message in line order", function()
    local text = "return {\n  excludes = 5,\n  hook = 1,\n}\n"
    assert.are.same({ "a.lua:2: field 'excludes' must be a list of strings, got number",
      "a.lua:3: unknown field 'hook' (did you mean 'hooks'?)" },
      schema.check_adapter(assert(load(text))(), "a.lua", text))
  end)
end)

describe("policy files in FERRY_PATH", function()
  local dir

  lazy_setup(function()
    dir = helpers.tmpdir()
    mkdirs(dir .. "/adapters")
    mkdirs(dir .. "/providers")
    for rel, text in pairs(FILES) do helpers.write_file(dir .. "/" .. rel, text) end
  end)
  lazy_teardown(function() helpers.rmtree(dir) end)

  it("policy.load refuses a broken adapter with FILE:LINE and the field", function()
    local out = lua_with(dir, [[
      local policy = require "ferry.policy"
      for _, name in ipairs { "typo", "badtype", "syntax", "boom" } do
        local mod, err, code = policy.load("adapters", name)
        io.write(tostring(mod), "|", err, "|", code, "\n")
      end]])
    assert.are.same({
      "nil|" .. dir .. "/adapters/typo.lua:4: unknown field 'hook' (did you mean 'hooks'?)|EINVAL",
      "nil|" .. dir .. "/adapters/badtype.lua:3: field 'excludes' must be a list of strings, got number "
        .. "(and 1 more: ferry adapters --check lists them)|EINVAL",
      "nil|" .. dir .. "/adapters/syntax.lua:3: '}' expected (to close '{' at line 1) near 'detect'|EINVAL",
      "nil|" .. dir .. "/adapters/boom.lua:2: attempt to index a nil value (local 'x')|EINVAL",
    }, lines_of(out))
  end)

  it("a long file name, which Lua shortens in its messages, is given whole", function()
    local long = dir .. "/" .. string.rep("d", 70)
    mkdirs(long .. "/adapters")
    helpers.write_file(long .. "/adapters/rt.lua", "local x\nreturn x.y\n")
    local res = ferry_with(long, { "adapters", "--check" })
    assert.are.equal(long .. "/adapters/rt.lua:2: attempt to index a nil value (local 'x')\n",
      res.stdout:match("^[^\n]*\n"))
  end)

  it("a good override or a new adapter loads, with the defaults filled in", function()
    local out = lua_with(dir, [[
      local policy = require "ferry.policy"
      local a = assert(policy.load("adapters", "codex"))
      io.write(a.name, " ", a.detect, " ", #a.excludes, " ", #a.preserve, " ", a.hooks.after_restore(), " ",
        tostring(next(a.assets({}))), "\n")
      local b = assert(policy.load("adapters", "aider"))
      io.write(b.name, " ", b.install, " ", tostring(b.hooks.after_sync), "\n")]])
    assert.are.same({ "codex codex 0 0 mine nil", "aider pip install aider-chat nil" }, lines_of(out))
  end)

  it("a prepare with a broken adapter fails before touching the sandbox, naming the file and field", function()
    local ws, box = helpers.tmpdir(), helpers.tmpdir()
    helpers.write_file(ws .. "/a.txt", "a")
    helpers.write_file(box .. "/keep", "untouched")
    local res = ferry_with(dir, { "prepare", "-p", "local", "-a", "typo", "-w", ws, "-r", box,
      "--state", ws .. ".state.json" })
    assert.are.equal(1, res.code)
    assert.are.equal("ferry: prepare: " .. dir .. "/adapters/typo.lua:4: unknown field 'hook' (did you mean "
      .. "'hooks'?)\n", res.stderr)
    assert.are.same({ "keep" }, core.fs_readdir(box))
    helpers.rmtree(ws)
    helpers.rmtree(box)
  end)

  it("policy.load refuses a broken provider module; ferry.open names the provider", function()
    local out = open_each(dir, { "typo", "noopen", "boom" })
    assert.are.same({
      "nil|provider 'typo': " .. dir .. "/providers/typo.lua:3: unknown field 'hlep' (did you mean 'help'?)|EINVAL",
      "nil|provider 'noopen': " .. dir .. "/providers/noopen.lua:1: field 'open' must be a function, got nil|EINVAL",
      "nil|provider 'boom': " .. dir .. "/providers/boom.lua:1: no provider today|EINVAL",
    }, lines_of(out))
  end)

  it("the provider object open returns is checked at open, and closed when refused", function()
    local out = open_each(dir, { "nocmd", "badcaps", "notable" })
    assert.are.same({
      "nil|" .. dir .. "/providers/nocmd.lua:2: open returned a provider: field 'command' must be a function, "
        .. "got nil (a provider needs command or exec)|EINVAL",
      "closed",
      "nil|" .. dir .. "/providers/badcaps.lua:5: open returned a provider: unknown field 'caps.binray' (did you "
        .. "mean 'caps.binary'?)|EINVAL",
      "nil|" .. dir .. "/providers/notable.lua:1: open returned string, not a provider table|EINVAL",
    }, lines_of(out))
  end)

  it("podman does not load docker: a broken docker override leaves it working", function()
    local out = lua_with(dir, [[
      local policy = require "ferry.policy"
      local p = assert(assert(policy.load("providers", "podman")).open("box", { probe = false }))
      io.write(table.concat(p:command("x"), " "), "\n", select(2, policy.load("providers", "docker")), "\n")]])
    assert.are.same({ "podman exec -i box sh -c x", dir .. "/providers/docker.lua:1: my docker is broken" },
      lines_of(out))
  end)

  it("ferry adapters --check prints each problem and a count, and exits 1", function()
    local res = ferry_with(dir, { "adapters", "--check" })
    assert.are.equal(1, res.code, res.stderr)
    assert.are.equal("", res.stderr)
    assert.are.same({
      dir .. "/adapters/badtype.lua:3: field 'excludes' must be a list of strings, got number",
      dir .. "/adapters/badtype.lua:4: field 'preserve[2]' must be a string, got number",
      dir .. "/adapters/boom.lua:2: attempt to index a nil value (local 'x')",
      dir .. "/adapters/syntax.lua:3: '}' expected (to close '{' at line 1) near 'detect'",
      dir .. "/adapters/typo.lua:4: unknown field 'hook' (did you mean 'hooks'?)",
      (builtin_count("adapters") + 5) .. " adapters checked, 4 with problems",
    }, lines_of(res.stdout))
  end)

  it("ferry providers --check prints each problem and a count, and exits 1", function()
    local res = ferry_with(dir, { "providers", "--check" })
    assert.are.equal(1, res.code, res.stderr)
    assert.are.same({
      dir .. "/providers/boom.lua:1: no provider today",
      dir .. "/providers/docker.lua:1: my docker is broken",
      dir .. "/providers/noopen.lua:1: field 'open' must be a function, got nil",
      dir .. "/providers/typo.lua:3: unknown field 'hlep' (did you mean 'help'?)",
      (builtin_count("providers") + 6) .. " providers checked, 4 with problems",
    }, lines_of(res.stdout))
  end)

  it("without --check the verbs list as before; --check takes no value", function()
    local res = ferry_with(dir, { "adapters" })
    assert.are.equal(0, res.code, res.stderr)
    assert.matches("\ntypo +" .. dir:gsub("%p", "%%%0") .. "/adapters/typo%.lua\n", res.stdout)
    res = ferry_with(dir, { "providers", "--check=yes" })
    assert.are.same({ 2, "ferry: providers: option --check takes no value\n(see ferry providers --help)\n" },
      { res.code, res.stderr })
  end)
end)

describe("the built-in policy files", function()
  local empty

  lazy_setup(function() empty = helpers.tmpdir() end)
  lazy_teardown(function() helpers.rmtree(empty) end)

  it("pass --check, as compiled into the binary", function()
    for _, kind in ipairs { "adapters", "providers" } do
      local count = builtin_count(kind)
      local res = ferry_with(empty, { kind, "--check" })
      assert.are.equal(0, res.code, res.stdout .. res.stderr)
      assert.are.equal(count .. " " .. kind .. " checked, 0 with problems\n", res.stdout)
    end
  end)

  it("pass the schema as files of the source tree, with a good override beside them", function()
    local ok = helpers.tmpdir()
    mkdirs(ok .. "/adapters")
    helpers.write_file(ok .. "/adapters/shell.lua", "return { name = 'shell', preserve = { '.venv' } }\n")
    local res = ferry_with(ok, { "adapters", "--check" })
    assert.are.same({ 0, builtin_count("adapters") .. " adapters checked, 0 with problems\n" },
      { res.code, res.stdout })
    helpers.rmtree(ok)
    for _, kind in ipairs { "adapters", "providers" } do
      local dir = helpers.root .. (kind == "adapters" and "/scripts/adapters" or "/providers")
      for _, file in ipairs(core.fs_readdir(dir)) do
        local text = file:match("%.lua$") and helpers.read_file(dir .. "/" .. file) -- (providers/bridge/: the Worker)
        if text then
          local mod = assert(load(text, "@" .. file))(file:sub(1, -5))
          local check = kind == "adapters" and schema.check_adapter or schema.check_provider_module
          assert.are.same({}, check(mod, file, text))
        end
      end
    end
  end)
end)

describe("scripts/README.md", function()
  local text

  lazy_setup(function() text = assert(helpers.read_file(helpers.root .. "/scripts/README.md")) end)

  it("the prefix provider example is a working provider", function()
    local section = assert(text:match("\n## A prefix provider in a few lines\n(.-)\n## "))
    local code = assert(section:match("```lua\n(.-)```"))
    local mod = assert(load(code, "@lxc.lua", "t"))("lxc")
    assert.are.same({}, schema.check_provider_module(mod, "lxc.lua", code))
    local p = assert(mod.open("box", { probe = false }))
    assert.are.same({}, schema.check_provider_object(p, "lxc.lua", code))
    assert.are.same({ "lxc", "exec", "box", "--", "sh", "-c", "x" }, p:command("x"))
    assert.are.same({ "lxc:box", "box" }, { p.name, p.container })
    assert.are.same({ nil, "lxc:: expected a container name, e.g. lxc:box", "EINVAL" }, { mod.open(nil) })
    local empty = helpers.tmpdir()
    mkdirs(empty .. "/providers")
    helpers.write_file(empty .. "/providers/lxc.lua", code)
    local res = ferry_with(empty, { "exec", "-p", "lxc:box", "--", "true" }, { PATH = empty })
    assert.are.same({ 1, "ferry: exec: lxc:box: lxc is not installed or not on PATH\n" }, { res.code, res.stderr })
    res = ferry_with(empty, { "providers", "--check" })
    assert.are.same({ 0, (builtin_count("providers") + 1) .. " providers checked, 0 with problems\n" },
      { res.code, res.stdout })
    helpers.rmtree(empty)
  end)

  it("the adapter table documents every field of the schema", function()
    local section = assert(text:match("\n## The adapter table\n(.-)\n### "))
    local documented = {}
    for name in section:gmatch("\n| `([%w_]+)` |") do documented[#documented + 1] = name end
    local fields = {}
    for i, f in ipairs(schema.ADAPTER.fields) do fields[i] = f[1] end
    assert.are.same(fields, documented)
  end)
end)
