--- ferry.printable: text that came from a sandbox (names, its commands' output, messages quoting them) made
-- safe to print on a terminal. A sandbox is not trusted: raw bytes could move the cursor, clear the screen,
-- retitle the window or write the clipboard (OSC 52). Printable ASCII and valid UTF-8 pass unchanged;
-- everything a terminal could act on is written as an escape: ESC as `\e`, CR as `\r`, any other control
-- byte (C0, DEL), a byte that is not part of valid UTF-8 (a raw 0x80-0x9f is a C1 control to some
-- terminals), and the UTF-8 forms of the C1 controls (U+0080-U+009F) and of the bidirectional overrides
-- (U+202A-U+202E, U+2066-U+2069: text that displays in another order than it reads) as `\xNN` per byte.
local M = {}

local function hex(bytes)
  return (bytes:gsub(".", function(c) return string.format("\\x%02x", c:byte()) end))
end

-- The length of the valid UTF-8 sequence starting at s[i] (a byte >= 0x80), and its code point; nil when
-- the bytes there are not valid UTF-8 (a stray continuation byte, an overlong form, a surrogate, > U+10FFFF).
local function utf8_at(s, i)
  local b = s:byte(i)
  local n, cp, min
  if b >= 0xC2 and b <= 0xDF then
    n, cp, min = 2, b & 0x1F, 0x80
  elseif b >= 0xE0 and b <= 0xEF then
    n, cp, min = 3, b & 0x0F, 0x800
  elseif b >= 0xF0 and b <= 0xF4 then
    n, cp, min = 4, b & 0x07, 0x10000
  else
    return nil
  end
  for k = 1, n - 1 do
    local c = s:byte(i + k)
    if not c or c < 0x80 or c > 0xBF then return nil end
    cp = (cp << 6) | (c & 0x3F)
  end
  if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return nil end
  return n, cp
end

-- Code points printed escaped although they are valid UTF-8.
local function unsafe_code_point(cp)
  return cp <= 0x9F or (cp >= 0x202A and cp <= 0x202E) or (cp >= 0x2066 and cp <= 0x2069)
end

-- Walk `s`: `ascii(c)` maps each ASCII byte (nil keeps it), `other(bytes, cp)` each byte >= 0x80 that must be
-- escaped (cp: the code point of a valid but unsafe sequence, nil for a byte that is not valid UTF-8).
local function walk(s, ascii, other)
  local out, i, n = {}, 1, #s
  local start = 1
  local function flush(upto)
    if upto >= start then out[#out + 1] = s:sub(start, upto) end
  end
  while i <= n do
    local b = s:byte(i)
    if b < 0x80 then
      local rep = ascii(b)
      if rep then
        flush(i - 1)
        out[#out + 1] = rep
        start = i + 1
      end
      i = i + 1
    else
      local len, cp = utf8_at(s, i)
      if len and not unsafe_code_point(cp) then
        i = i + len
      else
        len = len or 1
        flush(i - 1)
        out[#out + 1] = other(s:sub(i, i + len - 1), cp)
        i = i + len
        start = i
      end
    end
  end
  flush(n)
  return table.concat(out)
end

local function control(b, keep_lines)
  if b == 0x1B then return "\\e" end
  if b == 0x0D then return "\\r" end
  if keep_lines and (b == 0x0A or b == 0x09) then return nil end
  if b < 0x20 or b == 0x7F then return string.format("\\x%02x", b) end
  return nil
end

--- Free text (a message, a warning, a command's stderr quoted in an error) safe for a terminal: newlines
--- and tabs are kept, every other control byte and unsafe sequence escaped (see the module's comment).
---@param s string
---@return string
function M.text(s)
  s = tostring(s)
  if not s:find("[%c\128-\255]") then return s end
  return walk(s, function(b) return control(b, true) end, hex)
end

--- A name (a path, a file name from a listing) as one printable line: as M.text, and newline as `\n`, tab as
--- `\t` and backslash as `\\`, so that two different names never print alike.
---@param s string
---@return string
function M.name(s)
  s = tostring(s)
  if not s:find("[%c\128-\255\\]") then return s end
  return walk(s, function(b)
    if b == 0x5C then return "\\\\" end
    if b == 0x0A then return "\\n" end
    if b == 0x09 then return "\\t" end
    return control(b, false)
  end, hex)
end

local LUA_NAMED = { [0x22] = '\\"', [0x5C] = "\\\\", [0x07] = "\\a", [0x08] = "\\b", [0x0C] = "\\f", [0x0A] = "\\n",
  [0x0D] = "\\r", [0x09] = "\\t", [0x0B] = "\\v" }

--- The body of a Lua string literal for `s` (no quotes), safe for a terminal: `"` and `\` escaped, control
--- bytes as \n, \t, ... or \xNN, and every byte of an unsafe or invalid UTF-8 sequence as \xNN (as M.text
--- judges them); reading it back as Lua gives `s`.
---@param s string
---@return string
function M.lua(s)
  if not s:find('[%c"\\\128-\255]') then return s end
  return walk(s, function(b)
    if LUA_NAMED[b] then return LUA_NAMED[b] end
    if b < 0x20 or b == 0x7F then return string.format("\\x%02x", b) end
    return nil
  end, hex)
end

local JSON_NAMED = { [0x22] = '\\"', [0x5C] = "\\\\", [0x08] = "\\b", [0x0C] = "\\f", [0x0A] = "\\n", [0x0D] = "\\r",
  [0x09] = "\\t" }

--- The body of a JSON string for `s` (no quotes): `"` and `\` escaped, control characters as \b \f \n \r \t
--- or \u00XX, the C1 controls and bidirectional overrides as \uXXXX, and each byte that is not valid UTF-8
--- as \u00XX (JSON cannot carry it raw; a reader gets the code point of the same value). `/` is not escaped.
---@param s string
---@return string
function M.json(s)
  if not s:find('[%c"\\\128-\255]') then return s end
  return walk(s, function(b)
    if JSON_NAMED[b] then return JSON_NAMED[b] end
    if b < 0x20 or b == 0x7F then return string.format("\\u%04x", b) end
    return nil
  end, function(bytes, cp)
    if cp then return string.format("\\u%04x", cp) end
    return string.format("\\u%04x", bytes:byte())
  end)
end

return M
