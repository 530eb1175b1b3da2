--- Bench: a 100,000-file workspace (small files in 1,000 dirs, like a monorepo without its dependency dirs)
-- prepared into and restored from a `local` sandbox by the `ferry` binary, next to the raw `tar -c | tar -x`
-- pipe (issue 9's goals): cold prepare, warm prepare with nothing changed and with 10 files changed,
-- restore with nothing changed and with 10 sandbox-side changes; the state's size; each operation's peak RSS
-- (VmHWM of the ferry process). Not part of `make test`; part of `make bench`, or standalone:
-- `build/ferry run spec/bench/scale.lua` (SCALE_FILES, SCALE_REPS override the size and the repetitions).
--
-- Every operation runs in a `ferry` child of its own: `ferry run scale.lua --cli VERB ARGS...` runs the CLI as
-- the binary does (ferry.cli.main) and prints its VmHWM last on stderr. Times are medians of REPS runs.
if not package.path:find("spec/?.lua", 1, true) then package.path = "spec/?.lua;" .. package.path end
local core = require "ferry.core"
local stats = require "bench.stats"

local M = {}

M.FILES = math.tointeger(tonumber(os.getenv("SCALE_FILES") or "")) or 100000
M.PER_DIR = 100
M.REPS = math.tointeger(tonumber(os.getenv("SCALE_REPS") or "")) or 5

local BIN = (os.getenv("PWD") or ".") .. "/build/ferry"
local SELF = (os.getenv("PWD") or ".") .. "/spec/bench/scale.lua"
local q = core.sh_quote

local function peak_rss_kib()
  for l in io.lines("/proc/self/status") do
    local kib = l:match("^VmHWM:%s*(%d+)")
    if kib then return tonumber(kib) end
  end
end

local function sh(cmd)
  assert(os.execute(cmd), "command failed: " .. cmd)
end

-- Run `ferry VERB ARGS... --json` in a child: ms, VmHWM KiB, the result object.
local function ferry_cli(args)
  local argv = { BIN, "run", SELF, "--cli" }
  table.move(args, 1, #args, #argv + 1, argv)
  argv[#argv + 1] = "--json"
  local t0 = core.now_ms()
  local res = assert(require("ferry").proc.run { argv = argv, max_output = 1 << 30 })
  local ms = core.now_ms() - t0
  local kib = tonumber((res.stderr or ""):match("VmHWM (%d+)%s*$"))
  local last = (res.stdout or ""):match("([^\n]*)\n?$")
  local ok, obj = pcall(require("cjson").decode, last or "")
  assert(res.code == 0 or res.code == 3, table.concat(args, " ") .. " failed: " .. tostring(res.stderr)
    .. tostring(last))
  return ms, kib, ok and obj or {}
end

local function timed_shell(cmd)
  local t0 = core.now_ms()
  sh(cmd)
  return core.now_ms() - t0
end

-- Write 10 files of the tree under `root` (the same 10 each time, new content).
local function touch_ten(root, round)
  for i = 1, 10 do
    local d = (i * 97) % (M.FILES // M.PER_DIR)
    local path = string.format("%s/pkg%d/mod%03d/file%03d.txt", root, d % 10, d, i)
    local f = assert(io.open(path, "wb"))
    f:write(string.format("changed in round %d, file %d\n", round, i))
    f:close()
  end
end

local function du(paths)
  local n = 0
  for _, p in ipairs(paths) do
    local st = core.fs_lstat(p)
    n = n + (st and st.size or 0)
  end
  return n
end

local function setup(dir)
  return stats.make_workspace(dir, M.FILES, M.PER_DIR)
end

local function median_of(list, field)
  local xs = {}
  for i, r in ipairs(list) do xs[i] = r[field] end
  return stats.median(xs)
end

local function max_of(list, field)
  local m = 0
  for _, r in ipairs(list) do m = math.max(m, r[field] or 0) end
  return m
end

-- /dev/shm when it has room for the workspace, the sandbox's copy and the raw pipe's (a page a small file, ~1.2
-- GiB for 100,000 files; 2 GiB asked), else /tmp (disk writeback then weighs on every figure).
local function shm_has_room()
  local p = io.popen("df -Pk /dev/shm 2>/dev/null")
  local out = p:read("a")
  p:close()
  local avail = tonumber(out:match("\n%S+%s+%d+%s+%d+%s+(%d+)"))
  return avail ~= nil and avail * 1024 >= 2 * 1024 ^ 3 * M.FILES / 100000
end

function M.run()
  local root = shm_has_room() and "/dev/shm" or "/tmp"
  local p = io.popen("mktemp -d " .. root .. "/ferry-bench-scale.XXXXXX")
  local dir = p:read("l")
  p:close()
  local ws, remote, state, copy = dir .. "/ws", dir .. "/remote", dir .. "/state.json", dir .. "/copy"
  local prep = { "prepare", "-p", "local", "-w", ws, "-r", remote, "--state", state }
  local rest = { "restore", "--state", state }
  local ok, f = pcall(function()
    local f = { root = root, made_ms = setup(dir), raw = {}, cold = {}, warm0 = {}, warm10 = {}, restore0 = {},
      restore10 = {} }
    -- the raw pipe runs right before each ferry run, so that both see the same load of a shared machine
    local function raw()
      sh("rm -rf " .. q(copy) .. " && mkdir " .. q(copy))
      f.raw[#f.raw + 1] = { ms = timed_shell("tar -C " .. q(ws) .. " -cf - . | tar -C " .. q(copy) .. " -xf -") }
      sh("rm -rf " .. q(copy))
    end
    local function op(list, args, before)
      for i = 1, M.REPS do
        raw()
        if before then before(i) end
        local ms, kib, res = ferry_cli(args)
        list[i] = { ms = ms, kib = kib, res = res }
      end
    end
    op(f.cold, prep, function() sh("rm -rf " .. q(remote) .. " " .. q(state) .. "*") end)
    op(f.warm0, prep)
    op(f.warm10, prep, function(i) touch_ten(ws, i) end)
    op(f.restore0, rest)
    op(f.restore10, rest, function(i) touch_ten(remote, 100 + i) end)
    local st = require("ferry.state").read(state)
    local files = { state }
    for which, sum in pairs(st and st.trees or {}) do
      files[#files + 1] = require("ferry.state").tree_path(state, which, sum)
    end
    f.state_bytes = du(files)
    return f
  end)
  sh("rm -rf " .. q(dir))
  if not ok then error(f, 0) end
  return f
end

local function secs(ms) return string.format("%.2f s", ms / 1000) end
local function mib(kib) return kib and string.format("%.1f MiB", kib / 1024) or "?" end

function M.report(f)
  local raw = median_of(f.raw, "ms")
  print(string.format("scale: %d files in %d dirs on `local`, in %s (made in %.1f s); medians of %d runs, each a "
    .. "`ferry` process of its own; raw `tar -c | tar -x` %s (median of %d runs, one right before each ferry run)",
    M.FILES, M.FILES // M.PER_DIR, f.root, f.made_ms / 1000, M.REPS, secs(raw), #f.raw))
  print("\n| measure | ferry | raw pipe | ratio | peak RSS | commands | goal |")
  print("|---|---|---|---|---|---|---|")
  local rows = {
    { "cold prepare", f.cold, 2 },
    { "warm prepare, nothing changed", f.warm0, 0.25 },
    { "warm prepare, 10 files changed", f.warm10 },
    { "restore, nothing changed", f.restore0, 2 },
    { "restore, 10 files changed in the sandbox", f.restore10 },
  }
  for _, r in ipairs(rows) do
    local ms, kib = median_of(r[2], "ms"), max_of(r[2], "kib")
    local ratio = ms / raw
    local goal = r[3] and string.format("≤ %gx and ≤ 64 MiB %s", r[3],
      (ratio <= r[3] and kib <= 65536) and "ok" or "missed") or string.format("≤ 64 MiB %s",
      kib <= 65536 and "ok" or "missed")
    print(string.format("| %s | %s | %s | %.2f | %s | %s | %s |", r[1], secs(ms), secs(raw), ratio, mib(kib),
      string.format("%d", r[2][#r[2]].res.commands or 0), goal))
  end
  local runs = {}
  for _, r in ipairs(rows) do
    local xs = {}
    for i, run in ipairs(r[2]) do xs[i] = string.format("%.2f", run.ms / 1000) end
    runs[#runs + 1] = r[1] .. " " .. table.concat(xs, " ")
  end
  local xs = {}
  for i, run in ipairs(f.raw) do xs[i] = string.format("%.2f", run.ms / 1000) end
  runs[#runs + 1] = "raw pipe " .. table.concat(xs, " ")
  print("\nruns (s): " .. table.concat(runs, "; "))
  print(string.format("\nstate: %.1f MB (JSON and its two trees); warm prepare, 10 changed: %d entries sent; "
    .. "restore, 10 changed: %d changed", f.state_bytes / 1e6, f.warm10[#f.warm10].res.delta_files or 0,
    #(f.restore10[#f.restore10].res.changed or {})))
end

if arg and arg[1] == "--cli" then
  local argv = {}
  for i = 2, #arg do argv[#argv + 1] = arg[i] end
  local code = require("ferry.cli").main(argv)
  io.stderr:write(string.format("\nVmHWM %d\n", peak_rss_kib()))
  os.exit(code)
elseif arg and arg[0] and arg[0]:match("bench/scale%.lua$") then
  M.report(M.run())
end

return M
