--- Bench: the HTTP bridge (`ferry bridge serve` on loopback, bubblewrap sandboxes per lease where bwrap runs,
-- else local ones) next to the same sandbox reached directly. `require("bench.bridge")` from spec/bench/run.lua,
-- or standalone: `build/ferry run spec/bench/bridge.lua`.
--
-- Rows: sb:exec('true') round trip through the bridge (median of 50) vs the backend provider in a session;
-- a cold 50 MB / 2,000-file prepare through the bridge vs the same prepare on the backend provider directly
-- (medians of REPS interleaved repetitions); the same two through the Cloudflare Worker under Node (its
-- harness) vs a local sandbox; peak RSS (VmHWM) of a client process and of the server process while 1 GiB
-- streams out of a command, and while 1 GiB streams into one.
if not package.path:find("spec/?.lua", 1, true) then package.path = "spec/?.lua;" .. package.path end
local ferry = require "ferry"
local core = require "ferry.core"
local stats = require "bench.stats"
local bridge = require "support.bridge"
local transport = require "bench.transport"

local M = {}

M.REPS = 5
M.ROUND_TRIPS = 50
M.STREAM_BYTES = 1024 * 1024 * 1024

local function sh(script, ...)
  local res = assert(ferry.proc.run { argv = { "sh", "-c", script, "sh", ... }, timeout_ms = 600000 })
  assert(res.code == 0, script .. ": " .. res.stderr)
  return res.stdout
end

local function vmhwm_mib(pid)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return nil end
  local kib = f:read("a"):match("VmHWM:%s*(%d+)")
  f:close()
  return tonumber(kib) / 1024
end

local function median_ms(n, fn)
  local times = {}
  for i = 1, n do
    local t0 = core.now_ms()
    fn()
    times[i] = core.now_ms() - t0
  end
  return stats.median(times)
end

local function round_trips(f, b, root)
  local sb = assert(ferry.open(b:provider { name = "rtt" }))
  assert(sb:exec("true"))
  f.bridge_exec_ms = median_ms(M.ROUND_TRIPS, function() assert(sb:exec("true")).code = 0 end)
  sb:close()
  local direct = b.template:gsub("{lease}", "direct-rtt"):gsub("^cmd:env FERRY_LEASE_DIR=", "cmd:env X=")
  local dsb = assert(ferry.open(direct, { session = true }))
  assert(dsb:exec("true"))
  f.direct_exec_ms = median_ms(M.ROUND_TRIPS, function() assert(dsb:exec("true")) end)
  dsb:close()
  f.rtt_backend = direct
  assert(root)
end

-- One cold prepare of `ws`; the sandbox's copy is removed afterwards. Returns the milliseconds it took.
local function cold_prepare(provider, ws, state, remote_dir)
  local t0 = core.now_ms()
  local res = assert(ferry.prepare { provider = provider, workspace = ws, state = state, delta = false,
    remote_dir = remote_dir })
  local ms = core.now_ms() - t0
  local sb = assert(ferry.open(res.provider))
  assert(sb:rm(res.remote_dir))
  sb:close()
  return ms
end

