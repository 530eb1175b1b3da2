-- A restore killed with SIGKILL at random moments (in a child `build/ferry -e` process) leaves every file
-- whole — the old version or the new one, never a mix — and a rerun converges on the merged result.
local core = require "ferry.core"
local ferry = require "ferry"
local helpers = require "support.helpers"
local W = require "support.workspaces"

local RUNS = 20
local FILES = 240

local function now_ms()
  return core.now_ms and core.now_ms() or os.clock() * 1000
end

local function chunk(seed, size)
  local unit = string.format("%08x", seed)
  return unit:rep(size // 8 + 1):sub(1, size)
end

-- A workspace of FILES files (16-96 KiB each) in 12 dirs, plus the shapes whose type changes.
local function fill(ws, seed)
  for i = 1, FILES do
    W.write(ws, string.format("d%02d/f%03d.dat", i % 12, i), chunk(seed * 1000 + i, 16384 + (i * 7919) % 81920))
  end
  W.write(ws, "becomes-dir", "a file\n")
  W.write(ws, "becomes-file/inner", "inside\n")
  W.symlink(ws, "link", "d01/f001.dat")
end

-- The sandbox's run: every file rewritten, a fifth deleted, new files, a dir becomes a file and back.
local function agent_edits(root, seed)
  for i = 1, FILES do
    local rel = string.format("d%02d/f%03d.dat", i % 12, i)
    if i % 5 == 0 then
      assert(os.remove(root .. "/" .. rel))
    else
      W.write(root, rel, chunk(seed * 1000 + i + 500, 16384 + (i * 104729) % 81920))
    end
  end
  for i = 1, 20 do W.write(root, string.format("new/n%02d.txt", i), chunk(i, 40000)) end
  assert(os.execute("rm -rf " .. core.sh_quote(root .. "/becomes-file") .. " "
    .. core.sh_quote(root .. "/becomes-dir")))
  W.write(root, "becomes-file", "now a file\n")
  W.write(root, "becomes-dir/inner", "now a dir\n")
  assert(os.remove(root .. "/link"))
  W.symlink(root, "link", "d02/f002.dat")
end

local function versions(...)
  local by_path = {}
  for i = 1, select("#", ...) do
    for rel, e in pairs((select(i, ...))) do
      if e.kind == "file" then
        by_path[rel] = by_path[rel] or {}
        by_path[rel][e.sha256] = true
      end
    end
  end
  return by_path
end

local CHILD = [[
local res, err = require("ferry").restore { state = %q }
if not res then io.stderr:write(err, "\n") os.exit(1) end
]]

-- Run restore in a child killed with SIGKILL after delay_ms; returns the shell's report.
local function killed_restore(state, delay_ms)
  local code = CHILD:format(state)
  local script = string.format("{ %s -e %s & pid=$!; sleep %.3f; kill -9 $pid; wait $pid; echo $?; } 2>/dev/null",
    core.sh_quote(helpers.ferry_bin), core.sh_quote(code), delay_ms / 1000)
  local p = assert(io.popen(script, "r"))
  local out = p:read("a")
  p:close()
  return tonumber(out:match("(%d+)%s*$"))
end

local function timed_restore(state)
  local t0 = now_ms()
  local p = assert(io.popen(core.sh_quote(helpers.ferry_bin) .. " -e " .. core.sh_quote(CHILD:format(state))
    .. "; echo $?", "r"))
  local out = p:read("a")
  p:close()
  assert.equal("0", out:match("(%d+)%s*$"), out)
  return now_ms() - t0
end

describe("restore killed at random points", function()
  it("leaves whole files and converges on rerun (" .. RUNS .. " runs)", function()
    math.randomseed(os.time())
    local duration, lo, hi
    local killed, mid_apply = 0, 0
    for run = 0, RUNS do
      local tmp = helpers.tmpdir()
      local ws, remote, state = tmp .. "/ws", tmp .. "/remote", tmp .. "/state.json"
      fill(ws, run + 1)
      W.mkdir(tmp, "remote")
      assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = remote, state = state })
      local old = W.moved(ws)
      agent_edits(remote, run + 1)
      local expected = W.moved(remote)
      expected[".ferry-runtime"] = nil
      local allowed = versions(old, expected)

      if run == 0 then
        duration = timed_restore(state) -- how long a whole restore takes: the first window for the kills
        lo, hi = duration * 0.2, duration * 1.1
      else
        local delay = lo + (hi - lo) * math.random()
        local status = killed_restore(state, delay)
        if status ~= 0 then killed = killed + 1 end
        -- every file is one of its versions, and the state file still reads
        local now = W.full(ws)
        local new_versions = 0
        for rel, e in pairs(now) do
          if e.kind == "file" then
            assert.is_true(allowed[rel] ~= nil and allowed[rel][e.sha256] == true,
              "run " .. run .. ": " .. rel .. " is neither its old nor its new version")
            local is_new = expected[rel] and expected[rel].sha256 == e.sha256
            if is_new and not (old[rel] and old[rel].sha256 == e.sha256) then new_versions = new_versions + 1 end
          end
        end
        -- aim the kills at the write window: earlier after a restore that finished, later after one that
        -- was killed before it wrote anything
        if status == 0 then
          hi = math.max(delay * 0.9, lo + 10)
        elseif new_versions == 0 then
          lo = math.min(delay, hi - 10)
        else
          mid_apply = mid_apply + 1
        end
        assert(require("ferry.state").read(state))
        local got = assert(ferry.restore { state = state })
        assert.same({}, got.conflicts, "run " .. run)
      end
      local final, temps = W.full(ws)
      assert.same({}, temps)
      assert.same({}, W.diff(expected, final), "run " .. run)
      local again = assert(ferry.restore { state = state })
      assert.same({}, again.changed)
      assert.same({}, again.deleted)
      helpers.rmtree(tmp)
    end
    print(string.format("\nkill spec: a whole restore took %.0f ms; %d of %d runs were killed, %d of them while "
      .. "writing the workspace", duration, killed, RUNS, mid_apply))
    assert.is_true(mid_apply >= 3, "too few restores were killed while writing: " .. mid_apply)
  end)
end)
