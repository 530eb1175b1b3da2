-- Large trees in bounded memory: a 100,000-file workspace walked (hashing), written and read back as a
-- tree file, walked again against the first tree, diffed three ways, then dumped to a string and loaded, all
-- in one `ferry` process whose peak RSS stays under 40 MiB (snapshot.take's tables needed over 90 MiB for the
-- walk alone). And the same workspace prepared into a `local` sandbox, prepared again (nothing changed, then
-- 10 files changed) and restored, each by a `ferry` process of its own whose peak RSS stays under 64 MiB (issue
-- 9: 270 to 395 MiB before). Skipped under the sanitizers, whose shadow memory counts in the RSS.
local cjson = require "cjson"
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

-- `ferry VERB ARGS... --json` as the binary runs it (ferry.cli.main), then its peak RSS on stderr.
local CLI = [[
local argv = {}
for i = 1, #arg do argv[i] = arg[i] end
argv[#argv + 1] = "--json"
local code = require("ferry.cli").main(argv)
for l in io.lines("/proc/self/status") do
  local kib = l:match("^VmHWM:%s*(%d+)")
  if kib then io.stderr:write("\nVmHWM " .. kib .. "\n") end
end
os.exit(code)
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

  it("is prepared, prepared again and restored by ferry processes that each stay under 64 MiB", function()
    if os.getenv("FERRY_SANITIZED") then
      pending("the sanitizers' shadow memory counts in the RSS")
      return
    end
    helpers.sh("python3 -c \"import os, time\nold = time.time() - 3600\nfor d in range(1000):\n"
      .. "  os.makedirs('" .. dir .. "/ws/d%d' % d)\n  for f in range(" .. FILES // 1000 .. "):\n"
      .. "    q = '" .. dir .. "/ws/d%d/f%d' % (d, f)\n    open(q, 'w').write('x' * (f * 7 % 300))\n"
      .. "    os.utime(q, (old, old))\n\"")
    helpers.write_file(dir .. "/cli.lua", CLI)
    local function ferry_cli(...)
      local cmd = { helpers.ferry_bin, "run", dir .. "/cli.lua", ... }
      for i, a in ipairs(cmd) do cmd[i] = "'" .. a .. "'" end
      local p = io.popen(table.concat(cmd, " ") .. " 2>" .. dir .. "/stderr")
      local out = p:read("a")
      local ok = p:close()
      local err = helpers.read_file(dir .. "/stderr")
      assert.is_true(ok, err)
      local result = cjson.decode(out:match("([^\n]*)\n?$"))
      return result, tonumber(err:match("VmHWM (%d+)%s*$"))
    end
    local prepare = { "prepare", "-p", "local", "-w", dir .. "/ws", "-r", dir .. "/remote", "--state",
      dir .. "/state.json" }
    local cold, cold_kib = ferry_cli(table.unpack(prepare))
    assert.equal(FILES, cold.files)
    local warm, warm_kib = ferry_cli(table.unpack(prepare))
    assert.same({ true, 0, 0, 1 }, { warm.delta, warm.delta_files, warm.hashed_files, warm.commands })
    for i = 1, 10 do
      local f = assert(io.open(dir .. "/ws/d" .. i .. "/f" .. i, "ab"))
      f:write("changed")
      f:close()
    end
    local ten, ten_kib = ferry_cli(table.unpack(prepare))
    assert.same({ true, 10, 10 }, { ten.delta, ten.delta_files, ten.hashed_files })
    local back, back_kib = ferry_cli("restore", "--state", dir .. "/state.json")
    assert.same({}, back.changed)
    for what, kib in pairs { prepare = cold_kib, warm = warm_kib, ["10 changed"] = ten_kib, restore = back_kib } do
      assert.is_true(kib <= 64 * 1024, what .. ": peak RSS " .. kib .. " KiB")
    end
  end)
end)
