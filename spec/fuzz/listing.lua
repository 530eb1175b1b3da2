--- Fuzz target: core.tree_parse_listing, the reader of the remote tree listing a (hostile) sandbox prints for a
-- delta prepare. Contract: any bytes give a tree and info, or nil, "listing: ...", "EINVAL"; never an error.
-- Checked against a second reader written from the format (NUL-terminated fields: "F" or "I" ["R"], records of
-- 9 fields, then optionally "H" and path/hash pairs, then "E"): the same entries, or nil for the same inputs.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/")
local common = dofile(DIR .. "/common.lua")
local core = require "ferry.core"

local KINDS = { f = "file", d = "dir", l = "symlink" }
local FIELDS = 9
local MAX_PATH, MAX_LINK, MAX_DEVS = 65535, 32767, 255

-- Digits in `base` (leading zeros allowed) as an integer at most `max`, or nil. Digit by digit with an
-- overflow check: tonumber(s, base) wraps around past 2^63 (the first finding of this target was that).
local function number(s, base, max)
  if s == "" or not s:match(base == 8 and "^[0-7]+$" or "^%d+$") then return nil end
  local v = 0
  for i = 1, #s do
    local d = s:byte(i) - 48
    if v > (max - d) // base then return nil end
    v = v * base + d
  end
  return v
end

-- "[-]digits[.digits]", the whole seconds under 2^63 - 1.
local function mtime_ok(s)
  local whole = s:match("^%-?(%d+)$") or s:match("^%-?(%d+)%.%d+$")
  return whole ~= nil and number(whole, 10, math.maxinteger - 1) ~= nil
end

local function rel_ok(rel, limit)
  if rel == "" or (limit and #rel > MAX_PATH) then return false end
  for comp in (rel .. "/"):gmatch("([^/]*)/") do
    if comp == "" or comp == "." or comp == ".." then return false end
  end
  return true
end

-- The reference: nil for what the format refuses, else rel -> {kind, mode, size, ino, dev, target, sha256,
-- flags} and the info.
local function reference(text)
  local fields = {}
  for field in text:gmatch("([^\0]*)\0") do fields[#fields + 1] = field end
  local i, info = 2, { incremental = fields[1] == "I", root_changed = false }
  if fields[1] ~= "F" and fields[1] ~= "I" then return nil end
  if info.incremental and fields[2] == "R" then info.root_changed, i = true, 3 end
  local entries, devs, ndevs = {}, {}, 0
  while true do
    local f = fields[i]
    if f == nil then return nil end
    if f == "E" then return entries, info end
    if f == "H" then break end
    if fields[i + FIELDS - 1] == nil then return nil end
    local mark, kind, mode, size, mtime, ino, dev, path, target = table.unpack(fields, i, i + FIELDS - 1)
    local rel = path:match("^%./(.+)$")
    local m, sz, n, d = number(mode, 8, 4095), number(size, 10, math.maxinteger), number(ino, 10, math.maxinteger),
      number(dev, 10, math.maxinteger)
    if (mark ~= "c" and mark ~= "u") or not m or not sz or not mtime_ok(mtime) or not n or not d or not rel
        or not rel_ok(rel, true) then
      return nil
    end
    local k = KINDS[kind] or "other"
    if k == "symlink" and #target > MAX_LINK then return nil end
    if not devs[d] then
      ndevs = ndevs + 1
      if ndevs > MAX_DEVS then return nil end
      devs[d] = true
    end
    entries[rel] = { kind = k, mode = m, size = k == "file" and sz or 0, ino = n, dev = d,
      target = k == "symlink" and target or nil, flags = mark == "c" and 1 or 0 }
    i = i + FIELDS
  end
  i = i + 1
  local sums = {}
  while true do
    local f = fields[i]
    if f == nil then return nil end
    if f == "E" then break end
    if fields[i + 1] == nil then return nil end
    local rel = f:match("^%./(.+)$")
    if not rel or not rel_ok(rel) then return nil end
    local sum = fields[i + 1]
    if #sum >= 64 and sum:sub(1, 64):match("^%x+$") and not sum:sub(65, 65):match("^%x$") then
      sums[#sums + 1] = { rel, sum:sub(1, 64):lower() }
    end
    i = i + 2
  end
  for _, s in ipairs(sums) do
    local e = entries[s[1]]
    if e and e.kind == "file" then e.sha256 = s[2] end
  end
  return entries, info
end

return function(data)
  local ok, tree, info, code = pcall(core.tree_parse_listing, data)
  if not ok then common.fail("tree_parse_listing raised: %s", tostring(tree)) end
  local want, want_info = reference(data)
  if (tree == nil) ~= (want == nil) then
    common.fail("tree_parse_listing gave %s (%s), the format says %s", tree and "a tree" or "nil",
      tostring(info), want and "a tree" or "nil")
  end
  if tree == nil then
    if type(info) ~= "string" or not info:find("^listing: ") or code ~= "EINVAL" then
      common.fail("bad failure: %q, %q", tostring(info), tostring(code))
    end
    return
  end
  if info.incremental ~= want_info.incremental or info.root_changed ~= want_info.root_changed then
    common.fail("the header read differently")
  end
  local n = 0
  for rel, kind, mode, size, ino, dev, target, sha256, flags in
      tree:iter(nil, "kind mode size ino dev target sha256 flags") do
    n = n + 1
    local e = want[rel]
    if not e then common.fail("%q in the tree, not in the format", rel) end
    local got = { kind, mode, size, ino, dev, target, sha256, flags }
    local exp = { e.kind, e.mode, e.size, e.ino, e.dev, e.target, e.sha256, e.flags }
    for k = 1, #exp do
      if got[k] ~= exp[k] then common.fail("%q: field %d is %s, the format says %s", rel, k, tostring(got[k]),
        tostring(exp[k])) end
    end
  end
  local m = 0
  for _ in pairs(want) do m = m + 1 end
  if m ~= n then common.fail("%d entries in the tree, %d in the format", n, m) end
end
