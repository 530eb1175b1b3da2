--- Exclude patterns: which workspace paths never travel (neither into the sandbox nor back).
--
-- Pattern syntax (paths are '/'-separated and relative to the workspace root):
--
--   name          a bare name (no '/') matches a file or directory of that name at any depth:
--                 `node_modules` excludes ./node_modules and ./web/node_modules
--   /name         a leading '/' anchors the pattern at the workspace root: `/build` excludes ./build only
--   a/b           a pattern holding a '/' (other than a trailing one) is anchored too, like `/a/b`
--   name/         a trailing '/' matches directories only: `logs/` excludes a dir named logs, not a file
--   *             any run of characters within one path component (never '/'): `*.log`, `._*`
--   ?             exactly one character other than '/'
--   **            a whole component that matches any number of components (zero or more):
--                 `**/tmp` = `tmp` at any depth, `docs/**/draft.md`, `/cache/**` = everything inside /cache
--   \c            the character c literally (`\*`, `\?`, `\!`, `\#`, `\\`)
--   !pattern      re-include what an earlier pattern excluded; the last matching pattern wins. A path inside
--                 an excluded directory stays excluded (the directory is never entered)
--
-- Everything inside an excluded directory is excluded. Invalid patterns raise an error naming them: an
-- empty pattern, '.' or '..' components, an empty component ('a//b'), '**' mixed with other characters in
-- one component ('a**'), more than 4 '**' components, a trailing lone '\'.
--
-- The defaults (excludes.DEFAULT) are heavy or generated directories at any depth (node_modules vendor dist
-- build out coverage .next .turbo .cache), AppleDouble files (._*) and ferry's own runtime dir.
local M = {}

-- Heavy directories match directories only (a file named `build` or `out` is often a script the agent
-- needs); AppleDouble files and the runtime dir's name match whatever they are.
M.DEFAULT = {
  "node_modules/", "vendor/", "dist/", "build/", "out/", "coverage/", ".next/", ".turbo/", ".cache/", "._*",
  ".ferry-runtime",
}

local MAX_GLOBSTARS = 4 -- the documented limit of '**' components in one pattern

