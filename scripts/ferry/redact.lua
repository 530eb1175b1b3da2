--- Secret redaction for every log line, progress event, error and state file.
--
-- A redactor replaces, with "***":
--   * every occurrence of each secret value (plain text, not patterns; overlapping occurrences of several
--     secrets are hidden as one run, so no byte of any secret survives);
--   * token shapes, secret or not: `sk-` + 20 or more of [A-Za-z0-9_-] (OpenAI/Anthropic keys),
--     `gh[pousr]_` + 30 or more alphanumerics (GitHub tokens), the credentials after `Bearer ` or after
--     `Authorization: <scheme> `, JWTs (three base64url parts joined by dots, the first starting with
--     `eyJ`), the value of a command-line option named like a credential (`--token`, `--api-key`,
--     `--password`, `--secret`, `--github-token`, ... as `--opt VALUE` or `--opt=VALUE`, quoted or not),
--     of an environment assignment named like one (`API_KEY=...`, `GITHUB_TOKEN=...`) and of a JSON
--     member named like one (`"refresh_token": "..."`); `github_pat_` + 30 or more [A-Za-z0-9_].
local M = {}

local MASK = "***"

local function credential_name(name)
  name = name:lower()
  return name:find("token$") ~= nil or name:find("api[-_]?key$") ~= nil or name:find("password$") ~= nil
    or name:find("passwd$") ~= nil or name:find("secret$") ~= nil
end

