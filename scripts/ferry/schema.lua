--- ferry.schema: the shape of policy files as data (an adapter table, a provider module, the provider object
-- a provider's open returns) and the check of a value against a shape. A problem names the field and the line
-- of the policy file that sets it: "adapters/x.lua:4: unknown field 'hook' (did you mean 'hooks'?)".
local excludes = require "ferry.excludes"
local source = require "ferry.policy_source"

local M = {}

-- A shape is a table: `what` (how a message names it), and one of
--   type = "string" | "boolean" | "function"      a Lua value of that type; check(value) -> nil, or what is
--                                                  wrong, put after "field 'x'" (" must be ...", ": ...")
--   item = SHAPE                                   a list (a sequence) of values of that shape
--   fields = {FIELD, ...}                          a table with these fields; `open`: other keys are allowed
-- A FIELD is {name, SHAPE, required = bool, default = fn(file_name) -> value, doc = "..."}.

local function scalar(type_name, what, check)
  return { type = type_name, what = what, check = check }
end

M.STRING = scalar("string", "a string")
M.BOOLEAN = scalar("boolean", "a boolean")
M.FUNCTION = scalar("function", "a function")

--- A list whose items have shape `item`; `what` names it in messages ("a list of strings").
---@param item table
---@param what string
---@return table
function M.list(item, what)
  return { item = item, what = what }
end

--- A table with the given fields (see the FIELD format above). opts.open: keys that are not fields are
--- allowed (a provider object keeps its own state beside the fields ferry reads); opts.check(value) -> nil,
--- or the field a rule across fields points at and the message.
---@param fields table[]
---@param opts table|nil
---@return table
function M.record(fields, opts)
  opts = opts or {}
  local by_name = {}
  for _, f in ipairs(fields) do by_name[f[1]] = f end
  return { fields = fields, by_name = by_name, open = opts.open, check = opts.check, what = "a table" }
end

local NAME_CHARS = "letters, digits, '_', '-' and '.', not starting with '.' or '-'"

-- An adapter's name names its runtime dir <remote>/.ferry-runtime/<name>: one safe path component.
local ADAPTER_NAME = scalar("string", "a string", function(v)
  if not v:match("^[%w_][%w_.%-]*$") then return string.format(" must be a name (%s), got %q", NAME_CHARS, v) end
end)

-- A preserved name is one entry at the top of the remote dir.
local TOP_NAME = scalar("string", "a string", function(v)
  if v == "" or v:find("/", 1, true) or v == "." or v == ".." then
    return string.format(" must be a name in the remote dir (no '/'), got %q", v)
  end
end)

local EXCLUDE_PATTERN = scalar("string", "a string", function(v)
  local ok, err = pcall(excludes.compile, { v })
  if not ok then return ": " .. tostring(err) end
end)

local function empty_list() return {} end

-- An npm package spec as `npm install` takes it: one word ("@scope/name", "name@1.2").
local NPM_PACKAGE = scalar("string", "a string", function(v)
  if not v:match("^[%w@][%w@/._~^=<>%-]*$") then return string.format(" must be an npm package name, got %q", v) end
end)

M.HOOKS = M.record {
  { "before_sync", M.FUNCTION, doc = "during prepare, after install, before the workspace goes in" },
  { "after_sync", M.FUNCTION, doc = "during prepare, once the workspace and the assets are in the sandbox" },
  { "before_restore", M.FUNCTION, doc = "during restore, before the sandbox's workspace comes back" },
  { "after_restore", M.FUNCTION, doc = "during restore, after the merge into the host workspace" },
}

--- What an adapter file returns.
M.ADAPTER = M.record {
  { "name", ADAPTER_NAME, default = function(file_name) return file_name end,
    doc = "the adapter's name (default: the file's); names its runtime dir" },
  { "detect", M.STRING, doc = "a command name; prepare installs when `command -v` does not find it" },
  { "install", M.STRING, doc = "a shell command run with sh -c in the sandbox when detect fails (with npm: "
    .. "when npm or node is missing)" },
  { "npm", NPM_PACKAGE, doc = "an npm package installed when detect fails, where the sandbox user can write" },
  { "excludes", M.list(EXCLUDE_PATTERN, "a list of strings"), default = empty_list,
    doc = "workspace paths that never travel" },
  { "preserve", M.list(TOP_NAME, "a list of strings"), default = empty_list,
    doc = "names at the top of the remote dir that prepare leaves alone" },
  { "assets", M.FUNCTION, default = function() return empty_list end,
    doc = "function(ctx) -> {key = {dir, follow_symlinks, exclude}}" },
  { "hooks", M.HOOKS, default = empty_list, doc = "functions run around the sync" },
  { "launch", M.FUNCTION, doc = "function(ctx) -> {env, path, command, dirs, links}: how the agent runs" },
}

--- What a provider file returns.
M.PROVIDER_MODULE = M.record {
  { "open", M.FUNCTION, required = true, doc = "open(arg, opts) -> provider | nil, message, code" },
  { "usage", M.STRING, doc = "the provider string's form, e.g. ssh:HOST" },
  { "help", M.STRING, doc = "one line on what it does" },
  { "parse", M.FUNCTION, doc = "parse(arg) -> target | nil, message: the argument parsed, for specs and tools" },
}

M.CAPS = M.record {
  { "stdin", M.BOOLEAN, doc = "the command's stdin reaches sh in the sandbox" },
  { "binary", M.BOOLEAN, doc = "stdin and stdout carry any byte unchanged" },
  { "costly", M.BOOLEAN, doc = "starting a command is expensive (a remote transport): ferry.open then runs "
    .. "every command through one persistent shell (ferry.session) unless told session = false" },
}

--- What a provider's open returns. Other keys are the provider's own state.
M.PROVIDER = M.record({
  { "name", M.STRING, doc = "what logs and errors call it" },
  { "caps", M.CAPS, doc = "what the channel can do" },
  { "default_remote_dir", M.STRING, doc = "the workspace dir in the sandbox when the user gives none" },
  { "scratch_dir", M.STRING, doc = "a writable dir in the sandbox for staging uploads" },
  { "command", M.FUNCTION, doc = "p:command(script) -> argv running sh -c script with cwd /" },
  { "exec", M.FUNCTION, doc = "p:exec(script, opts) -> a ferry.proc.run result, instead of command" },
  { "close", M.FUNCTION, doc = "p:close(): release what open made" },
}, {
  open = true,
  check = function(p)
    if p.command == nil and p.exec == nil then
      return "command", "field 'command' must be a function, got nil (a provider needs command or exec)"
    end
  end,
})

-- ---- checking ----

-- Optimal string alignment distance: edits, with a swap of two neighbours counting as one.
local function distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 1, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[#a][#b]
end

--- The candidate closest to `name` by edit distance when it is close enough to be a misspelling, else nil.
---@param name string
---@param candidates string[]
---@return string|nil
function M.closest(name, candidates)
  local best, best_d
  local limit = math.max(1, math.min(3, #name // 3))
  for _, c in ipairs(candidates) do
    local d = distance(name:lower(), c:lower())
    if d <= limit and (not best_d or d < best_d) then best, best_d = c, d end
  end
  return best
end

local function dotted(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = type(k) == "number" and "[" .. k .. "]" or (i > 1 and "." or "") .. k end
  return table.concat(parts)
end

local function with(keys, key)
  local out = table.move(keys, 1, #keys, 1, {})
  out[#out + 1] = key
  return out
end

local validate

local function problem(out, keys, message)
  out[#out + 1] = { keys = keys, message = message }
end

local function must(keys, shape, value)
  return string.format("field '%s' must be %s, got %s", dotted(keys), shape.what, type(value))
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  return keys
end

local function validate_list(shape, value, keys, out)
  local n = #value
  for _, k in ipairs(sorted_keys(value)) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      return problem(out, keys, string.format("field '%s' must be %s, got a table with key %s", dotted(keys),
        shape.what, type(k) == "string" and "'" .. k .. "'" or tostring(k)))
    end
  end
  for i = 1, n do
    -- problems of an item are reported at the list's line: items have no names to look for
    local item_out = {}
    validate(shape.item, value[i], with(keys, i), item_out)
    for _, p in ipairs(item_out) do problem(out, keys, p.message) end
  end
end

local function validate_record(shape, value, keys, out)
  local names = {}
  for _, f in ipairs(shape.fields) do names[#names + 1] = f[1] end
  if not shape.open then
    for _, k in ipairs(sorted_keys(value)) do
      if not shape.by_name[k] then
        local key = (type(k) == "string" or math.type(k) == "integer") and k or tostring(k)
        local near = type(k) == "string" and M.closest(k, names)
        problem(out, with(keys, key), string.format("unknown field '%s'%s", dotted(with(keys, key)),
          near and string.format(" (did you mean '%s'?)", dotted(with(keys, near))) or ""))
      end
    end
  end
  for _, f in ipairs(shape.fields) do
    local v = value[f[1]] -- not rawget: a provider object's methods come from its metatable
    local field_keys = with(keys, f[1])
    if v == nil then
      if f.required then problem(out, field_keys, must(field_keys, f[2], nil)) end
    else
      validate(f[2], v, field_keys, out)
    end
  end
  if shape.check then
    local field, message = shape.check(value)
    if message then problem(out, with(keys, field), message) end
  end
end

validate = function(shape, value, keys, out)
  if shape.type then
    if type(value) ~= shape.type then return problem(out, keys, must(keys, shape, value)) end
    local why = shape.check and shape.check(value)
    if why then problem(out, keys, string.format("field '%s'%s", dotted(keys), why)) end
  elseif type(value) ~= "table" then
    problem(out, keys, must(keys, shape, value))
  elseif shape.item then
    validate_list(shape, value, keys, out)
  else
    validate_record(shape, value, keys, out)
  end
end

--- Check `value` against `shape`. Returns the problems, each {keys = the path to the field, message =
--- "unknown field 'hook' (did you mean 'hooks'?)" | "field 'x' must be ..., got T" | ...}, in field order.
---@param shape table
---@param value any
---@return table[]
function M.validate(shape, value)
  local out = {}
  if type(value) ~= "table" then
    problem(out, {}, "the file must return a table, got " .. type(value))
  else
    validate(shape, value, {}, out)
  end
  return out
end

--- The problems of `value` as "FILE:LINE: message" lines in line order: FILE is `where`, LINE the line of
--- `text` (the policy file's source) that sets the field, else `fallback_line`, else the line of the file's
--- last return.
---@param shape table
---@param value any
---@param where string
---@param text string
---@param fallback_line integer|nil
---@param prefix string|nil  put before each message (e.g. "open returned a provider: ")
---@return string[]
function M.check(shape, value, where, text, fallback_line, prefix)
  local located = source.new(text)
  local problems = M.validate(shape, value)
  for i, p in ipairs(problems) do
    p.line = #p.keys > 0 and located:line_of(p.keys) or fallback_line or located:last_return()
    p.order = i
  end
  table.sort(problems, function(a, b) return a.line < b.line or (a.line == b.line and a.order < b.order) end)
  local lines = {}
  for i, p in ipairs(problems) do lines[i] = string.format("%s:%d: %s%s", where, p.line, prefix or "", p.message) end
  return lines
end

--- The problems of an adapter table (see M.check).
function M.check_adapter(adapter, where, text)
  return M.check(M.ADAPTER, adapter, where, text)
end

--- The problems of a provider module (see M.check).
function M.check_provider_module(mod, where, text)
  return M.check(M.PROVIDER_MODULE, mod, where, text)
end

--- The problems of the provider object `open` returned, as "FILE:LINE: open returned a provider: field ...":
--- LINE is where the field is set, else `open_line` (where open is defined).
---@param provider any
---@param where string
---@param text string
---@param open_line integer|nil
---@return string[]
function M.check_provider_object(provider, where, text, open_line)
  if type(provider) ~= "table" then
    return { string.format("%s:%d: open returned %s, not a provider table", where,
      open_line or source.new(text):last_return(), type(provider)) }
  end
  return M.check(M.PROVIDER, provider, where, text, open_line, "open returned a provider: ")
end

--- Fill the fields `value` leaves out with the shape's defaults (fresh tables each time).
---@param shape table  a record
---@param value table
---@param file_name string  what a default may depend on (an adapter's name)
---@return table value
function M.apply_defaults(shape, value, file_name)
  for _, f in ipairs(shape.fields) do
    if value[f[1]] == nil and f.default then value[f[1]] = f.default(file_name) end
  end
  return value
end

return M