--- Concatenate pattern lists (nil lists are skipped) into a new list: `combine(DEFAULT, adapter, user)`.
---@return string[]
function M.combine(...)
  local out = {}
  for i = 1, select("#", ...) do
    local list = select(i, ...)
    if list ~= nil then
      for _, pattern in ipairs(list) do out[#out + 1] = pattern end
    end
  end
  return out
end

local function invalid(pattern, why)
  error(string.format("exclude pattern %q: %s", pattern, why), 0)
end

-- One component's tokens: {lit=char} | {star=true} | {any=true}; or the string "globstar" for '**'.
local function tokenize_component(pattern, raw)
  if raw == "" then invalid(pattern, "empty path component") end
  if raw == "**" then return "globstar" end
  if raw == "." or raw == ".." then invalid(pattern, "'.' and '..' components are not allowed") end
  local tokens, i = {}, 1
  while i <= #raw do
    local c = raw:sub(i, i)
    if c == "\\" then
      if i == #raw then invalid(pattern, "trailing '\\' escapes nothing") end
      i = i + 1
      tokens[#tokens + 1] = { lit = raw:sub(i, i) }
    elseif c == "*" then
      if raw:sub(i + 1, i + 1) == "*" then invalid(pattern, "'**' must be a whole path component") end
      tokens[#tokens + 1] = { star = true }
    elseif c == "?" then
      tokens[#tokens + 1] = { any = true }
    else
      tokens[#tokens + 1] = { lit = c }
    end
    i = i + 1
  end
  return tokens
end

local function tokenize(pattern, body)
  local components = {}
  for raw in (body .. "/"):gmatch("([^/]*)/") do
    local comp = tokenize_component(pattern, raw)
    -- consecutive '**' mean the same as one
    if not (comp == "globstar" and components[#components] == "globstar") then
      components[#components + 1] = comp
    end
  end
  return components
end

-- The Lua pattern of one component's tokens, and whether it is plain text.
local function component_pattern(tokens)
  local parts, literal = {}, true
  for _, t in ipairs(tokens) do
    if t.lit then
      parts[#parts + 1] = t.lit:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
    elseif t.star then
      parts[#parts + 1] = "[^/]*"
      literal = false
    else
      parts[#parts + 1] = "[^/]"
      literal = false
    end
  end
  return table.concat(parts), literal
end

local function literal_text(tokens)
  local parts = {}
  for _, t in ipairs(tokens) do parts[#parts + 1] = t.lit end
  return table.concat(parts)
end

-- The wildcard walk: do the subject's elements 1..n match the pattern's items 1..m, where star(i) says item i
-- is a '*' (any run of elements) and one(i, j) whether item i matches element j? It only ever returns to the
-- last '*' seen, so it takes O(m * n) steps where backtracking over several '*' takes exponential time.
local function wildcard(m, n, star, one)
  local pi, si, star_pi, star_si = 1, 1, nil, 0
  while si <= n do
    if pi <= m and star(pi) then
      star_pi, star_si, pi = pi, si, pi + 1
    elseif pi <= m and one(pi, si) then
      pi, si = pi + 1, si + 1
    elseif star_pi then
      star_si = star_si + 1
      pi, si = star_pi + 1, star_si
    else
      return false
    end
  end
  while pi <= m and star(pi) do pi = pi + 1 end
  return pi > m
end

-- Whether `name` (one component) matches the tokens.
local function glob(tokens, name)
  return wildcard(#tokens, #name, function(i) return tokens[i].star end, function(i, j)
    local t = tokens[i]
    return t.any or t.lit == name:sub(j, j)
  end)
end

-- A function telling whether one path component (no '/') matches the tokens: a string compare for plain
-- text, a Lua pattern for at most one '*' (linear), the wildcard walk for more.
local function component_matcher(tokens)
  local lua_pattern, literal = component_pattern(tokens)
  if literal then
    local text = literal_text(tokens)
    return function(name) return name == text end
  end
  local stars = 0
  for _, t in ipairs(tokens) do
    if t.star then stars = stars + 1 end
  end
  if stars <= 1 then
    lua_pattern = "^" .. lua_pattern .. "$"
    return function(name) return name:find(lua_pattern) ~= nil end
  end
  return function(name) return glob(tokens, name) end
end

local GLOBSTAR = {}
local function any_component() return true end

-- An anchored pattern's components as a list of component matchers and GLOBSTAR (zero or more
-- components); a trailing '**' must span at least one, so it becomes one any-component then GLOBSTAR.
local function sequence(components)
  local seq = {}
  for index, comp in ipairs(components) do
    if comp == "globstar" then
      if index == #components then seq[#seq + 1] = any_component end
      seq[#seq + 1] = GLOBSTAR
    else
      seq[#seq + 1] = component_matcher(comp)
    end
  end
  return seq
end

-- Whether the path's components match the sequence, GLOBSTAR being the '*' over whole components.
local function match_sequence(seq, parts)
  return wildcard(#seq, #parts, function(i) return seq[i] == GLOBSTAR end, function(i, j) return seq[i](parts[j]) end)
end

local function compile_one(pattern)
  if type(pattern) ~= "string" then
    error("exclude pattern: expected a string, got " .. type(pattern), 0)
  end
  local rule = { source = pattern, include = false, dir_only = false }
  local body = pattern
  if body:sub(1, 1) == "!" then
    rule.include = true
    body = body:sub(2)
  end
  if body:sub(-1) == "/" then
    rule.dir_only = true
    body = body:sub(1, -2)
  end
  local anchored = body:sub(1, 1) == "/"
  if anchored then body = body:sub(2) end
  if body == "" then invalid(pattern, "empty pattern") end
  local components = tokenize(pattern, body)
  local globstars = 0
  for _, comp in ipairs(components) do
    if comp == "globstar" then globstars = globstars + 1 end
  end
  if globstars > MAX_GLOBSTARS then invalid(pattern, "more than " .. MAX_GLOBSTARS .. " '**' components") end
  if #components == 1 and not anchored and components[1] ~= "globstar" then
    -- a bare name: compare with the last component only
    local _, literal = component_pattern(components[1])
    if literal then
      rule.name = literal_text(components[1])
    else
      rule.basename_matches = component_matcher(components[1])
    end
  else
    rule.sequence = sequence(components)
  end
  return rule
end

-- `parts` holds the path's components when an earlier rule split it (a table to fill in otherwise).
local function rule_matches(rule, path, basename, is_dir, parts)
  if rule.dir_only and not is_dir then return false end
  if rule.name then return rule.name == basename end
  if rule.basename_matches then return rule.basename_matches(basename) end
  if not parts[1] then
    for part in path:gmatch("[^/]+") do parts[#parts + 1] = part end
  end
  return match_sequence(rule.sequence, parts)
end

--- Compile patterns (see the syntax above) into a matcher: `matcher(rel_path, is_dir) -> bool`, true when
--- the path is excluded (itself, or because a directory above it is). Raises on an invalid pattern.
---@param patterns string[]
---@return fun(rel_path: string, is_dir: boolean|nil): boolean
function M.compile(patterns)
  if type(patterns) ~= "table" then
    error("excludes.compile: expected a list of patterns, got " .. type(patterns), 2)
  end
  local rules, has_include = {}, false
  for i, pattern in ipairs(patterns) do
    rules[i] = compile_one(pattern)
    has_include = has_include or rules[i].include
  end
  -- Without re-includes any matching rule decides, so plain names become table lookups.
  local names, dir_names, slow_rules = {}, {}, {}
  for _, rule in ipairs(rules) do
    if rule.name and not has_include and rule.dir_only then
      dir_names[rule.name] = true
    elseif rule.name and not has_include then
      names[rule.name] = true
    else
      slow_rules[#slow_rules + 1] = rule
    end
  end

  local function decide(path, basename, is_dir)
    if names[basename] or (is_dir and dir_names[basename]) then return true end
    local excluded, parts = false, {}
    for _, rule in ipairs(slow_rules) do
      if (excluded ~= not rule.include) and rule_matches(rule, path, basename, is_dir, parts) then
        excluded = not rule.include
        if not has_include then return true end
      end
    end
    return excluded
  end

  local dir_cache = {}
  local function dir_excluded(path)
    local cached = dir_cache[path]
    if cached ~= nil then return cached end
    local parent, basename = path:match("^(.*)/([^/]*)$")
    local result
    if parent then
      result = dir_excluded(parent) or decide(path, basename, true)
    else
      result = decide(path, path, true)
    end
    dir_cache[path] = result
    return result
  end

  return function(rel_path, is_dir)
    if rel_path:sub(-1) == "/" then
      rel_path, is_dir = rel_path:sub(1, -2), true
    end
    if is_dir then return dir_excluded(rel_path) end
    local parent, basename = rel_path:match("^(.*)/([^/]*)$")
    if parent then
      return dir_excluded(parent) or decide(rel_path, basename, false)
    end
    return decide(rel_path, rel_path, false)
  end
end

--- M.compile(patterns) for patterns from a user or a state file: the matcher, or nil, "<what>: <why>",
--- "EINVAL" for an invalid pattern.
---@param patterns string[]
---@param what string  names the operation in the message
---@return function|nil matcher, string|nil err, string|nil code
function M.checked(patterns, what)
  local ok, matcher = pcall(M.compile, patterns)
  if not ok then return nil, what .. ": " .. tostring(matcher), "EINVAL" end
  return matcher
end

--- A snapshot (rel -> entry with .kind) without its excluded paths.
---@param snapshot table<string, table>
---@param matcher fun(rel_path: string, is_dir: boolean): boolean
---@return table<string, table>
function M.filter(snapshot, matcher)
  local out = {}
  for rel, entry in pairs(snapshot) do
    if not matcher(rel, entry.kind == "dir") then out[rel] = entry end
  end
  return out
end

return M
