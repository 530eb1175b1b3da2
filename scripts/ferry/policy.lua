--- ferry.policy: find and load policy files (providers, adapters) by name.
-- Search order, first match wins: <dir>/<kind>/<name>.lua in each of the user's dirs (core.search_dirs: each
-- FERRY_PATH dir, then $XDG_CONFIG_HOME/ferry or ~/.config/ferry), then the built-in copy: compiled into the
-- binary (core.embedded), else the source tree or the installed tree next to this file.
local core = require "ferry.core"
local schema = require "ferry.schema"
local util = require "ferry.util"

local M = {}

local KINDS = { providers = true, adapters = true }
local SHAPES = { providers = schema.PROVIDER_MODULE, adapters = schema.ADAPTER }

local NAME = "^[%w_][%w_%-]*$" -- a policy file's name: what may follow <kind>/ and precede .lua

local function check(kind, name)
  if not KINDS[kind] then error("policy: kind must be 'providers' or 'adapters', got " .. tostring(kind), 3) end
  if name ~= nil and (type(name) ~= "string" or not name:match(NAME)) then
    error("policy: bad " .. kind .. " name " .. string.format("%q", tostring(name)), 3)
  end
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
    local text = util.read_file(path)
    if text then return path, text end
  end
  local embedded = core.embedded and core.embedded(rel)
  if embedded then return "[ferry]/" .. rel, embedded end
  for _, dir in ipairs(builtin_dirs(kind)) do
    local path = dir .. "/" .. name .. ".lua"
    local text = util.read_file(path)
    if text then return path, text end
  end
  return nil, "no " .. kind:sub(1, -2) .. " named '" .. name .. "'", "ENOENT"
end

local loaded = {} -- where -> module, so module-level state (caches) lives as long as the process

-- The provider module's open, wrapped so that what it returns is checked against the provider schema (a
-- provider object missing `command`, or with `caps.binray`, is refused where it is made, naming the file).
local function checked_open(mod, where, text)
  local open = mod.open
  local info = debug.getinfo(open, "S")
  local open_line = info.source == "@" .. where and info.linedefined > 0 and info.linedefined or nil
  mod.open = function(...)
    local p, err, code = open(...)
    if not p then return p, err, code end
    local problems = schema.check_provider_object(p, where, text, open_line)
    if #problems == 0 then return p, err, code end
    if type(p) == "table" and type(p.close) == "function" then pcall(p.close, p) end
    return nil, problems[1], "EINVAL"
  end
end

-- A load or run error of the file at `where` as "WHERE:LINE: message". Lua shortens a long file name in its
-- messages to "...<its end>"; the whole name is put back.
local function located(msg, where)
  local shown, line, rest = msg:match("^(.-):(%d+): (.*)$")
  if shown == where then return msg end
  if shown and shown:sub(1, 3) == "..." and where:sub(-(#shown - 3)) == shown:sub(4) then
    return where .. ":" .. line .. ": " .. rest
  end
  return where .. ": " .. msg
end

-- Run the text of a policy file and check what it returns. Returns the module, or nil and the problems
-- ("FILE:LINE: message", the first one a load error when the file does not load).
local function run(kind, name, where, text)
  local chunk, err = load(text, "@" .. where, "t")
  if not chunk then return nil, { located(err, where) } end
  local ok, mod = pcall(chunk, name)
  if not ok then return nil, { located(tostring(mod), where) } end
  local problems = schema.check(SHAPES[kind], mod, where, text)
  if #problems > 0 then return nil, problems end
  if kind == "adapters" then schema.apply_defaults(schema.ADAPTER, mod, name) else checked_open(mod, where, text) end
  return mod
end

-- The module at `where` (loaded once), or nil and its problems.
local function load_at(kind, name, where, text)
  if loaded[where] then return loaded[where] end
  local mod, problems = run(kind, name, where, text)
  if mod then loaded[where] = mod end
  return mod, problems
end

--- Load a policy file and return the table it returns, checked against its schema (ferry.schema) with the
--- defaults filled in, or nil, message, code. A name no file has is "ENOENT" with the known names ("no
--- adapter named 'x': known adapters are claude, codex, ... (see ferry adapters)"). A file that does not
--- load or breaks the schema is "EINVAL" with "FILE:LINE: message" ("adapters/x.lua:4: unknown field 'hook'
--- (did you mean 'hooks'?)"); when it has more than one problem the message ends with how many more
--- `ferry <kind> --check` lists.
---@param kind string
---@param name string
---@return table|nil module, string|nil err, string|nil code
function M.load(kind, name)
  local where, text, code
  if type(name) == "string" and not name:match(NAME) then -- a name typed by a user (-a ../x): not a misuse
    check(kind)
    text, code = "no " .. kind:sub(1, -2) .. " named '" .. name .. "'", "ENOENT"
  else
    where, text, code = M.find(kind, name)
  end
  if not where then
    if code == "ENOENT" then
      text = string.format("%s: known %s are %s (see ferry %s)", text, kind, M.known(kind), kind)
    end
    return nil, text, code
  end
  local mod, problems = load_at(kind, name, where, text)
  if mod then return mod end
  local msg = problems[1]
  if #problems > 1 then
    msg = string.format("%s (and %d more: ferry %s --check lists them)", msg, #problems - 1, kind)
  end
  return nil, msg, "EINVAL"
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

--- Load every policy file of a kind that the search finds and report what is wrong with each: a list of
--- {name, from, problems = {"FILE:LINE: message", ...}} sorted by name; `problems` is empty for a good file.
---@param kind string
---@return table[]
function M.check(kind)
  check(kind)
  local out = {}
  for _, e in ipairs(M.list(kind)) do
    local where, text, err = M.find(kind, e.name)
    local mod, problems
    if where then
      mod, problems = load_at(kind, e.name, where, text)
    else
      problems = { e.from .. ": " .. err } -- removed since it was listed
    end
    out[#out + 1] = { name = e.name, from = e.from, problems = mod and {} or problems }
  end
  return out
end

--- The names of every policy file of a kind, `first` in that order then the rest sorted, as one line for an
--- error message: each provider's name replaced by its file's `usage` when it has one ("bwrap:DIR").
---@param kind string
---@param first string[]|nil
---@return string
function M.known(kind, first)
  local listed, names, rest = {}, {}, {}
  for _, p in ipairs(M.list(kind)) do listed[p.name] = true end
  for _, n in ipairs(first or {}) do
    if listed[n] then names[#names + 1], listed[n] = n, nil end
  end
  for n in pairs(listed) do rest[#rest + 1] = n end
  table.sort(rest)
  table.move(rest, 1, #rest, #names + 1, names)
  if kind ~= "providers" then return table.concat(names, ", ") end -- adapters have no usage line
  for i, n in ipairs(names) do
    local ok, mod = pcall(M.load, kind, n)
    names[i] = ok and type(mod) == "table" and type(mod.usage) == "string" and mod.usage or n
  end
  return table.concat(names, ", ")
end

return M