-- Mask the value after each match of `pattern` (its capture is the name) when the name is a credential's.
-- A value is a quoted run (quotes kept) or a run of non-blank characters.
local function mask_values_after(s, pattern, is_credential)
  local parts, at = {}, 1
  while true do
    local _, last, name = s:find(pattern, at)
    if not last then break end
    parts[#parts + 1] = s:sub(at, last)
    at = last + 1
    if is_credential(name) then
      local quote = s:sub(at, at)
      local close
      if quote == "'" or quote == '"' then close = s:find(quote, at + 1, true) end
      if close then
        parts[#parts + 1] = quote .. MASK .. quote
        at = close + 1
      else
        local _, value_end = s:find("^%S+", at)
        if value_end then
          parts[#parts + 1] = MASK
          at = value_end + 1
        end
      end
    end
  end
  if at == 1 then return s end
  parts[#parts + 1] = s:sub(at)
  return table.concat(parts)
end

local ENV_SUFFIXES = { "TOKEN", "_KEY", "APIKEY", "SECRET", "PASSWORD", "PASSWD" }

local function env_credential(name)
  for _, suffix in ipairs(ENV_SUFFIXES) do
    if name:sub(-#suffix) == suffix then return true end
  end
  return false
end

local function long_enough(min)
  return function(_, body)
    if #body >= min then return MASK end
    return nil
  end
end

local function redact_shapes(s)
  s = s:gsub("%f[%w](sk%-)([%w_%-]+)", long_enough(20))
  s = s:gsub("%f[%w](gh[pousr]_)(%w+)", long_enough(30))
  s = s:gsub("%f[%w](github_pat_)([%w_]+)", long_enough(30))
  s = s:gsub("%f[%w]eyJ[%w_%-]*%.[%w_%-]+%.[%w_%-]+", MASK)
  s = s:gsub("([Aa]uthorization:%s*%a+%s+)[^%s'\"]+", "%1" .. MASK)
  s = s:gsub("(%f[%w][Bb]earer%s+)[%w%-%._~%+/]+=*", "%1" .. MASK)
  s = mask_values_after(s, "%-%-([%w_%-]+)[=%s]%s*", credential_name) -- --token VALUE, --api-key=VALUE
  s = mask_values_after(s, "%f[%w_]([%u%d_]+)=", env_credential) -- GITHUB_TOKEN=VALUE
  return mask_values_after(s, '"([%w_%-]+)"%s*:%s*', credential_name) -- "refresh_token": "VALUE"
end

-- All occurrences of every secret, as merged [first, last] byte ranges.
local function secret_ranges(s, secrets)
  local ranges = {}
  for _, secret in ipairs(secrets) do
    local init = 1
    while true do
      local first, last = s:find(secret, init, true)
      if not first then break end
      ranges[#ranges + 1] = { first, last }
      init = first + 1
    end
  end
  if #ranges == 0 then return ranges end
  table.sort(ranges, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] > b[2]) end)
  local merged = { ranges[1] }
  for i = 2, #ranges do
    local top, r = merged[#merged], ranges[i]
    if r[1] <= top[2] + 1 then
      if r[2] > top[2] then top[2] = r[2] end
    else
      merged[#merged + 1] = r
    end
  end
  return merged
end

local function redact_secrets(s, secrets)
  local ranges = secret_ranges(s, secrets)
  if #ranges == 0 then return s end
  local parts, at = {}, 1
  for _, r in ipairs(ranges) do
    parts[#parts + 1] = s:sub(at, r[1] - 1)
    parts[#parts + 1] = MASK
    at = r[2] + 1
  end
  parts[#parts + 1] = s:sub(at)
  return table.concat(parts)
end

--- A redactor: `fn(s) -> s` with the secret values and token shapes replaced by "***". `secrets` is a list
--- (or any table) of strings; empty strings and non-strings are ignored. Values other than strings pass
--- through unchanged. opts.shapes = false keeps token shapes (secret values only).
---@param secrets table|nil
---@param opts table|nil
---@return fun(s: any): any
function M.new(secrets, opts)
  if secrets ~= nil and type(secrets) ~= "table" then
    error("redact.new: expected a table of secret strings, got " .. type(secrets), 2)
  end
  local list = {}
  for _, value in pairs(secrets or {}) do
    if type(value) == "string" and value ~= "" then list[#list + 1] = value end
  end
  table.sort(list, function(a, b) return #a > #b or (#a == #b and a < b) end)
  local shapes = not (opts and opts.shapes == false)
  return function(s)
    if type(s) ~= "string" then return s end
    s = redact_secrets(s, list)
    if shapes then s = redact_shapes(s) end
    return s
  end
end

-- A copy of `value` with every string (keys too) passed through `fn`. Tables keep their metatables; cycles are
-- preserved.
local function copy(value, fn, seen)
  if type(value) == "string" then return fn(value) end
  if type(value) ~= "table" then return value end
  if seen[value] then return seen[value] end
  local out = {}
  seen[value] = out
  for k, v in next, value do out[copy(k, fn, seen)] = copy(v, fn, seen) end
  return setmetatable(out, getmetatable(value))
end

--- A deep copy of `value` with every string (keys too) passed through `fn`. Tables keep their
--- metatables; cycles are preserved.
---@param value any
---@param fn fun(s: string): string
function M.deep(value, fn)
  return copy(value, fn, {})
end

-- Every distinct string (keys too) in `value` into the set `out`.
local function collect_strings(value, out, seen)
  for k, v in next, value do
    if type(k) == "string" then out[k] = true end
    if type(v) == "string" then
      out[v] = true
    elseif type(v) == "table" and not seen[v] then
      seen[v] = true
      collect_strings(v, out, seen)
    end
  end
end

--- M.deep(value, fn), but a table whose strings `fn` leaves alone is returned as it is. That is found with
--- one call of `fn` over all its distinct strings joined by NUL instead of one call per string: no pattern of
--- this module matches a NUL outside the part it replaces, and no replacement holds one, so a match spanning
--- two strings changes the joined text, and any match inside one string matches the same in the joined
--- text: the joined text comes back unchanged exactly when every string would.
---@param value any
---@param fn fun(s: string): string  a redactor (M.new)
function M.table(value, fn)
  if type(value) ~= "table" then return fn(value) end
  local set, list = {}, {}
  collect_strings(value, set, { [value] = true })
  for s in pairs(set) do list[#list + 1] = s end
  local joined = table.concat(list, "\0")
  if fn(joined) == joined then return value end
  return copy(value, fn, {})
end

return M
