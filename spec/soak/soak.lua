--- `make soak`: hundreds of prepare / edit / restore cycles through the `ferry` binary on local and bwrap
-- sandboxes, checking after each one that nothing was lost (see README "Soak").
--
-- Each cycle, on one lane (a workspace, a sandbox, a state file): prepare (now and then SIGKILLed at a random
-- moment, then run again), the sandbox made equal to the host checked; random edits in the sandbox and on the
-- host; now and then a hostile sandbox whose `tar` sends a crafted archive (refused, host untouched); restore
-- (now and then SIGKILLed, every file then checked whole, then run again); then the host tree is compared
-- with the merge the soak's model predicts: every host edit survives, every sandbox change lands or is a
-- conflict with PATH.ferry-remote holding it, nothing else appears, no temp file or spool is left.
-- SOAK_RACES=1 adds what today's main gets wrong (issue 8 items 1 and 8): host edits while restore runs and a
-- prepare racing a restore.
--
-- Environment: SOAK_CYCLES (300), SOAK_SEED (the time), SOAK_RACES (0), SOAK_PROVIDERS ("local,bwrap"; bwrap
-- is left out when it cannot run here), SOAK_FILES (40), SOAK_KEEP=1 keeps the temp dir. Exit 1 on any
-- violation; the summary says how to reproduce it.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/")
local ferry = require "ferry"
local core = require "ferry.core"
local cjson = require "cjson"
local tree = dofile(DIR .. "/tree.lua")
local checks = dofile(DIR .. "/checks.lua")

local function env_int(name, default)
  local v = os.getenv(name)
  local n = v and v ~= "" and math.tointeger(tonumber(v))
  if v and v ~= "" and not n then error(name .. " must be a whole number, got " .. v, 0) end
  return n or default
end

local CYCLES = env_int("SOAK_CYCLES", 300)
local SEED = env_int("SOAK_SEED", os.time())
local RACES = env_int("SOAK_RACES", 0) ~= 0
local FILES = env_int("SOAK_FILES", 40)
local ROOT_DIR = os.getenv("PWD")
local FERRY = ROOT_DIR .. "/build/ferry"
local EVIL = ROOT_DIR .. "/spec/support/evil_tar.py"
local EVIL_CASES = { "absolute", "dotdot", "dotdot-inner", "symlink-then-file", "relative-symlink-then-file",
  "symlink-to-etc", "symlink-up", "symlink-chain", "hardlink", "hardlink-outside", "fifo", "chardev", "duplicate" }

local root = assert(core.fs_mkdtemp("ferry-soak-"))
local tmp, outside = root .. "/tmp", root .. "/outside"
assert(core.fs_safe_mkdir(root, "tmp", 448))
assert(core.fs_safe_mkdir(root, "outside", 493))

local stats = { cycles = 0, kills_prepare = 0, kills_restore = 0, host_edits = 0, sandbox_edits = 0,
  race_edits = 0, races = 0, conflicts = 0, hostile = 0, refused = 0, failures = 0 }
local violations = {}
local cycle_no = 0