local function prepares(f, b, root)
  local ws = root .. "/ws"
  transport.generate(ws, transport.WS_BYTES, transport.WS_FILES, 11)
  local direct = b.template:gsub("{lease}", "direct-prepare")
  local through, straight = {}, {}
  for rep = 1, M.REPS do
    local provider = b:provider { name = "prepare" .. rep }
    local order = rep % 2 == 0 and { "bridge", "direct" } or { "direct", "bridge" }
    for _, which in ipairs(order) do
      if which == "bridge" then
        through[#through + 1] = cold_prepare(provider, ws, root .. "/bridge" .. rep .. ".json")
      else
        straight[#straight + 1] = cold_prepare(direct, ws, root .. "/direct" .. rep .. ".json")
      end
    end
  end
  f.bridge_prepare_ms, f.direct_prepare_ms = stats.median(through), stats.median(straight)
  f.prepare_backend = direct
end

-- A child ferry process streaming 1 GiB out of (or into) a command through the bridge; it prints its VmHWM.
local CHILD = [[
local ferry = require "ferry"
local sb = assert(ferry.open(%q))
local n, res, err = 0, nil, nil
if %s then
  res, err = sb:exec("head -c %d /dev/zero", { on_stdout = function(c) n = n + #c end })
else
  local block, left = string.rep("z", 256 * 1024), %d
  res, err = sb:exec("wc -c", { stdin = function()
    if left <= 0 then return nil end
    left = left - #block
    return block
  end })
  n = res and tonumber(res.stdout) or 0
end
assert(res and res.code == 0, tostring(err))
local status = io.open("/proc/self/status"):read("a")
print(string.format("bytes %%d VmHWM %%s", n, status:match("VmHWM:%%s*(%%d+)")))
]]

local function stream(f, key, root, template, out)
  local b = bridge.start { template = template, root = root }
  local ok, err = pcall(function()
    local provider = b:provider { name = "stream" }
    local t0 = core.now_ms()
    local res = assert(ferry.proc.run { argv = { "build/ferry", "-e", string.format(CHILD, provider, tostring(out),
      M.STREAM_BYTES, M.STREAM_BYTES) }, timeout_ms = 600000 })
    local ms = core.now_ms() - t0
    local bytes, kib = res.stdout:match("bytes (%d+) VmHWM (%d+)")
    assert(bytes, "the child printed nothing: " .. res.stdout .. res.stderr)
    assert(tonumber(bytes) == M.STREAM_BYTES, "streamed " .. bytes .. " bytes")
    f[key .. "_client_mib"] = tonumber(kib) / 1024
    f[key .. "_server_mib"] = vmhwm_mib(b.pid)
    f[key .. "_mb_s"] = M.STREAM_BYTES / 1e6 / (ms / 1000)
  end)
  b:stop()
  if not ok then error(err, 0) end
end

-- The Cloudflare Worker under Node (its harness; sandboxes run commands on this host): round trip and a cold
-- prepare, next to a direct local sandbox (`cmd:`, the same kind of backend).
local function worker(f, root)
  local missing = bridge.worker_missing()
  if missing then
    f.worker_missing = missing
    return
  end
  local w = bridge.start { kind = "worker", root = root }
  local ok, err = pcall(function()
    local sb = assert(ferry.open(w:provider { name = "rtt" }))
    assert(sb:exec("true"))
    f.worker_exec_ms = median_ms(M.ROUND_TRIPS, function() assert(sb:exec("true")) end)
    sb:close()
    local dsb = assert(ferry.open("cmd:env X=1", { session = true }))
    f.local_exec_ms = median_ms(M.ROUND_TRIPS, function() assert(dsb:exec("true")) end)
    dsb:close()
    local ws = root .. "/ws"
    local through, straight = {}, {}
    for rep = 1, M.REPS do
      through[rep] = cold_prepare(w:provider { name = "prepare" .. rep }, ws, root .. "/worker" .. rep .. ".json")
      straight[rep] = cold_prepare("cmd:env X=1", ws, root .. "/local" .. rep .. ".json", root .. "/direct-local")
    end
    f.worker_prepare_ms, f.local_prepare_ms = stats.median(through), stats.median(straight)
  end)
  w:stop()
  if not ok then error(err, 0) end
end

--- Run every row; a failing part leaves error_<part> and the others still run.
function M.run()
  local shm = core.fs_stat("/dev/shm")
  local root = assert(core.fs_mkdtemp((shm and shm.kind == "dir" and "/dev/shm" or "/tmp") .. "/ferry-bench-bridge-"))
  local template = bridge.sandbox_template()
  local f = { template = template, root = root }
  local b = bridge.start { template = template, root = root }
  for _, part in ipairs { { "rtt", round_trips }, { "prepare", prepares } } do
    local ok, err = pcall(part[2], f, b, root)
    if not ok then f["error_" .. part[1]] = tostring(err) end
  end
  b:stop()
  local wok, werr = pcall(worker, f, root)
  if not wok then f.error_worker = tostring(werr) end
  for _, part in ipairs { { "out", true }, { "in", false } } do
    local ok, err = pcall(stream, f, "stream_" .. part[1], root, template, part[2])
    if not ok then f["error_stream_" .. part[1]] = tostring(err) end
  end
  sh('chmod -R u+rwx "$1" 2>/dev/null; rm -rf "$1"', root)
  return f
end

local function verdict(value, limit)
  if not value then return "" end
  return value <= limit and " ok" or string.format(" MISSED by %.0f%%", (value / limit - 1) * 100)
end

--- Print the summary table `name | bridge | baseline | ratio | goal`.
function M.report(f)
  print(string.format("bridge: ferry bridge serve on loopback, sandboxes %s; dirs in %s", f.template, f.root))
  print("\n| name | bridge | baseline | ratio | goal |")
  print("|---|---|---|---|---|")
  local function row(...) print("| " .. table.concat({ ... }, " | ") .. " |") end
  if f.bridge_exec_ms then
    row(string.format("round trip `sb:exec('true')` through the bridge (median of %d) vs the backend in a session",
      M.ROUND_TRIPS), string.format("%.1f ms", f.bridge_exec_ms), string.format("%.1f ms", f.direct_exec_ms),
      string.format("%.2f", f.bridge_exec_ms / f.direct_exec_ms), "<= 5 ms" .. verdict(f.bridge_exec_ms, 5))
  end
  if f.bridge_prepare_ms then
    local ratio = f.bridge_prepare_ms / f.direct_prepare_ms
    row(string.format("cold prepare 50 MB / 2,000 files through the bridge vs directly (median of %d)", M.REPS),
      string.format("%.2f s", f.bridge_prepare_ms / 1000), string.format("%.2f s", f.direct_prepare_ms / 1000),
      string.format("%.2f", ratio), "<= 1.3" .. verdict(ratio, 1.3))
  end
  if f.worker_exec_ms then
    row(string.format("round trip `sb:exec('true')` through the Worker under Node (median of %d) vs a local "
      .. "sandbox in a session", M.ROUND_TRIPS), string.format("%.1f ms", f.worker_exec_ms),
      string.format("%.1f ms", f.local_exec_ms), string.format("%.2f", f.worker_exec_ms / f.local_exec_ms), "-")
  end
  if f.worker_prepare_ms then
    row(string.format("cold prepare 50 MB / 2,000 files through the Worker under Node vs a local sandbox "
      .. "(median of %d)", M.REPS), string.format("%.2f s", f.worker_prepare_ms / 1000),
      string.format("%.2f s", f.local_prepare_ms / 1000),
      string.format("%.2f", f.worker_prepare_ms / f.local_prepare_ms), "-")
  end
  if f.worker_missing then print("worker rows skipped: " .. f.worker_missing) end
  for _, dir in ipairs { "out", "in" } do
    local k = "stream_" .. dir
    if f[k .. "_client_mib"] then
      row(string.format("peak RSS streaming 1 GiB %s a command: client / server (%.0f MB/s)",
        dir == "out" and "out of" or "into", f[k .. "_mb_s"]),
        string.format("%.1f / %.1f MiB", f[k .. "_client_mib"], f[k .. "_server_mib"]), "-", "-",
        "<= 64 MiB each" .. verdict(math.max(f[k .. "_client_mib"], f[k .. "_server_mib"]), 64))
    end
  end
  for _, part in ipairs { "rtt", "prepare", "worker", "stream_out", "stream_in" } do
    if f["error_" .. part] then print(string.format("bridge %s FAILED: %s", part, f["error_" .. part])) end
  end
end

if arg and arg[0] and arg[0]:match("bench/bridge%.lua$") then
  M.report(M.run())
end

return M
