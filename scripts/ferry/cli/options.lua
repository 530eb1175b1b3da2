--- Command-line options of the ferry verbs: the parser, value parsers, and the option specs several verbs share.
local M = {}

--- Parse command-line words against an option spec.
--- spec.options: list of {names = {"-p", "--provider"}, key = "provider", value = "PROVIDER" (nil for a flag),
--- multi = true (repeatable, collected in a list)}. spec.stop_at_positional: the first positional word ends
--- the options (for `exec`, whose command has options of its own). `--` always ends the options;
--- `--name=value` and `--name value` both work; "-" alone is a positional.
---@param args string[]
---@param spec table
---@return table|nil opts  option values by key, positionals in opts.args
---@return string|nil err  what is wrong, naming the option
function M.parse(args, spec)
  local by_name = {}
  for _, o in ipairs(spec.options) do
    for _, n in ipairs(o.names) do by_name[n] = o end
  end
  local opts, positional = {}, {}
  for _, o in ipairs(spec.options) do
    if o.multi then opts[o.key] = {} end
  end
  local i, only_positional = 1, false
  while i <= #args do
    local a = args[i]
    if only_positional or a == "-" or a:sub(1, 1) ~= "-" then
      positional[#positional + 1] = a
      if spec.stop_at_positional then only_positional = true end
    elseif a == "--" then
      only_positional = true
    else
      local name, inline = a, nil
      if a:sub(1, 2) == "--" then
        local eq = a:find("=", 3, true)
        if eq then name, inline = a:sub(1, eq - 1), a:sub(eq + 1) end
      end
      local o = by_name[name]
      if not o then return nil, "unknown option '" .. name .. "'" end
      local value = true
      if o.value then
        value = inline
        if value == nil then
          i = i + 1
          value = args[i]
        end
        if value == nil then return nil, "option " .. name .. " needs a " .. o.value end
      elseif inline ~= nil then
        return nil, "option " .. name .. " takes no value"
      end
      if o.multi then
        table.insert(opts[o.key], value)
      else
        opts[o.key] = value
      end
    end
    i = i + 1
  end
  opts.args = positional
  return opts
end

local SIZE_UNITS = { [""] = 1, K = 1024, M = 1024 ^ 2, G = 1024 ^ 3 }

--- A byte count: digits with an optional K, M or G (powers of 1024) suffix.
---@param s string
---@return integer|nil
function M.parse_size(s)
  local digits, unit = tostring(s):match("^(%d+)([KMG]?)i?B?$")
  if not digits then return nil end
  return math.tointeger(tonumber(digits) * SIZE_UNITS[unit])
end

--- The value of --max-bytes: nil when not given, else a byte count.
---@param value string|nil
---@return integer|nil max_bytes
---@return string|nil err  the usage error for a value that is not a byte count
function M.max_bytes(value)
  if value == nil then return nil end
  local n = M.parse_size(value)
  if not n then return nil, "--max-bytes expects a byte count, got '" .. value .. "'" end
  return n
end

--- Repeated `KEY=VALUE` words (--env, --asset) as a table by key; nil when there are none.
---@param list string[]
---@param pattern string  captures the key and the value of a well-formed word
---@param option string  the option's name, for the error
---@param form string  what a word should look like, for the error ("NAME=VALUE")
---@return table|nil values
---@return string|nil err  the usage error naming the first malformed word
function M.key_values(list, pattern, option, form)
  local values = {}
  for _, word in ipairs(list) do
    local k, v = word:match(pattern)
    if not k then return nil, option .. " expects " .. form .. ", got '" .. word .. "'" end
    values[k] = v
  end
  return next(values) and values or nil
end

--- Values of the environment variables named by --secret-env (unset or empty ones are skipped).
---@param names string[]|nil
---@return string[]
function M.secret_values(names)
  local values = {}
  for _, name in ipairs(names or {}) do
    local v = os.getenv(name)
    if v and v ~= "" then values[#values + 1] = v end
  end
  return values
end

-- Options several verbs take.
M.PROVIDER = { names = { "-p", "--provider" }, key = "provider", value = "PROVIDER" }
M.SECRET_ENV = { names = { "--secret-env" }, key = "secret_env", value = "NAME", multi = true }
M.JSON = { names = { "--json" }, key = "json" }
M.MAX_BYTES = { names = { "--max-bytes" }, key = "max_bytes", value = "N" }
M.MANY = { names = { "--many" }, key = "many", value = "FILE" }
M.JOBS = { names = { "--jobs" }, key = "jobs", value = "N" }
M.NO_GIT = { names = { "--no-git" }, key = "no_git" }
M.VERBOSE = { names = { "-v", "--verbose" }, key = "verbose" }
M.NO_SESSION = { names = { "--no-session" }, key = "no_session" }
M.NO_SESSION_HELP = "  --no-session             one provider command per operation, not the persistent session\n"
  .. "                           (the default where commands are costly: ssh, docker, podman, kubectl)\n"

--- ferry.open's session option from --no-session: false when given, else nil (the provider's default).
---@param o table  parsed options
---@return boolean|nil
function M.session(o)
  if o.no_session then return false end
  return nil
end

return M
