--- Fuzz target: ferry.excludes.compile on arbitrary patterns, then the matcher on arbitrary paths. Contract:
-- compile returns a matcher or raises the documented error for a bad pattern ('exclude pattern "<p>": <why>');
-- anything else raised (a Lua pattern error, an index error) is a finding, and so is a hang (libFuzzer's
-- -timeout). The matcher takes a workspace-relative path (non-empty components, none '.' or '..'; a trailing
-- '/' means a dir) and returns a boolean, never raises; its answer is checked against a second matcher
-- written from the documented syntax (excludes.lua's header, README "Exclude patterns").
--
-- Input: lines; the lines before the first empty line are patterns, the lines after it are paths, each
-- tried as a file and as a dir.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/")
local common = dofile(DIR .. "/common.lua")
local excludes = require "ferry.excludes"

local MAX_GLOBSTARS = 4

---------------------------------------------------------------------------------------------------------------
-- The reference: a pattern is a list of components, each "**" or a list of tokens {lit = byte string} |
-- "*" | "?"; matching is plain recursion with memoisation (no Lua patterns).

local function bad(why) error({ why = why }, 0) end

local function component_tokens(raw)
  if raw == "" then bad("empty path component") end
  if raw == "**" then return "**" end
  if raw == "." or raw == ".." then bad("'.' and '..' components are not allowed") end
  local tokens, i = {}, 1
  while i <= #raw do
    local ch = raw:sub(i, i)
    if ch == "\\" then
      if i == #raw then bad("trailing '\\' escapes nothing") end
      tokens[#tokens + 1] = { lit = raw:sub(i + 1, i + 1) }
      i = i + 2
    elseif ch == "*" then
      if raw:sub(i + 1, i + 1) == "*" then bad("'**' must be a whole path component") end
      tokens[#tokens + 1] = "*"
      i = i + 1
    else
      tokens[#tokens + 1] = ch == "?" and "?" or { lit = ch }
      i = i + 1
    end
  end
  return tokens
end

local function reference_rule(pattern)
  local rule = { include = false, dir_only = false }
  local body = pattern
  if body:sub(1, 1) == "!" then rule.include, body = true, body:sub(2) end
  if body:sub(-1) == "/" then rule.dir_only, body = true, body:sub(1, -2) end
  local anchored = body:sub(1, 1) == "/"
  if anchored then body = body:sub(2) end
  if body == "" then bad("empty pattern") end
  local comps, globstars = {}, 0
  for raw in (body .. "/"):gmatch("([^/]*)/") do
    local comp = component_tokens(raw)
    if comp ~= "**" or comps[#comps] ~= "**" then
      comps[#comps + 1] = comp
      if comp == "**" then globstars = globstars + 1 end
    end
  end
  if globstars > MAX_GLOBSTARS then bad("more than 4 '**' components") end
  rule.bare = #comps == 1 and not anchored and comps[1] ~= "**"
  rule.comps = comps
  return rule
end

-- Does the token list match the whole string s? (dynamic programming over token and byte positions)
local function glob(tokens, s)
  local memo = {}
  local function m(t, i)
    local key = t * 65536 + i
    local hit = memo[key]
    if hit ~= nil then return hit end
    local r
    local tok = tokens[t]
    if tok == nil then
      r = i > #s
    elseif tok == "*" then
      r = m(t + 1, i) or (i <= #s and m(t, i + 1))
    elseif tok == "?" then
      r = i <= #s and m(t + 1, i + 1)
    else
      r = s:sub(i, i) == tok.lit and m(t + 1, i + 1)
    end
    memo[key] = r
    return r
  end
  return m(1, 1)
end

-- Do the components match the path's components? '**' spans zero or more, a trailing one at least one.
local function match_components(comps, parts)
  local memo = {}
  local function m(c, p)
    local key = c * 65536 + p
    local hit = memo[key]
    if hit ~= nil then return hit end
    local r
    local comp = comps[c]
    if comp == nil then
      r = p > #parts
    elseif comp == "**" then
      if c == #comps then
        r = p <= #parts
      else
        r = m(c + 1, p) or (p <= #parts and m(c, p + 1))
      end
    else
      r = p <= #parts and glob(comp, parts[p]) and m(c + 1, p + 1)
    end
    memo[key] = r
    return r
  end
  return m(1, 1)
end

local function split(path)
  local parts = {}
  for comp in path:gmatch("[^/]+") do parts[#parts + 1] = comp end
  return parts
end

local function rule_matches(rule, parts, is_dir)
  if rule.dir_only and not is_dir then return false end
  if rule.bare then return glob(rule.comps[1], parts[#parts]) end
  return match_components(rule.comps, parts)
end

-- The last matching rule decides for the path itself.
local function decide(rules, parts, is_dir)
  local excluded = false
  for _, rule in ipairs(rules) do
    if rule_matches(rule, parts, is_dir) then excluded = not rule.include end
  end
  return excluded
end

local function reference_match(rules, path, is_dir)
  if path:sub(-1) == "/" then path, is_dir = path:sub(1, -2), true end
  local parts = split(path)
  for n = 1, #parts - 1 do
    if decide(rules, table.move(parts, 1, n, 1, {}), true) then return true end -- inside an excluded dir
  end
  return decide(rules, parts, is_dir)
end

---------------------------------------------------------------------------------------------------------------

local function valid_path(path)
  return common.safe_rel((path:gsub("/$", "", 1)))
end

return function(data)
  local patterns, paths = {}, {}
  local target = patterns
  for line in (data .. "\n"):gmatch("([^\n]*)\n") do
    if line == "" and target == patterns then
      target = paths
    else
      target[#target + 1] = line
    end
  end
  local ok, matcher = pcall(excludes.compile, patterns)
  local rules = {}
  local rok, rerr = pcall(function()
    for i, p in ipairs(patterns) do rules[i] = reference_rule(p) end
  end)
  if not ok then
    if type(matcher) ~= "string" or not matcher:find('^exclude pattern "') then
      common.fail("compile raised an undocumented error: %s", tostring(matcher))
    end
    if rok then common.fail("compile refused patterns the syntax allows: %s", matcher) end
    return
  end
  if not rok then
    common.fail("compile accepted a bad pattern (%s): %q", type(rerr) == "table" and rerr.why or tostring(rerr),
      table.concat(patterns, "\n"))
  end
  for _, path in ipairs(paths) do
    if valid_path(path) then
      for _, is_dir in ipairs { false, true } do
        local mok, got = pcall(matcher, path, is_dir)
        if not mok then common.fail("matcher(%q, %s) raised: %s", path, tostring(is_dir), tostring(got)) end
        if type(got) ~= "boolean" then common.fail("matcher(%q) returned a %s", path, type(got)) end
        local want = reference_match(rules, path, is_dir)
        if got ~= want then
          common.fail("matcher(%q, %s) = %s, the syntax says %s; patterns %q", path, tostring(is_dir), tostring(got),
            tostring(want), table.concat(patterns, "\n"))
        end
      end
    end
  end
end
