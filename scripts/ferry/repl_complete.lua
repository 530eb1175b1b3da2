--- ferry.repl_complete: tab completion for the REPL. The name being typed is the identifier chain just before
-- the cursor (`ferry.pr`, `sb:ex`, `string.fo`, `pri`): its last part is completed from the fields of what
-- the chain before it names — a table's keys and those of the tables its metatable's __index leads to
-- (never calling a function: nothing runs while completing), the string methods after a string (`s:up`,
-- `("x"):up`), only functions after `:` — and a first part from the globals and the Lua keywords.
local inspect = require "ferry.inspect"

local M = {}

-- The fields reachable by indexing `v` without running code: its own keys when it is a table, then those of
-- each table on its metatable's __index chain (a string's lead to the string library).
local function field_sources(v)
  local out, seen = {}, {}
  local function add(t)
    while type(t) == "table" and not seen[t] do
      seen[t] = true
      out[#out + 1] = t
      local mt = getmetatable(t)
      t = type(mt) == "table" and rawget(mt, "__index") or nil
    end
  end
  if type(v) == "table" then
    add(v)
  else
    local mt = getmetatable(v) -- a string's, a userdata's (a protected one is a string: skipped)
    if type(mt) == "table" then add(rawget(mt, "__index")) end
  end
  return out
end

-- The value of field `name` of `v` as indexing would find it, without running an __index function.
local function field(v, name)
  for _, t in ipairs(field_sources(v)) do
    local x = rawget(t, name)
    if x ~= nil then return x end
  end
  return nil
end

-- The identifier chain ending at the end of `before`: its parts and the separator before each ("" for the
-- first, "." or ":"), and what precedes the chain. nil when the text there is no chain to complete.
local function chain_at(before)
  local head, chain = before:match("^(.-)([%w_%.:]*)$")
  local parts, seps = {}, {}
  local pos = 1
  local sep = ""
  if chain:sub(1, 1) == ":" or chain:sub(1, 1) == "." then
    sep, pos = chain:sub(1, 1), 2
  end
  while true do
    local name, nextsep, after = chain:match("^([%w_]*)([%.:]?)()", pos)
    if name ~= "" and not name:match("^[%a_]") then return nil end -- a number, not a name
    parts[#parts + 1], seps[#seps + 1] = name, sep
    if nextsep == "" then
      if after <= #chain then return nil end
      break
    end
    if name == "" then return nil end -- "a..b", "a:.b"
    sep, pos = nextsep, after
  end
  for i = 2, #seps - 1 do
    if seps[i] == ":" then return nil end -- a method call in the middle: its result is not known
  end
  return head, parts, seps
end

local function sorted_matches(sources, partial, only_functions)
  local found, out = {}, {}
  for _, t in ipairs(sources) do
    for k, v in next, t do
      if type(k) == "string" and not found[k] and k:sub(1, #partial) == partial and inspect.is_identifier(k)
        and (not only_functions or type(v) == "function") then
        found[k] = true
        out[#out + 1] = k
      end
    end
  end
  table.sort(out)
  return out
end

--- The completions of the word before the cursor: `before` is the line up to the cursor; the result lists
--- what the last part of its identifier chain can become (whole names, sorted), looked up in `env` (default
--- _G).
---@param before string
---@param env table|nil
---@return string[]
function M.candidates(before, env)
  env = env or _G
  local head, parts, seps = chain_at(before)
  if not head then return {} end
  local partial = parts[#parts]
  if #parts == 1 and seps[1] == "" then
    local out = sorted_matches({ env }, partial)
    for _, word in ipairs(inspect.keywords()) do
      if word:sub(1, #partial) == partial then out[#out + 1] = word end
    end
    table.sort(out)
    return out
  end
  local base
  if seps[1] == "" then
    base = field(env, parts[1])
    for i = 2, #parts - 1 do
      if base == nil then return {} end
      base = field(base, parts[i])
    end
  elseif #parts == 1 and seps[1] == ":" and head:match("[\"'%]]%)?$") then
    base = "" -- a string literal, ("x"):up
  else
    return {}
  end
  if base == nil then return {} end
  return sorted_matches(field_sources(base), partial, seps[#seps] == ":")
end

return M
