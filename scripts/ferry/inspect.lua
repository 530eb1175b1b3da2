--- ferry.inspect: a Lua value as readable text (what the REPL prints), in the manner of vim.inspect: tables
-- nested with their keys sorted, bounded in depth, in entries per table and in string length; a table met
-- twice (a cycle, or one shared) is numbered where it first appears, `<1>{ ... }`, and shown as `<table 1>`
-- after that. Strings are quoted as Lua would read them, with every byte a terminal could act on escaped
-- (ferry.printable's rule: control bytes, bytes that are not UTF-8, C1 controls and bidi overrides).
local printable = require "ferry.printable"

local M = {}

--- The bounds used when opts leaves them out.
M.DEFAULTS = {
  depth = 4,          -- tables nested deeper show as {...}
  items = 50,         -- entries shown per table, then "... (N more)"
  width = 100,        -- a table fitting in this many columns stays on one line
  string_bytes = 2000, -- a longer string is cut, "...(N bytes)"
}

local KEYWORDS = {}
for word in ([[and break do else elseif end false for function goto if in local nil not or repeat return then
  true until while]]):gmatch("%a+") do KEYWORDS[word] = true end

--- Whether `s` can be written bare as a table key or a field name: an identifier that is not a keyword.
---@param s any
---@return boolean
function M.is_identifier(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil and not KEYWORDS[s]
end

--- The Lua keywords, sorted.
---@return string[]
function M.keywords()
  local out = {}
  for word in pairs(KEYWORDS) do out[#out + 1] = word end
  table.sort(out)
  return out
end

local function quote(s, limit)
  local cut = ""
  if #s > limit then
    cut = string.format("...(%d bytes)", #s)
    s = s:sub(1, limit)
  end
  return '"' .. printable.lua(s) .. '"' .. cut
end

local function function_text(f)
  local info = debug.getinfo(f, "S")
  if info.what == "C" then return "<function [C]>" end
  return string.format("<function %s:%d>", info.short_src, info.linedefined)
end

local function scalar(v, opts)
  local kind = type(v)
  if kind == "string" then return quote(v, opts.string_bytes) end
  if kind == "number" or kind == "boolean" or kind == "nil" then return tostring(v) end
  if kind == "function" then return function_text(v) end
  return "<" .. printable.text(tostring(v)) .. ">" -- userdata, thread
end

-- Keys in the order they print: numbers, then strings, then the rest (booleans, tables, ...) by text.
local KIND_RANK = { number = 1, string = 2 }
local function key_before(a, b)
  local ra, rb = KIND_RANK[type(a)] or 3, KIND_RANK[type(b)] or 3
  if ra ~= rb then return ra < rb end
  if ra == 3 then return tostring(a) < tostring(b) end
  return a < b
end

-- The entries of t: first the list part 1..n (keys nil: shown without), then every other key, sorted.
local function entries(t)
  local list = {}
  local n = 0
  while rawget(t, n + 1) ~= nil do
    n = n + 1
    list[n] = { value = rawget(t, n) }
  end
  local keys = {}
  for k in next, t do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_before)
  for _, k in ipairs(keys) do list[#list + 1] = { key = k, value = rawget(t, k) } end
  return list
end

-- How many times each table is reached within the depth bound: those reached more than once get a number.
local function count_refs(v, depth, counts)
  if type(v) ~= "table" then return end
  counts[v] = (counts[v] or 0) + 1
  if counts[v] > 1 or depth <= 0 then return end
  for k, x in next, v do
    count_refs(k, depth - 1, counts)
    count_refs(x, depth - 1, counts)
  end
end

local render

local function key_text(k, st, indent)
  if M.is_identifier(k) then return k end
  return "[" .. render(k, st, indent, 1) .. "]"
end

local function table_text(t, st, indent, depth)
  local id = st.ids[t]
  if id then return "<table " .. id .. ">" end
  local mark = ""
  if (st.counts[t] or 0) > 1 then
    st.next_id = st.next_id + 1
    st.ids[t] = st.next_id
    mark = "<" .. st.next_id .. ">"
  end
  local list = entries(t)
  if #list == 0 then return mark .. "{}" end
  if depth > st.opts.depth then return mark .. "{...}" end
  local inner = indent .. "  "
  local parts, oneline = {}, true
  for i, e in ipairs(list) do
    if i > st.opts.items then
      parts[#parts + 1] = string.format("... (%d more)", #list - st.opts.items)
      break
    end
    local text = render(e.value, st, inner, depth + 1)
    if e.key ~= nil then text = key_text(e.key, st, inner) .. " = " .. text end
    if text:find("\n", 1, true) then oneline = false end
    parts[#parts + 1] = text
  end
  local flat = mark .. "{ " .. table.concat(parts, ", ") .. " }"
  if oneline and #indent + #flat <= st.opts.width then return flat end
  return mark .. "{\n" .. inner .. table.concat(parts, ",\n" .. inner) .. "\n" .. indent .. "}"
end

render = function(v, st, indent, depth)
  if type(v) == "table" then return table_text(v, st, indent, depth) end
  return scalar(v, st.opts)
end

--- `value` as text: scalars as Lua would write them (strings quoted and escaped), tables nested as
--- described above. opts: depth, items, width, string_bytes (see M.DEFAULTS).
---@param value any
---@param opts table|nil
---@return string
function M.inspect(value, opts)
  local o = {}
  for k, v in pairs(M.DEFAULTS) do o[k] = (opts and opts[k]) or v end
  local st = { opts = o, counts = {}, ids = {}, next_id = 0 }
  count_refs(value, o.depth + 1, st.counts)
  return render(value, st, "", 1)
end

return M
