--- Fuzz target: ferry.remote.parse_listing, the parser of the remote tree listing a (hostile) sandbox prints
-- for a delta prepare. Contract: any bytes give a table or nil ("cut short or malformed"), never an error;
-- a table holds rel -> {kind in file|dir|symlink|other, mode (decimal digits), size, mtime, target (strings),
-- sha256 (64 lowercase hex digits, files only)}. Checked against a second parser written from the format
-- (NUL-terminated fields: 6 per record, then optionally "H" and path/hash pairs, then "E").
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/")
local common = dofile(DIR .. "/common.lua")
local remote = require "ferry.remote"

local KINDS = { f = "file", d = "dir", l = "symlink" }
local FIELDS = 6

-- The reference: split into NUL-terminated fields (a trailing piece without its NUL is not a field).
local function reference(text)
  local fields = {}
  for field in text:gmatch("([^\0]*)\0") do fields[#fields + 1] = field end
  local entries, i, hashing = {}, 1, false
  while true do
    local f = fields[i]
    if f == nil then return nil end
    if f == "E" then return entries end
    if f == "H" and not hashing then
      hashing, i = true, i + 1
    elseif hashing then
      if fields[i + 1] == nil then return nil end
      local rel = f:match("^%./(.+)$")
      if not rel then return nil end
      local sum = fields[i + 1]:match("^(%x+)")
      local e = entries[rel]
      if e and e.kind == "file" and sum and #sum == 64 then e.sha256 = sum:lower() end
      i = i + 2
    else
      if fields[i + FIELDS - 1] == nil then return nil end
      local kind, mode, size, mtime, path, target = table.unpack(fields, i, i + FIELDS - 1)
      local rel = path:match("^%./(.+)$")
      if not rel or not mode:match("^%d+$") then return nil end
      entries[rel] = { kind = KINDS[kind] or "other", mode = mode, size = size, mtime = mtime, target = target }
      i = i + FIELDS
    end
  end
end

local VALID_KIND = { file = true, dir = true, symlink = true, other = true }

local function check_entry(rel, e)
  if type(rel) ~= "string" or rel == "" then common.fail("bad key %q", tostring(rel)) end
  if type(e) ~= "table" or not VALID_KIND[e.kind] then common.fail("bad entry for %q", rel) end
  if type(e.mode) ~= "string" or not e.mode:match("^%d+$") then common.fail("bad mode for %q", rel) end
  for _, k in ipairs { "size", "mtime", "target" } do
    if type(e[k]) ~= "string" then common.fail("%s of %q is a %s", k, rel, type(e[k])) end
  end
  if e.sha256 ~= nil and (e.kind ~= "file" or not e.sha256:match("^[0-9a-f]+$") or #e.sha256 ~= 64) then
    common.fail("bad sha256 for %q: %q", rel, tostring(e.sha256))
  end
end

local function same(a, b)
  for rel, e in pairs(a) do
    local o = b[rel]
    if not o then return false, rel end
    for _, k in ipairs { "kind", "mode", "size", "mtime", "target", "sha256" } do
      if e[k] ~= o[k] then return false, rel end
    end
  end
  for rel in pairs(b) do
    if not a[rel] then return false, rel end
  end
  return true
end

return function(data)
  local ok, entries = pcall(remote.parse_listing, data)
  if not ok then common.fail("parse_listing raised: %s", tostring(entries)) end
  local want = reference(data)
  if (entries == nil) ~= (want == nil) then
    common.fail("parse_listing gave %s, the format says %s", entries and "a table" or "nil",
      want and "a table" or "nil")
  end
  if entries == nil then return end
  if type(entries) ~= "table" then common.fail("parse_listing returned a %s", type(entries)) end
  for rel, e in pairs(entries) do check_entry(rel, e) end
  local equal, where = same(entries, want)
  if not equal then common.fail("parse_listing and the format disagree about %q", where) end
end
