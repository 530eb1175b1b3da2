-- Generates the C file that carries the built-in Lua sources.
-- usage: lua5.4 embed.lua OUT.c REL=FILE...   (REL is the path the engine looks the file up by)
local out = assert(io.open(arg[1], "wb"))
out:write('#include "internal.h"\n\n')
local entries = {}
for i = 2, #arg do
  local rel, file = arg[i]:match("^([^=]+)=(.+)$")
  assert(rel, "bad argument: " .. arg[i])
  local f = assert(io.open(file, "rb"))
  local data = f:read("a")
  f:close()
  local name = "file_" .. (i - 1)
  out:write("static const unsigned char ", name, "[] = {")
  for j = 1, #data do
    if j % 24 == 1 then out:write("\n") end
    out:write(data:byte(j), ",")
  end
  out:write("0};\n")
  entries[#entries + 1] = string.format('  {"%s", %s, %d},\n', rel, name, #data)
end
out:write("\nconst ferry_embedded_file ferry_embedded_files[] = {\n", table.concat(entries),
  "  {0, 0, 0}};\n")
out:close()
