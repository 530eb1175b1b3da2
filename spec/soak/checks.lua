--- What the soak expects of a restore, and the checks that find a violation. The expectation is README's merge
-- table applied to the soak's own model of the three trees: the baseline B (the host at prepare), the host H
-- (its edits made meanwhile) and the sandbox S (the agent's edits). Only files and symlinks are compared;
-- the soak never removes a dir, so the dirs of the result are those either side made.
local tree = dofile(debug.getinfo(1, "S").source:match("^@(.*)/") .. "/tree.lua")

local M = {}

M.COPY = ".ferry-remote"

local same = tree.same

local function union(...)
  local keys = {}
  for i = 1, select("#", ...) do
    for rel, e in pairs((select(i, ...))) do
      if e.kind ~= "dir" then keys[rel] = true end
    end
  end
  return tree.sorted_keys(keys)
end

--- The host tree a restore must leave: path -> entry (files and symlinks), and the paths that are conflicts
--- (host kept, the sandbox's version saved as PATH.ferry-remote).
---@return table expected, string[] conflicts
function M.merge(B, H, S)
  local out, conflicts = {}, {}
  for _, p in ipairs(union(B, H, S)) do
    local b, h, s = B[p], H[p], S[p]
    if same(h, b) then
      out[p] = s
    elseif same(s, b) or same(h, s) then
      out[p] = h
    else
      out[p] = h
      if s then conflicts[#conflicts + 1] = p end
    end
  end
  return out, conflicts
end

local function is_copy(rel)
  return rel:sub(-#M.COPY) == M.COPY
end

--- Every violation of the expectation in `actual` (the host tree after the restore), as {kind, detail}.
--- `race` maps paths edited on the host while the restore ran to what they must be (false: deleted).
---@param c table  {B, H, S, actual, expected, conflicts, reported (set of paths the result named), killed, race}
---@return table[] violations
function M.final(c)
  local found = {}
  local function add(kind, detail) found[#found + 1] = { kind = kind, detail = detail } end
  local race = c.race or {}
  local copies_ok = {}
  for _, p in ipairs(c.conflicts) do
    local copy = c.actual[p .. M.COPY]
    copies_ok[p .. M.COPY] = true
    if race[p] == nil then
      if not same(copy, c.S[p]) then
        add("conflict copy missing", p .. M.COPY .. " is " .. tree.describe(copy) .. ", want the sandbox's "
          .. tree.describe(c.S[p]))
      elseif not c.killed and not c.reported[p] then
        add("conflict not reported", p)
      end
    end
  end
  for p, want in pairs(race) do
    local got = c.actual[p]
    if (want == false and got ~= nil) or (want ~= false and not same(got, want)) then
      add("host edit during restore lost", p .. ": " .. tree.describe(got) .. ", the user wrote "
        .. (want == false and "nothing (deleted it)" or tree.describe(want)))
    end
    -- the sandbox's version may have been saved beside it
    if c.S[p] and same(c.actual[p .. M.COPY], c.S[p]) then copies_ok[p .. M.COPY] = true end
  end
  for _, p in ipairs(union(c.expected, c.actual)) do
    local got, want = c.actual[p], c.expected[p]
    if race[p] == nil and not copies_ok[p] and not same(got, want) then
      local kind
      if p:find("%.ferry%-tmp%-") then
        kind = "temp file left"
      elseif is_copy(p) then
        kind = "stray conflict copy"
      elseif not same(c.H[p], c.B[p]) then
        kind = "host edit lost"
      elseif not same(c.S[p], c.B[p]) then
        kind = "sandbox change lost"
      elseif got and not c.B[p] then
        kind = "stray file"
      else
        kind = "unexpected change"
      end
      add(kind, p .. ": " .. tree.describe(got) .. ", want " .. tree.describe(want))
    end
  end
  for p, e in pairs(c.actual) do
    if e.kind == "dir" and not (c.B[p] or c.H[p] or c.S[p]) and not race[p] then
      add("stray dir", p)
    end
  end
  return found
end

--- After a restore killed at a random moment: every file is whole, either the host's version before the restore
--- or the one the restore must leave (a conflict copy: the sandbox's version).
---@return table[] violations
function M.whole(H, S, expected, actual)
  local found = {}
  for _, p in ipairs(union(actual)) do
    local got = actual[p]
    local base = is_copy(p) and p:sub(1, -#M.COPY - 1)
    local ok = same(got, H[p]) or same(got, expected[p]) or (base and same(got, S[base]))
    if not ok and p:find("%.ferry%-tmp%-") then ok = true end -- the rerun must clear it: checked after it
    if not ok then
      found[#found + 1] = { kind = "torn or foreign file after a killed restore", detail = p .. ": "
        .. tree.describe(got) }
    end
  end
  return found
end

--- Differences between two trees' files, at most `limit` of them, for messages.
---@return string[]
function M.diff(a, b, limit)
  local out = {}
  for _, p in ipairs(union(a, b)) do
    if not same(a[p], b[p]) then
      out[#out + 1] = p .. " (" .. tree.describe(a[p]) .. " vs " .. tree.describe(b[p]) .. ")"
      if #out >= limit then break end
    end
  end
  return out
end

return M
