-- The shape rules of the code base (issue 7): no Lua file of the engine over 500 lines, no C file over 700,
-- and no require cycle among scripts/ and providers/.
local helpers = require "support.helpers"

local MAX_LUA_LINES, MAX_C_LINES = 500, 700

-- Files under the repository's `dirs` whose name ends with `suffix`, relative to the root, sorted.
local function files(dirs, suffix)
  local p = io.popen("cd '" .. helpers.root .. "' && find " .. table.concat(dirs, " ") .. " -type f -name '*"
    .. suffix .. "' | sort")
  local list = {}
  for line in p:lines() do list[#list + 1] = line end
  p:close()
  return list
end

local function line_count(path)
  local n = 0
  for _ in io.lines(helpers.root .. "/" .. path) do n = n + 1 end
  return n
end

local function oversized(list, max)
  local over = {}
  for _, path in ipairs(list) do
    local n = line_count(path)
    if n > max then over[#over + 1] = path .. ": " .. n .. " lines" end
  end
  return over
end

-- The tokens of Lua source that matter here: names, punctuation, and string literals (as {str = value});
-- comments and long strings are skipped, so a `require "x"` in a help text or a comment is not a require.
local function tokens(src)
  local list, i, n = {}, 1, #src
  while i <= n do
    local c = src:sub(i, i)
    local long = src:match("^%[(=*)%[", i)
    local comment_long = src:match("^%-%-%[(=*)%[", i)
    if comment_long or long then
      local level = comment_long or long
      local close = "]" .. level .. "]"
      local stop = src:find(close, i, true)
      i = (stop or n) + #close
    elseif src:sub(i, i + 1) == "--" then
      i = (src:find("\n", i, true) or n) + 1
    elseif c == '"' or c == "'" then
      local j, buf = i + 1, {}
      while j <= n and src:sub(j, j) ~= c do
        if src:sub(j, j) == "\\" then j = j + 1 end
        buf[#buf + 1] = src:sub(j, j)
        j = j + 1
      end
      list[#list + 1] = { str = table.concat(buf) }
      i = j + 1
    elseif c:match("[%a_]") then
      local name = src:match("^[%w_]+", i)
      list[#list + 1] = name
      i = i + #name
    elseif c:match("%s") then
      i = i + 1
    else
      list[#list + 1] = c
      i = i + 1
    end
  end
  return list
end

-- Module names a Lua source requires: `require "m"`, `require("m")`, `pcall(require, "m")`.
local function required_modules(src)
  local t = tokens(src)
  local names = {}
  for k, tok in ipairs(t) do
    if tok == "require" then
      local nxt = t[k + 1] == "(" and t[k + 2] or t[k + 1] == "," and t[k + 2] or t[k + 1]
      if type(nxt) == "table" then names[#names + 1] = nxt.str end
    end
  end
  return names
end

-- The file of a module when it is one of ours: ferry -> scripts/ferry/init.lua, ferry.a.b -> scripts/ferry/a/b.lua.
local function module_file(name, exists)
  local rel = "scripts/" .. name:gsub("%.", "/")
  if exists[rel .. ".lua"] then return rel .. ".lua" end
  if exists[rel .. "/init.lua"] then return rel .. "/init.lua" end
  return nil
end

-- The require graph among `list`: file -> list of files it requires.
local function require_graph(list)
  local exists = {}
  for _, path in ipairs(list) do exists[path] = true end
  local graph = {}
  for _, path in ipairs(list) do
    graph[path] = {}
    for _, name in ipairs(required_modules(helpers.read_file(helpers.root .. "/" .. path))) do
      local file = module_file(name, exists)
      if file then table.insert(graph[path], file) end
    end
  end
  return graph
end

-- Each cycle found by a depth-first walk, as "a -> b -> a".
local function cycles(graph)
  local state, stack, found = {}, {}, {}
  local function visit(node)
    state[node] = "open"
    stack[#stack + 1] = node
    for _, next_node in ipairs(graph[node]) do
      if state[next_node] == "open" then
        local from
        for k = #stack, 1, -1 do
          if stack[k] == next_node then from = k end
        end
        found[#found + 1] = table.concat(stack, " -> ", from) .. " -> " .. next_node
      elseif not state[next_node] then
        visit(next_node)
      end
    end
    stack[#stack] = nil
    state[node] = "done"
  end
  for _, node in ipairs((function()
    local keys = {}
    for k in pairs(graph) do keys[#keys + 1] = k end
    table.sort(keys)
    return keys
  end)()) do
    if not state[node] then visit(node) end
  end
  return found
end

describe("the layout", function()
  it("has no Lua file in scripts/, providers/ or engine/tools over " .. MAX_LUA_LINES .. " lines", function()
    local list = files({ "scripts", "providers", "engine/tools" }, ".lua")
    assert.is_true(#list > 20)
    assert.same({}, oversized(list, MAX_LUA_LINES))
  end)

  it("has no C file over " .. MAX_C_LINES .. " lines", function()
    local list = files({ "engine" }, ".c")
    assert.is_true(#list > 5)
    assert.same({}, oversized(list, MAX_C_LINES))
  end)

  it("reads requires from code only, not from comments or strings", function()
    local names = required_modules(table.concat({
      'local a = require "ferry.a"',
      'local b = require("ferry.b")',
      'local ok = pcall(require, "ferry.c")',
      '-- require "ferry.comment"',
      'local text = [[ require "ferry.long" ]]',
      '--[==[ require "ferry.long_comment" ]==]',
      'local s = "require \\"ferry.escaped\\""',
    }, "\n"))
    assert.same({ "ferry.a", "ferry.b", "ferry.c" }, names)
  end)

  it("finds a cycle in a graph that has one", function()
    assert.same({ "y -> z -> y" }, cycles { x = { "y" }, y = { "z" }, z = { "y" } })
    assert.same({}, cycles { x = { "y", "z" }, y = { "z" }, z = {} })
  end)

  it("has no require cycle among scripts/ and providers/", function()
    local graph = require_graph(files({ "scripts", "providers" }, ".lua"))
    -- the walk sees real edges, the lazy ones inside functions too
    local edges = {}
    for _, file in ipairs(graph["scripts/ferry/cli/sandbox.lua"]) do edges[file] = true end
    assert.is_true(edges["scripts/ferry/cli/registry.lua"])
    assert.is_true(edges["scripts/ferry/init.lua"])
    assert.same({}, cycles(graph))
  end)
end)
