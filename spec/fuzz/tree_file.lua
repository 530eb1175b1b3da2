--- Fuzz target: core.tree_load, the reader of the tree files a state keeps (a state dir is the user's, but a
-- file in it may be damaged or written by another version). Contract: any bytes give a tree and its checksum,
-- or nil, "corrupt tree: ...", "EINVAL"; never an error. A tree it gives is sound: entries in strict path
-- order (core.tree_path_less), kinds among file/dir/symlink/other, and its dump loads again to the same
-- entries and the same dump (the format round-trips).
--
-- Input: a flags byte (1: the rest is the whole file, header included; else the rest is a body that gets a
-- well-formed header around it, with the right length and checksum, so that the fuzzer reaches the entry
-- decoder instead of stopping at the checksum), two bytes of entry count (little-endian), then the rest.
-- Seeds: `build/ferry run spec/fuzz/tree_file_seeds.lua` (real trees' bodies, and one whole file).
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/")
local common = dofile(DIR .. "/common.lua")
local core = require "ferry.core"

local KINDS = { file = true, dir = true, symlink = true, other = true }
local FIELDS = "kind mode size mtime_ns ino dev sha256 target flags name"

local function hex_to_bytes(hex)
  return (hex:gsub("..", function(h) return string.char(tonumber(h, 16)) end))
end

-- The file for a body: "FERRYTRE", version 1, entry count, body length, SHA-256 of the body.
local function with_header(count, body)
  return "FERRYTRE" .. string.pack("<I4I8I8", 1, count, #body) .. hex_to_bytes(core.sha256(body)) .. body
end

-- Every entry as one comparable line.
local function entries(tree)
  local out, previous = {}, nil
  for rel, kind, mode, size, mtime, ino, dev, sha256, target, flags, name in tree:iter(nil, FIELDS) do
    if previous and not core.tree_path_less(previous, rel) then
      common.fail("entries out of order: %q then %q", previous, rel)
    end
    if not KINDS[kind] then common.fail("entry %q of kind %q", rel, tostring(kind)) end
    previous = rel
    out[#out + 1] = string.format("%q %s %s %s %s %s %s %s %q %s %q", rel, kind, tostring(mode), tostring(size),
      tostring(mtime), tostring(ino), tostring(dev), tostring(sha256), tostring(target), tostring(flags),
      tostring(name))
  end
  return table.concat(out, "\n")
end

local function load(bytes, what)
  local ok, tree, checksum, code = pcall(core.tree_load, bytes)
  if not ok then common.fail("tree_load raised on %s: %s", what, tostring(tree)) end
  if tree == nil then
    if code ~= "EINVAL" or type(checksum) ~= "string" or not checksum:find("^corrupt tree: ") then
      common.fail("tree_load failed on %s with %q, %q", what, tostring(checksum), tostring(code))
    end
    return nil
  end
  if type(checksum) ~= "string" or not checksum:find("^%x+$") or #checksum ~= 64 then
    common.fail("tree_load gave the checksum %q", tostring(checksum))
  end
  return tree
end

local function check(data)
  local c = common.cursor(data)
  local flags = c.byte()
  local count = c.byte() | c.byte() << 8
  local bytes = flags & 1 == 1 and c.rest() or with_header(count, c.rest())
  local tree = load(bytes, "the input")
  if not tree then return end
  local first = entries(tree)
  local dump = tree:dump()
  local again = load(dump, "its own dump")
  if not again then common.fail("a loaded tree's dump does not load") end
  if entries(again) ~= first then common.fail("a loaded tree's dump loads to other entries") end
  if again:dump() ~= dump then common.fail("the dump of a reloaded tree differs") end
end

return { check = check }
