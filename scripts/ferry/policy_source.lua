--- ferry.policy_source: where in a policy file's source text a field is set. Lua keeps no line numbers for
-- table fields, so the text is scanned: comments and the insides of strings are blanked first (an
-- identifier-like short string is kept, for `["name"] = ...`), then each line is searched for the field's
-- assignment (`name = ...`, `M.name = ...`, `["name"] = ...`, `function M.name(`).
local M = {}

local Source = {}
Source.__index = Source

local function blank(s)
  return (s:gsub("[^\n]", " "))
end

-- The index of the quote closing the short string opened at `open_at`, or the end of its line.
local function short_string_end(text, open_at)
  local quote = text:sub(open_at, open_at)
  local i = open_at + 1
  while i <= #text do
    local c = text:sub(i, i)
    if c == "\\" then
      i = i + 2
    elseif c == quote or c == "\n" then
      return i
    else
      i = i + 1
    end
  end
  return #text
end

-- The index of the last character of the long bracket opened at `open_at` with `eq` '=' signs.
local function long_bracket_end(text, open_at, eq)
  local close = text:find("]" .. eq .. "]", open_at, true)
  return close and close + #eq + 1 or #text
end

--- `text` with comments and string contents blanked, newlines kept (so line numbers stay).
---@param text string
---@return string
function M.code_only(text)
  local out, i = {}, 1
  while true do
    local s = text:find("[%-\"'%[]", i)
    if not s then
      out[#out + 1] = text:sub(i)
      break
    end
    out[#out + 1] = text:sub(i, s - 1)
    local c = text:sub(s, s)
    local stop
    if c == "-" and text:sub(s + 1, s + 1) == "-" then
      local eq = text:match("^%[(=*)%[", s + 2)
      stop = eq and long_bracket_end(text, s, eq) or (text:find("\n", s, true) or #text + 1) - 1
      out[#out + 1] = blank(text:sub(s, stop))
    elseif c == "[" and text:match("^%[=*%[", s) then
      stop = long_bracket_end(text, s, text:match("^%[(=*)%[", s))
      out[#out + 1] = blank(text:sub(s, stop))
    elseif c == '"' or c == "'" then
      stop = short_string_end(text, s)
      local body = text:sub(s + 1, stop - 1)
      out[#out + 1] = body:match("^[%a_][%w_]*$") and text:sub(s, stop) or c .. blank(body) .. text:sub(stop, stop)
    else
      stop = s
      out[#out + 1] = c
    end
    i = stop + 1
  end
  return table.concat(out)
end

--- A policy file's text, ready for line lookups.
---@param text string
---@return table
function M.new(text)
  local lines = {}
  for line in (M.code_only(text or "") .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = " " .. line .. " " end
  return setmetatable({ lines = lines }, Source)
end

local function escape(s)
  return (s:gsub("%p", "%%%0"))
end

-- Whether `line` assigns the field `key` (not a `local key = ...` nor a `key == ...`).
local function assigns(line, key)
  local k = escape(key)
  if line:find("function%s+[%w_.]+[.:]" .. k .. "%s*%(") then return true end
  if line:find("%[%s*[\"']" .. k .. "[\"']%s*%]%s*=[^=]") then return true end
  local init = 1
  while true do
    local s, e = line:find("[^%w_]" .. k .. "%s*=[^=]", init)
    if not s then return false end
    if not line:sub(1, s):match("local%s+$") then return true end
    init = e
  end
end

--- The line setting the field at `keys` ({"hooks", "after_sync"}): each key is searched from the line of
--- the one before. nil when the first key is not found; the deepest line found otherwise.
---@param keys (string|integer)[]
---@return integer|nil
function Source:line_of(keys)
  local found, from = nil, 1
  for _, key in ipairs(keys) do
    if type(key) ~= "string" then break end
    local at
    for n = from, #self.lines do
      if assigns(self.lines[n], key) then
        at = n
        break
      end
    end
    if not at then break end
    found, from = at, at
  end
  return found
end

--- The line of the file's last `return` statement (its last non-blank line when it has none).
---@return integer
function Source:last_return()
  for n = #self.lines, 1, -1 do
    if self.lines[n]:match("^%s*return[^%w_]") then return n end
  end
  for n = #self.lines, 1, -1 do
    if self.lines[n]:match("%S") then return n end
  end
  return 1
end

return M
