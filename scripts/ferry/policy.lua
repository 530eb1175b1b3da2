--- ferry.policy: find and load policy files (providers, adapters) by name.
-- Search order, first match wins: <dir>/<kind>/<name>.lua in each of the user's dirs (core.search_dirs: each
-- FERRY_PATH dir, then $XDG_CONFIG_HOME/ferry or ~/.config/ferry), then the built-in copy: compiled into the
-- binary (core.embedded), else the source tree or the installed tree next to this file.
local core = require "ferry.core"

local M = {}

local KINDS = { providers = true, adapters = true }

local function check(kind, name)
  if not KINDS[kind] then error("policy: kind must be 'providers' or 'adapters', got " .. tostring(kind), 3) end
  if name ~= nil and (type(name) ~= "string" or not name:match("^[%w_][%w_%-]*$")) then
    error("policy: bad " .. kind .. " name " .. string.format("%q", tostring(name)), 3)
  end
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

-- The directory holding this file (scripts/ferry in the source tree, .../share/lua/5.4/ferry installed),
-- or nil when it was loaded from the binary.
local function here()
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) ~= "@" or src:sub(1, 8) == "@[ferry]" then return nil end
  return src:sub(2):match("^(.*)/[^/]*$") or "."
end

-- The user's dirs, first match wins: the one order the C module searcher uses too (engine/src/search.c).
local user_dirs = core.search_dirs

-- Directories of the built-in files on disk: the installed tree, then the source tree.
local function builtin_dirs(kind)
  local dir = here()
  if not dir then return {} end
  local source = kind == "providers" and dir .. "/../../providers" or dir .. "/../adapters"
  return { dir .. "/" .. kind, source }
end

--- Find a policy file. Returns where it is (a file path, or "[ferry]/<kind>/<name>.lua" for the copy built
--- into the binary) and its Lua source text, or nil, "no <kind> named '<name>'", "ENOENT".
---@param kind string "providers"|"adapters"
---@param name string
---@return string|nil where, string|nil text_or_err, string|nil code
function M.find(kind, name)
  check(kind, name)
  local rel = kind .. "/" .. name .. ".lua"
  for _, d in ipairs(user_dirs()) do
    local path = d.dir .. "/" .. rel
    local text = read_file(path)
    if text then return path, text end
  end
  local embedded = core.embedded and core.embedded(rel)
  if embedded then return "[ferry]/" .. rel, embedded end
  for _, dir in ipairs(builtin_dirs(kind)) do
    local path = dir .. "/" .. name .. ".lua"
    local text = read_file(path)
    if text then return path, text end
  end
  return nil, "no " .. kind:sub(1, -2) .. " named '" .. name .. "'", "ENOENT"
end

local loaded = {} -- where -> module, so module-level state (caches) lives as long as the process

--- Load a policy file and return the table it returns, or nil, message, code.
---@param kind string
---@param name string
---@return table|nil module, string|nil err, string|nil code
function M.load(kind, name)
  local where, text, code = M.find(kind, name)
  if not where then return nil, text, code end
  if loaded[where] then return loaded[where] end
  local chunk, err = load(text, "@" .. where, "t")
  if not chunk then return nil, err, "EINVAL" end
  local ok, mod = pcall(chunk, name)
  if not ok then
    local msg = tostring(mod)
    if msg:sub(1, #where) ~= where then msg = where .. ": " .. msg end
    return nil, msg, "EINVAL"
  end
  if type(mod) ~= "table" then return nil, where .. ": expected the file to return a table", "EINVAL" end
  loaded[where] = mod
  return mod
end

local function names_in(dir, out)
  for _, entry in ipairs(core.fs_readdir(dir) or {}) do
    local name = entry:match("^([%w_][%w_%-]*)%.lua$")
    if name then out[name] = true end
  end
end

--- Every policy file of a kind that the search finds: list of {name, from} sorted by name, where `from` is
--- the file that wins for that name.
---@param kind string
---@return table[]
function M.list(kind)
  check(kind)
  local names = {}
  for _, d in ipairs(user_dirs()) do names_in(d.dir .. "/" .. kind, names) end
  if core.embedded then
    for _, rel in ipairs(core.embedded()) do
      local name = rel:match("^" .. kind .. "/([%w_][%w_%-]*)%.lua$")
      if name then names[name] = true end
    end
  end
  for _, dir in ipairs(builtin_dirs(kind)) do names_in(dir, names) end
  local out = {}
  for name in pairs(names) do
    local where = M.find(kind, name)
    if where then out[#out + 1] = { name = name, from = where } end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

return M
