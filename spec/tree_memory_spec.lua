-- Large trees in bounded memory: a 100,000-file workspace walked (hashing), written and read back as a
-- tree file, walked again against the first tree, diffed three ways, then dumped to a string and loaded, all
-- in one `ferry` process whose peak RSS stays under 40 MiB (snapshot.take's tables needed over 90 MiB for the
-- walk alone). Skipped under the sanitizers, whose shadow memory counts in the RSS.
local helpers = require "support.helpers"

local FILES = 100000
local LIMIT_KIB = 40 * 1024

local CHILD = [[
package.path = "]] .. helpers.root .. [[/spec/?.lua;" .. package.path
local core = require "ferry.core"
local hwm = require("support.trees").peak_rss_kib
local root, file = arg[1], arg[2]
local a, info = assert(core.tree_walk(root, { hash = true }))
assert(info.files == ]] .. FILES .. [[ and info.hashed == ]] .. FILES .. [[)
assert(a:write(file))
local b = assert(core.tree_read(file))
for i = 1, 10 do
  local f = assert(io.open(root .. "/d" .. i .. "/f" .. i, "ab"))
  f:write("changed")
  f:close()
end
local c, info2 = assert(core.tree_walk(root, { hash = true, known = a }))
local paths, sides = core.tree_diff(a, b, c)
a, b = nil, nil
collectgarbage()
local again = assert(core.tree_load(c:dump()))
print(#paths, sides[1], info2.files, again:count(), hwm())
]]

describe("a 100,000-file tree", function()
  local dir
  before_each(function()
    local p = io.popen("mktemp -d " .. (io.open("/dev/shm", "r") and "/dev/shm" or "/tmp") .. "/ferry-spec.XXXXXX")
    dir = p:read("l")
    p:close()
  end)
  after_each(function()
    assert(dir:match("^/dev/shm/ferry%-spec%.") or dir:match("^/tmp/ferry%-spec%."))
    helpers.sh("rm -rf '" .. dir .. "'")
  end)

  it("is walked, written, read, walked again and diffed three ways in under 40 MiB", function()
    if os.getenv("FERRY_SANITIZED") then
      pending("the sanitizers' shadow memory counts in the RSS")
      return
    end
    helpers.sh("python3 -c \"import os\nfor d in range(1000):\n  os.makedirs('" .. dir .. "/ws/d%d' % d)\n"
      .. "  for f in range(" .. FILES // 1000 .. "):\n"
      .. "    open('" .. dir .. "/ws/d%d/f%d' % (d, f), 'w').write('x' * (f * 7 % 300))\n\"")
    helpers.write_file(dir .. "/child.lua", CHILD)
    local p = io.popen(helpers.ferry_bin .. " run " .. dir .. "/child.lua " .. dir .. "/ws " .. dir .. "/a.tree")
    local out = p:read("a")
    assert.is_true(p:close())
    local changed, side, files, count, kib = out:match("^(%d+)\t(%d+)\t(%d+)\t(%d+)\t(%d+)")
    assert.equal("10", changed)
    assert.equal("2", side)
    assert.equal(tostring(FILES), files)
    assert.equal(tostring(FILES + 1000), count)
    assert.is_true(tonumber(kib) <= LIMIT_KIB, "peak RSS " .. kib .. " KiB")
  end)
end)
