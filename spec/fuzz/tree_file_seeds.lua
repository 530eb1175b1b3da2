-- Writes the seeds of the tree_file fuzz target (spec/fuzz/tree_file.lua) into spec/fuzz/tree_file/: the
-- bodies of a few real trees (after the flags byte 0 and their entry count) and one whole file (flags 1).
-- Run: build/ferry run spec/fuzz/tree_file_seeds.lua
local core = require "ferry.core"

local DIR = debug.getinfo(1, "S").source:match("^@(.*)/") .. "/tree_file"
local SHA = ("ab"):rep(32)

local function put(name, bytes)
  local f = assert(io.open(DIR .. "/" .. name, "wb"))
  f:write(bytes)
  f:close()
end

local function seed(name, entries)
  local t = core.tree_new()
  for _, e in ipairs(entries) do t:add(e[1], e[2]) end
  local dump = t:dump()
  local count = #t
  put(name, string.char(0, count & 255, count >> 8) .. dump:sub(61))
  return dump
end

os.execute("mkdir -p '" .. DIR .. "'")
seed("empty", {})
seed("files", {
  { "a.txt", { kind = "file", mode = 420, size = 3, mtime_ns = 1700000000123456789, ino = 12, dev = 2049 } },
  { "b", { kind = "dir", mode = 493, ino = 13, dev = 2049 } },
  { "b/c.lua", { kind = "file", mode = 420, size = 10, mtime = 1700000001, ino = 14, dev = 2049, sha256 = SHA } },
})
local whole = seed("links-and-devices", {
  { "d", { kind = "dir", mode = 493, dev = 1 } },
  { "d/link", { kind = "symlink", mode = 511, target = "../x/y", dev = 2 } },
  { "d/sub", { kind = "dir", mode = 448, dev = 3 } },
  { "d/sub/deep name", { kind = "file", mode = 384, size = 1 << 40, dev = 3 } },
  { "e", { kind = "other", mode = 420 } },
})
put("whole-file", "\1\0\0" .. whole)