local function violation(lane, kind, detail)
  violations[#violations + 1] = { kind = kind, lane = lane.name, cycle = cycle_no, detail = detail }
  io.stderr:write(string.format("soak: VIOLATION [%s] %s cycle %d: %s\n", kind, lane.name, cycle_no, detail))
end

local function tail(text)
  text = (text or ""):gsub("%s+$", "")
  return text:sub(-300)
end

---------------------------------------------------------------------------------------------------------------
-- running ferry

-- Run `build/ferry ARGS...`; SIGKILL it after kill_ms when given. Returns the result, whether the kill landed,
-- and how long it ran.
local function run_ferry(args, opts)
  opts = opts or {}
  local argv = { FERRY }
  table.move(args, 1, #args, 2, argv)
  local pid, done = nil, false
  if opts.kill_ms then
    ferry.spawn(function()
      ferry.sleep(opts.kill_ms)
      if not done and pid then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
    end)
  end
  local started = core.now_ms()
  local res, err = ferry.proc.run { argv = argv, timeout_ms = 300000,
    env = { TMPDIR = tmp, PATH = opts.path and opts.path .. ":" .. os.getenv("PATH") or nil, NO_COLOR = "1" },
    on_spawn = function(p) pid = p end }
  done = true
  if not res then error("cannot run ferry: " .. tostring(err), 0) end
  local json = res.stdout and res.stdout:match("([^\n]*)\n?$")
  local ok, obj = pcall(cjson.decode, json or "")
  res.result = ok and type(obj) == "table" and obj or nil
  return res, res.signal == "SIGKILL", core.now_ms() - started
end

local function prepare(lane, kill_ms)
  local res, killed, ms = run_ferry({ "prepare", "-p", lane.provider, "-w", lane.ws, "-r", lane.remote,
    "--state", lane.state, "--json" }, { kill_ms = kill_ms })
  if not killed and res.code == 0 then lane.prepare_ms = math.max(lane.prepare_ms or 0, ms) end
  return res, killed
end

local function restore(lane, kill_ms, path)
  local res, killed, ms = run_ferry({ "restore", "--state", lane.state, "--json" },
    { kill_ms = kill_ms, path = path })
  if not killed and (res.code == 0 or res.code == 3) and not path then
    lane.restore_ms = math.max(lane.restore_ms or 0, ms)
  end
  return res, killed
end

-- A kill moment within what the operation took so far (a little past it now and then: the kill lands late).
local function kill_delay(ms)
  return math.floor((ms or 100) * (0.05 + math.random() * 1.1))
end

---------------------------------------------------------------------------------------------------------------
-- the steps of a cycle

local function files_equal(a, b)
  return #checks.diff(a, b, 1) == 0
end

-- Prepare, killed at random now and then (the host must not change), until one finishes; then the sandbox
-- must hold what the host holds. Returns true when the cycle can go on.
local function prepare_step(lane)
  if lane.prepare_ms and math.random(4) == 1 then
    local res, killed = prepare(lane, kill_delay(lane.prepare_ms))
    if killed then
      stats.kills_prepare = stats.kills_prepare + 1
      local now = tree.read(lane.ws)
      if not files_equal(now, lane.model) then
        violation(lane, "killed prepare changed the host", table.concat(checks.diff(now, lane.model, 3), "; "))
        lane.model = now
      end
    elseif res.code ~= 0 then
      violation(lane, "prepare failed", tail(res.stderr))
    end
  end
  local res = prepare(lane)
  if res.code ~= 0 then
    stats.failures = stats.failures + 1
    violation(lane, "prepare failed", tail(res.stderr))
    return false
  end
  local remote = tree.read(lane.remote_host)
  if not files_equal(remote, lane.model) then
    violation(lane, "sandbox differs from the host after prepare",
      table.concat(checks.diff(remote, lane.model, 3), "; ") .. (lane.last and " (this lane's previous cycle: "
        .. lane.last .. ")" or ""))
  end
  return true
end

-- A hostile sandbox: its `tar` sends a crafted archive. Restore must refuse it and leave the host as it is.
local function hostile_step(lane, H)
  local case = EVIL_CASES[math.random(#EVIL_CASES)]
  local archive = lane.box_host .. "/evil-" .. case .. ".tar"
  if not core.fs_lstat(archive) then
    assert(os.execute("python3 " .. core.sh_quote(EVIL) .. " " .. case .. " " .. core.sh_quote(archive) .. " "
      .. core.sh_quote(outside)))
  end
  assert(core.fs_safe_mkdir(lane.box_host, "fakebin", 493))
  assert(core.fs_safe_write(lane.box_host, "fakebin/tar", "#!/bin/sh\nexec cat " .. core.sh_quote(lane.box_seen
    .. "/evil-" .. case .. ".tar") .. "\n", 493))
  stats.hostile = stats.hostile + 1
  local res = restore(lane, nil, lane.box_seen .. "/fakebin")
  assert(core.fs_safe_remove(lane.box_host, "fakebin/tar"))
  if res.code == 1 and (res.stderr or ""):find("restore refused", 1, true) then
    stats.refused = stats.refused + 1
  else
    violation(lane, "hostile archive not refused", case .. ": exit " .. tostring(res.code) .. ": " .. tail(res.stderr))
  end
  local now = tree.read(lane.ws)
  if not files_equal(now, H) then
    violation(lane, "refused restore changed the host", case .. ": " .. table.concat(checks.diff(now, H, 3), "; "))
  end
  if #(core.fs_readdir(outside) or {}) > 0 then
    violation(lane, "written outside the workspace", case)
    core.fs_remove_tree(outside)
    assert(core.fs_safe_mkdir(root, "outside", 493))
  end
end

-- Host edits while a restore runs (SOAK_RACES): each of a few files (most of them ones the sandbox changed too)
-- is rewritten once at its own random moment within the restore, and one other is deleted. A write before the
-- restore's snapshot makes a conflict, one after the restore's own write simply wins; one in between must not
-- be overwritten either (issue 8, item 8). A rewrite is never of the baseline's own bytes: made before the
-- restore's snapshot, that is no change at all, and the sandbox's version rightly lands (the finding of seed
-- 8802). Returns what each path must be afterwards (false: deleted).
local function race_edits(lane, H, S, B, running)
  local changed, others = {}, {}
  for _, rel in ipairs(tree.sorted_keys(tree.files(H))) do
    if H[rel].kind == "file" then
      if not tree.same(S[rel], B[rel]) then changed[#changed + 1] = rel else others[#others + 1] = rel end
    end
  end
  local span = math.floor(lane.race_ms or (lane.restore_ms or 100) * 3)
  local plan = {}
  for _ = 1, math.min(3, #changed) do
    plan[#plan + 1] = { path = table.remove(changed, math.random(#changed)), at = math.random(0, span) }
  end
  if #others > 0 then
    plan[#plan + 1] = { path = table.remove(others, math.random(#others)), at = math.random(0, span) }
  end
  if #others > 0 then
    plan[#plan + 1] = { path = others[math.random(#others)], at = math.random(0, span), delete = true }
  end
  table.sort(plan, function(x, y) return x.at < y.at end)
  local race, start = {}, core.now_ms()
  for _, e in ipairs(plan) do
    ferry.sleep(math.max(0, e.at - (core.now_ms() - start)))
    if not running() then break end
    if e.delete then
      os.remove(lane.ws .. "/" .. e.path)
      race[e.path] = false
    else
      local data
      repeat data = tree.content() until not (B[e.path] and B[e.path].data == data)
      tree.write(lane.ws, e.path, data, 420)
      race[e.path] = { kind = "file", data = data, mode = 420 }
    end
    stats.race_edits = stats.race_edits + 1
  end
  return race
end

-- A big file the sandbox writes before a race: the restore spends a while extracting it, so the host edits
-- have a window between the restore's snapshot and its writes of the files after it.
local function big_file(lane, S)
  local rel = tree.new_path("big")
  local data = string.format("%08x", math.random(0, 0x7fffffff)):rep(math.random(1, 4) * 512 * 1024)
  tree.write(lane.remote_host, rel, data, 420)
  S[rel] = { kind = "file", data = data, mode = 420 }
  tree.add_dirs(S, rel)
end

local function conflicts_of(res)
  local set = {}
  for _, p in ipairs(res.result and res.result.conflicts or {}) do set[p] = true end
  return set
end

-- Ferry's leftovers in TMPDIR (spools of a restore); removed once reported.
local function check_tmp(lane)
  local names = core.fs_readdir(tmp) or {}
  if #names > 0 then
    violation(lane, "spool or temp dir left in TMPDIR", table.concat(names, ", "))
    for _, n in ipairs(names) do core.fs_remove_tree(tmp .. "/" .. n) end
  end
end

-- Restore and compare with the model's merge. Returns the final check's context.
local function restore_step(lane, B, H, S)
  local race = RACES and math.random(4) == 1
  if race then big_file(lane, S) end
  local expected, conflicts = checks.merge(B, H, S)
  local c = { B = B, H = H, S = S, expected = expected, conflicts = conflicts, killed = false }
  local res
  if race then
    lane.last = "host edits during restore"
    stats.races = stats.races + 1
    local finished, started = false, core.now_ms()
    local t = ferry.spawn(function()
      local r = restore(lane)
      finished = true
      return r
    end)
    c.race = race_edits(lane, H, S, B, function() return not finished end)
    res = ferry.wait(t)
    lane.race_ms = math.max(lane.race_ms or 0, core.now_ms() - started)
  elseif lane.restore_ms and math.random(3) == 1 then
    local killed
    res, killed = restore(lane, kill_delay(lane.restore_ms))
    if killed then
      lane.last = "restore killed"
      stats.kills_restore = stats.kills_restore + 1
      c.killed = true
      for _, v in ipairs(checks.whole(H, S, expected, tree.read(lane.ws))) do violation(lane, v.kind, v.detail) end
      res = restore(lane)
    end
  else
    res = restore(lane)
  end
  if res.code ~= 0 and res.code ~= 3 then
    stats.failures = stats.failures + 1
    violation(lane, "restore failed", "exit " .. tostring(res.code) .. ": " .. tail(res.stderr))
  end
  c.reported = conflicts_of(res)
  c.actual = tree.read(lane.ws)
  return c
end

local function same_any(x, a, b)
  return tree.same(x, a) or tree.same(x, b)
end

-- A prepare and a restore of the same workspace at once (SOAK_RACES). Whatever order they take, no host file
-- the sandbox left alone may change, and the others hold the host's or the sandbox's version.
local function concurrent_step(lane, B, H, S)
  lane.last = "prepare and restore at once"
  stats.races = stats.races + 1
  local delay = math.random(0, math.floor((lane.restore_ms or 100) * 0.8))
  local restore_first = math.random(2) == 1
  local t1 = ferry.spawn(function()
    if not restore_first then ferry.sleep(delay) end
    return (restore(lane))
  end)
  local t2 = ferry.spawn(function()
    if restore_first then ferry.sleep(delay) end
    return (prepare(lane))
  end)
  ferry.wait { t1, t2 }
  local actual = tree.read(lane.ws)
  for _, p in ipairs(tree.sorted_keys(tree.files(actual))) do
    local base = p:sub(-#checks.COPY) == checks.COPY and p:sub(1, -#checks.COPY - 1)
    if not (same_any(actual[p], H[p], S[p]) or (base and tree.same(actual[p], S[base]))) then
      violation(lane, "foreign file after a concurrent prepare and restore", p)
    end
  end
  for _, p in ipairs(tree.sorted_keys(tree.files(H))) do
    if tree.same(S[p], B[p]) and not tree.same(actual[p], H[p]) then
      violation(lane, "host file lost in a concurrent prepare and restore", p .. " is now "
        .. tree.describe(actual[p]))
    end
  end
  return actual
end

---------------------------------------------------------------------------------------------------------------

local function cycle(lane)
  stats.cycles = stats.cycles + 1
  local ok = prepare_step(lane)
  lane.last = nil
  if not ok then
    lane.model = tree.read(lane.ws)
    return
  end
  local B = tree.copy(lane.model)
  local S = tree.read(lane.remote_host)
  local n = math.random(1, 6)
  tree.edit(lane.remote_host, S, n, "s")
  stats.sandbox_edits = stats.sandbox_edits + n
  local H = tree.copy(B)
  n = math.random(0, 5)
  tree.edit(lane.ws, H, n, "h")
  stats.host_edits = stats.host_edits + n
  if math.random(12) == 1 then hostile_step(lane, H) end
  local actual
  if RACES and math.random(8) == 1 then
    actual = concurrent_step(lane, B, H, S)
  else
    local c = restore_step(lane, B, H, S)
    for _, v in ipairs(checks.final(c)) do violation(lane, v.kind, v.detail) end
    stats.conflicts = stats.conflicts + #c.conflicts
    actual = c.actual
  end
  check_tmp(lane)
  -- the user resolves the conflicts: the copies go; what the host holds is the model from here on
  for p in pairs(actual) do
    if p:sub(-#checks.COPY) == checks.COPY then
      os.remove(lane.ws .. "/" .. p)
      actual[p] = nil
    end
  end
  lane.model = actual
end

local function bwrap_works()
  local res = ferry.proc.run { argv = { "bwrap", "--ro-bind", "/", "/", "true" } }
  return res and res.code == 0
end

local function make_lane(name)
  local dir = root .. "/" .. name
  assert(core.fs_safe_mkdir(root, name .. "/box", 493))
  local lane = { name = name, ws = dir .. "/ws", state = dir .. "/state.json", box_host = dir .. "/box" }
  if name == "local" then
    lane.provider, lane.remote, lane.remote_host, lane.box_seen = "local", dir .. "/box/ws", dir .. "/box/ws",
      dir .. "/box"
  else
    lane.provider, lane.remote, lane.remote_host, lane.box_seen = "bwrap:" .. dir .. "/box", "/sandbox/ws",
      dir .. "/box/ws", "/sandbox"
  end
  assert(core.fs_safe_mkdir(dir, "ws", 493))
  math.randomseed(SEED, 0)
  lane.model = tree.populate(lane.ws, FILES)
  return lane
end

local lanes = {}
for name in (os.getenv("SOAK_PROVIDERS") or "local,bwrap"):gmatch("[^,]+") do
  if name == "bwrap" and not bwrap_works() then
    io.stderr:write("soak: bwrap cannot run here; the bwrap lane is left out\n")
  elseif name == "local" or name == "bwrap" then
    lanes[#lanes + 1] = make_lane(name)
  else
    error("SOAK_PROVIDERS: unknown provider " .. name .. " (local, bwrap)", 0)
  end
end
assert(#lanes > 0, "no lane to run")

io.stderr:write(string.format("soak: seed %d, %d cycles, races %s, lanes %s, in %s\n", SEED, CYCLES,
  RACES and "on" or "off", (os.getenv("SOAK_PROVIDERS") or "local,bwrap"), root))
local started = os.time()
for i = 1, CYCLES do
  cycle_no = i
  math.randomseed(SEED, i)
  cycle(lanes[(i - 1) % #lanes + 1])
  if i % 25 == 0 then
    io.stderr:write(string.format("soak: %d/%d cycles, %d violations, %d s\n", i, CYCLES, #violations,
      os.time() - started))
  end
end

local by_kind, kinds = {}, {}
for _, v in ipairs(violations) do
  if not by_kind[v.kind] then
    by_kind[v.kind] = {}
    kinds[#kinds + 1] = v.kind
  end
  table.insert(by_kind[v.kind], v.lane .. "#" .. v.cycle)
end
table.sort(kinds)
print(string.format("soak: seed %d, %d cycles in %d s (%s), races %s", SEED, stats.cycles, os.time() - started,
  (os.getenv("SOAK_PROVIDERS") or "local,bwrap"), RACES and "on" or "off"))
print(string.format("  kills      %d (prepare %d, restore %d)", stats.kills_prepare + stats.kills_restore,
  stats.kills_prepare, stats.kills_restore))
print(string.format("  edits      %d (host %d, sandbox %d, host during restore %d)", stats.host_edits
  + stats.sandbox_edits + stats.race_edits, stats.host_edits, stats.sandbox_edits, stats.race_edits))
print(string.format("  races      %d", stats.races))
print(string.format("  conflicts  %d", stats.conflicts))
print(string.format("  refusals   %d of %d hostile archives", stats.refused, stats.hostile))
print(string.format("  failures   %d", stats.failures))
print(string.format("  violations %d", #violations))
for _, kind in ipairs(kinds) do
  local where = by_kind[kind]
  print(string.format("    %-48s %3d  (lane#cycle: %s%s)", kind, #where, table.concat(where, " ", 1,
    math.min(#where, 8)), #where > 8 and " ..." or ""))
end
if os.getenv("SOAK_KEEP") == "1" then
  print("  kept " .. root)
else
  core.fs_remove_tree(root)
end
if #violations > 0 then
  print(string.format("reproduce: SOAK_SEED=%d SOAK_CYCLES=%d SOAK_RACES=%d make soak  (first violation: cycle %d)",
    SEED, violations[#violations].cycle, RACES and 1 or 0, violations[1].cycle))
  os.exit(1)
end
