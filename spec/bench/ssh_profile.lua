--- Profile of one cold prepare over ssh (loopback sshd), phase by phase, next to the raw pipe:
-- `build/ferry run spec/bench/ssh_profile.lua [REPS]`.
--
-- Host side: ferry's own timestamps (the prepare's progress phases, the first stdin byte sent and the last, the
-- command's end). Sandbox side: `strace -f -tt -e trace=execve,exit_group` attached to sshd and its
-- connection processes while the prepare runs, so every program the sandbox starts (sh, dd, tar, find, ...)
-- appears with its start and end time. Prints one timeline per run (ms since the prepare started), then the
-- medians of the host-side phases over REPS runs without strace.
if not package.path:find("spec/?.lua", 1, true) then package.path = "spec/?.lua;" .. package.path end
local ferry = require "ferry"
local core = require "ferry.core"
local stats = require "bench.stats"
local transport = require "bench.transport"

local M = {}

local q = core.sh_quote

local function run(argv, opts)
  opts = opts or {}
  opts.argv = argv
  local res, err = ferry.proc.run(opts)
  assert(res, err)
  return res
end

local function sh(script, ...)
  local res = run { "sh", "-c", script, "sh", ... }
  assert(res.code == 0, script .. ": " .. res.stderr)
  return res
end

