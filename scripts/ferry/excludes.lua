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
local core = require "ferry.core"

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

-- Check one component (as written, escapes kept): nil, or "globstar" for '**'.
local function check_component(pattern, raw)
  if raw == "" then invalid(pattern, "empty path component") end
  if raw == "**" then return "globstar" end
  if raw == "." or raw == ".." then invalid(pattern, "'.' and '..' components are not allowed") end
  local i = 1
  while i <= #raw do
    local c = raw:sub(i, i)
    if c == "\\" then
      if i == #raw then invalid(pattern, "trailing '\\' escapes nothing") end
      i = i + 1
    elseif c == "*" and raw:sub(i + 1, i + 1) == "*" then
      invalid(pattern, "'**' must be a whole path component")
    end
    i = i + 1
  end
  return nil
end

-- One pattern, checked, as the rule core.exclude_matcher takes: {include, dir_only, bare, comps}.
local function compile_one(pattern)
  if type(pattern) ~= "string" then
    error("exclude pattern: expected a string, got " .. type(pattern), 0)
  end
  local rule = { include = false, dir_only = false, comps = {} }
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
  local globstars, last = 0, nil
  for raw in (body .. "/"):gmatch("([^/]*)/") do
    local kind = check_component(pattern, raw)
    -- consecutive '**' mean the same as one
    if not (kind == "globstar" and last == "globstar") then
      rule.comps[#rule.comps + 1] = raw
      if kind == "globstar" then globstars = globstars + 1 end
    end
    last = kind
  end
  if globstars > MAX_GLOBSTARS then invalid(pattern, "more than " .. MAX_GLOBSTARS .. " '**' components") end
  -- a bare name (one component, not anchored) is compared with the last component of a path only
  rule.bare = #rule.comps == 1 and not anchored and rule.comps[1] ~= "**"
  return rule
end

--- Compile patterns (see the syntax above) into a matcher (core.exclude_matcher: matched in C, and a walk or
--- a scan asks it without calling Lua): `matcher(rel_path, is_dir) -> bool`, true when the path is excluded
--- (itself, or because a directory above it is). Raises on an invalid pattern.
---@param patterns string[]
---@return fun(rel_path: string, is_dir: boolean|nil): boolean
function M.compile(patterns)
  if type(patterns) ~= "table" then
    error("excludes.compile: expected a list of patterns, got " .. type(patterns), 2)
  end
  local rules = {}
  for i, pattern in ipairs(patterns) do rules[i] = compile_one(pattern) end
  return core.exclude_matcher(rules)
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