-- Every pid of sshd's tree: the daemon and its connection processes (strace -f follows only new children).
local function sshd_pids(root)
  local pids, parent = { root }, {}
  for _, name in ipairs(core.fs_readdir("/proc") or {}) do
    local f = name:match("^%d+$") and io.open("/proc/" .. name .. "/stat")
    if f then
      local stat = f:read("a") or ""
      f:close()
      parent[tonumber(name)] = tonumber(stat:match("^%d+ %b() %S+ (%d+)"))
    end
  end
  local changed = true
  local seen = { [root] = true }
  while changed do
    changed = false
    for pid, ppid in pairs(parent) do
      if not seen[pid] and seen[ppid] then
        seen[pid], changed = true, true
        pids[#pids + 1] = pid
      end
    end
  end
  return pids
end

-- A prepare whose phases and stdin bytes are timed (ms since t0).
local function timed_prepare(sb, ws, dir, state)
  local t0 = core.now_ms()
  local marks = {}
  local function mark(name) if not marks[name] then marks[name] = core.now_ms() - t0 end end
  local clock = setmetatable({
    phase = function(_, name) mark("phase " .. name) end,
    advance = function() mark("first byte sent"); marks["last byte sent"] = core.now_ms() - t0 end,
  }, { __index = function() return function() end end })
  local res = assert(ferry.prepare { provider = sb, workspace = ws, remote_dir = dir, state = state,
    adapter = "shell", progress = clock, on_exec = function() mark("first command") end })
  marks["prepare returned"] = core.now_ms() - t0
  return marks, res, t0
end

local function wall_ms(hms)
  local h, m, s = hms:match("^(%d+):(%d+):([%d.]+)$")
  return ((tonumber(h) * 60 + tonumber(m)) * 60 + tonumber(s)) * 1000
end

-- The sandbox's programs from an strace log: {name, start, end} in ms since `t0_wall` (wall clock ms).
local function sandbox_programs(log, t0_wall)
  local started, out = {}, {}
  for line in log:gmatch("[^\n]+") do
    local pid, t, rest = line:match("^(%d+)%s+(%d+:%d+:[%d.]+) (.*)$")
    if pid then
      local ms = wall_ms(t) - t0_wall
      local prog = rest:match('^execve%("([^"]+)"')
      if prog and not rest:find("= %-1") then
        if started[pid] then started[pid].finish = ms end -- an exec replacing another program
        local e = { name = prog:match("[^/]+$"), start = ms, argv = rest:match("%[(.-)%]") or "" }
        started[pid] = e
        out[#out + 1] = e
      elseif rest:find("^exit_group") or rest:find("^%+%+%+ exited") then
        if started[pid] and not started[pid].finish then started[pid].finish = ms end
      end
    end
  end
  return out
end

local function print_timeline(marks, programs)
  local rows = {}
  for name, ms in pairs(marks) do rows[#rows + 1] = { ms, "host", name } end
  for _, p in ipairs(programs) do
    if p.name ~= "sshd" then
      rows[#rows + 1] = { p.start, "sandbox", string.format("%-6s %7.1f ms  %s", p.name,
        (p.finish or p.start) - p.start, p.argv:sub(1, 70)) }
    end
  end
  table.sort(rows, function(a, b) return a[1] < b[1] end)
  for _, r in ipairs(rows) do print(string.format("%8.1f  %-7s %s", r[1], r[2], r[3])) end
end

--- Run: one traced cold prepare (timeline printed), then `reps` untraced cold prepares and raw pipes.
function M.run(reps)
  reps = reps or 5
  local sshd = require "support.sshd"
  local server = sshd.start()
  local base = assert(core.fs_mkdtemp("/dev/shm/ferry-profile-"))
  sh('chmod 0777 "$1"', base)
  local ok, err = pcall(function()
    local ws = base .. "/ws"
    transport.generate(ws, transport.WS_BYTES, transport.WS_FILES, 50)
    local sb = assert(ferry.open(server:url()))
    local n = 0
    local function next_dir()
      n = n + 1
      return string.format("%s/r%d", base, n), string.format("%s/s%d.json", base, n)
    end
    timed_prepare(sb, ws, next_dir()) -- warm-up: the connection, the page cache
    local log = base .. "/strace.log"
    local argv = { "strace", "-f", "-tt", "-qq", "-o", log, "-e", "trace=execve,exit_group" }
    for _, pid in ipairs(sshd_pids(server.pid)) do
      argv[#argv + 1] = "-p"
      argv[#argv + 1] = tostring(pid)
    end
    local tracer_pid
    local tracer = ferry.spawn(function() return run(argv, { on_spawn = function(p) tracer_pid = p end }) end)
    ferry.sleep(500) -- strace attached
    local utc_offset_s = os.time(os.date("*t")) - os.time(os.date("!*t"))
    local t0_wall = (core.time_ms() + utc_offset_s * 1000) % 86400000 -- strace -tt prints the local time of day
    local marks = timed_prepare(sb, ws, next_dir())
    ferry.sleep(200)
    run { "kill", "-INT", tostring(tracer_pid) }
    ferry.wait(tracer)
    local f = assert(io.open(log))
    local text = f:read("a")
    f:close()
    print("one cold prepare of 50 MB / 2,000 files over ssh, traced (ms since the prepare started):")
    print_timeline(marks, sandbox_programs(text, t0_wall))
    local phases, raw = {}, {}
    for rep = 1, reps do
      local dir, state = next_dir()
      local m = timed_prepare(sb, ws, dir, state)
      for k, v in pairs(m) do
        phases[k] = phases[k] or {}
        phases[k][rep] = v
      end
      local raw_dir = next_dir()
      local t0 = core.now_ms()
      local cmd = core.sh_join(sb.provider:command("mkdir -p " .. q(raw_dir) .. " && tar -x -f - -C " .. q(raw_dir)))
      sh('tar -c -f - -C "$1" . | ' .. cmd, ws)
      raw[rep] = core.now_ms() - t0
      sh('rm -rf "$1" "$2"', dir, raw_dir)
    end
    print(string.format("\nmedians of %d untraced runs (ms since the prepare started):", reps))
    local names = {}
    for k in pairs(phases) do names[#names + 1] = k end
    table.sort(names, function(a, b) return stats.median(phases[a]) < stats.median(phases[b]) end)
    for _, k in ipairs(names) do print(string.format("%8.1f  %s", stats.median(phases[k]), k)) end
    print(string.format("%8.1f  raw pipe tar -c | ssh tar -x (same connection)", stats.median(raw)))
    sb:close()
  end)
  server:stop()
  sh('rm -rf "$1"', base)
  if not ok then error(err, 0) end
end

if arg and arg[0] and arg[0]:match("bench/ssh_profile%.lua$") then M.run(tonumber(arg[1])) end

return M
