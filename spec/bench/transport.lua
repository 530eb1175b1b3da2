--- Bench: how fast ferry moves a workspace into a sandbox, next to the plain ways of doing it, in one run.
-- `require("bench.transport")` from spec/bench/run.lua, or standalone: `build/ferry run spec/bench/transport.lua`.
--
-- ssh rows talk to a real sshd on 127.0.0.1 (spec/support/sshd.lua); ferry and every baseline go through the
-- same shared OpenSSH connection, so the handshake is paid once, before any timing. Times are medians of
-- REPS interleaved repetitions (the order of ferry and baseline alternates); only ratios are meant to be
-- compared, since these machines are shared.
if not package.path:find("spec/?.lua", 1, true) then package.path = "spec/?.lua;" .. package.path end
local ferry = require "ferry"
local core = require "ferry.core"
local stats = require "bench.stats"

local M = {}

M.REPS = 5
M.PAPERCLIP_REPS = 3                     -- a minute each at 50 MB: in the first repetitions only
M.WS_BYTES, M.WS_FILES = 50 * 1000 * 1000, 2000
M.PAPERCLIP_CHUNK = 32 * 1024            -- base64 characters per command, as Paperclip's first version sent
M.BIG_FILES, M.BIG_FILE_BYTES = 4, 256 * 1024 * 1024
M.BIG_MIN_FREE_KIB = 4 * 1024 * 1024
M.MANY = 31
M.SLOW_PROVIDER = [[cmd:sh -c 'sleep 0.2; exec "$@"' x]]
M.FRESH_EXECS = 11                       -- `ferry exec` processes timed with the shared master warm
M.SECTIONS = { "ssh", "memory", "many" } -- run in this order; a driver may pick some

local q = core.sh_quote
local FERRY_BIN = "build/ferry"

-- ---- helpers ----

local function run(argv, opts)
  opts = opts or {}
  opts.argv = argv
  opts.max_output = opts.max_output or 64 * 1024 * 1024
  local res, err = ferry.proc.run(opts)
  assert(res, err)
  assert(res.code == 0, table.concat(argv, " "):sub(1, 200) .. " failed: " .. res.stderr)
  return res
end

local function sh(script, ...)
  return run { "sh", "-c", script, "sh", ... }
end

local function remove(path)
  if path then sh('rm -rf -- "$1"', path) end
end

local function timed(fn)
  local t0 = core.now_ms()
  local a, b = fn()
  return core.now_ms() - t0, a, b
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  f:close()
end

local scratch_root -- every local temp dir of the bench lives below it (on disk)
local fast_dir     -- tmpfs when there is one: the ssh rows write 250 MB a repetition, and disk writeback
                   -- would land on whichever transfer happens to run next
local outside_scratch = {} -- paths made in fast_dir, removed at the end whatever happened
local seq = 0
local function fresh(tag, root)
  seq = seq + 1
  local path = string.format("%s/%s-%d", root or scratch_root, tag, seq)
  if root then outside_scratch[#outside_scratch + 1] = path end
  return path
end

-- Remote dirs live where the sshd's login user may write (fast_dir is world-writable); the bench removes
-- them locally, as the sandbox is this host.
local function remote_dir(tag)
  return fresh(string.format("ferry-bench-%d-%s", core.getpid(), tag), fast_dir)
end

-- ---- workspaces ----

local RANDOM_POOL
local function random_pool()
  if not RANDOM_POOL then
    local f = assert(io.open("/dev/urandom", "rb"))
    RANDOM_POOL = f:read(8 * 1024 * 1024)
    f:close()
  end
  return RANDOM_POOL
end

local function random_bytes(n)
  local pool, parts, left = random_pool(), {}, n
  while left > 0 do
    local take = math.min(left, #pool)
    local at = math.random(1, #pool - take + 1)
    parts[#parts + 1] = pool:sub(at, at + take - 1)
    left = left - take
  end
  return table.concat(parts)
end

local function text_bytes(n, i)
  local line = string.format("line of file %d: the quick brown fox jumps over the lazy dog, %x\n", i, i * 7919)
  return line:rep(n // #line + 1):sub(1, n)
end

--- Fill `root` with `count` files totalling `total` bytes: mostly small, some medium, a few large; half
--- compressible text, half random. Deterministic for a given seed. Returns the list of relative names.
function M.generate(root, total, count, seed)
  sh('mkdir -p "$1"', root)
  math.randomseed(seed)
  local sizes, sum = {}, 0
  for i = 1, count do
    local r = math.random()
    local size
    if r < 0.70 then
      size = math.random(200, 8000)
    elseif r < 0.95 then
      size = math.random(8000, 100000)
    else
      size = math.random(100000, 2000000)
    end
    sizes[i], sum = size, sum + size
  end
  local scale, names, written = total / sum, {}, 0
  for i = 1, count do
    local size = i == count and math.max(0, total - written) or math.floor(sizes[i] * scale)
    written = written + size
    local random = i % 2 == 0
    local rel = string.format("d%02d/s%d/f%04d.%s", i % 40, i % 3, i, random and "bin" or "txt")
    assert(core.fs_safe_mkdir(root, rel:match("^(.*)/"), 493))
    write_file(root .. "/" .. rel, random and random_bytes(size) or text_bytes(size, i))
    names[#names + 1] = rel
  end
  return names
end

local function tree_summary(dir)
  local walk = "find . -path ./.ferry-runtime -prune -o -type f" -- the runtime dir is ferry's own
  local out = sh('cd "$1" && ' .. walk .. " -print | wc -l && " .. walk .. " -exec cat {} + | wc -c", dir).stdout
  local files, bytes = out:match("(%d+)%s+(%d+)")
  return tonumber(files), tonumber(bytes)
end

local function check_tree(dir, files, bytes, what)
  local f, b = tree_summary(dir)
  assert(f == files and b == bytes,
    string.format("%s: %s holds %s files, %s bytes; expected %d, %d", what, dir, f, b, files, bytes))
end

-- ---- ssh: cold, warm, Paperclip, restore ----

-- The raw pipe: tar the workspace into the same ssh (same options, same shared connection) running tar -x.
local function raw_pipe(sb, ws, dir)
  local argv = sb.provider:command("mkdir -p " .. q(dir) .. " && tar -x -f - -C " .. q(dir))
  sh('tar -c -f - -C "$1" . | ' .. core.sh_join(argv), ws)
end

-- The raw pipe with the byte count the client adds on the sandbox side (tee into wc -c, as ferry.client does).
local function counted_pipe(sb, ws, dir)
  local argv = sb.provider:command("mkdir -p " .. q(dir) .. " && { tee /dev/fd/5 | tar -x -f - -C " .. q(dir)
    .. " 5>&-; } 5>&1 | wc -c")
  sh('tar -c -f - -C "$1" . | ' .. core.sh_join(argv), ws)
end

-- ferry's transfer alone: the in-process tar stream through sb:pipe_in, without snapshot, clearing or state.
local function pipe_in(sb, ws, names, dir)
  local writer = core.tar_writer(ws, names)
  local res, err = sb:pipe_in("mkdir -p " .. q(dir) .. " && tar -x -f - -C " .. q(dir),
    function() return writer:read() end)
  assert(res and res.code == 0, err or (res and res.stderr))
end

local function raw_pull(sb, dir, into)
  local argv = sb.provider:command("tar -c -f - -C " .. q(dir) .. " .")
  sh(core.sh_join(argv) .. ' | tar -x -f - -C "$1"', into)
end

--- Paperclip's first protocol: base64 of the tar in 32 KiB pieces, one `sh -c "printf %s PIECE >> FILE"`
--- command each over the connection, then one `base64 -d FILE | tar -x`. Returns the number of commands.
local function paperclip(sb, ws, dir)
  local text = ferry.b64.encode(run({ "tar", "-c", "-f", "-", "-C", ws, "." }, { max_output = 1 << 30 }).stdout)
  local file = q(dir .. ".b64")
  local commands = 0
  for i = 1, #text, M.PAPERCLIP_CHUNK do
    local piece = text:sub(i, i + M.PAPERCLIP_CHUNK - 1)
    run(sb.provider:command("printf %s " .. q(piece) .. " >> " .. file))
    commands = commands + 1
  end
  run(sb.provider:command("mkdir -p " .. q(dir) .. " && base64 -d " .. file .. " | tar -x -f - -C " .. q(dir)
    .. " && rm -f " .. file))
  return commands + 1
end

local function paperclip_commands(tar_bytes)
  local text = 4 * ((tar_bytes + 2) // 3)
  return (text + M.PAPERCLIP_CHUNK - 1) // M.PAPERCLIP_CHUNK + 1
end

-- A progress reporter that notes when each phase of a prepare begins (ms since `t0`, by phase name).
local function phase_clock()
  local t0, marks = core.now_ms(), {}
  local noop = function() end
  return setmetatable({ marks = marks, phase = function(_, name) marks[name] = core.now_ms() - t0 end },
    { __index = function() return noop end }) -- every other reporter method does nothing
end

local function prepare(sb, counter, ws, dir, state)
  local before, clock = counter.n, phase_clock()
  local res, err = ferry.prepare { provider = sb, workspace = ws, remote_dir = dir, state = state, adapter = "shell",
    progress = clock }
  assert(res, err)
  res.phase_marks = clock.marks
  return res, counter.n - before
end

local function restore(sb, counter, state)
  local before = counter.n
  local res, err = ferry.restore { state = state, sb = sb }
  assert(res, err)
  return res, counter.n - before
end

local function tar_size(ws)
  return tonumber(sh('tar -c -f - -C "$1" . | wc -c', ws).stdout)
end

local function reversed(list)
  local out = {}
  for i = #list, 1, -1 do out[#out + 1] = list[i] end
  return out
end

local function change_one_file(ws, names, rep)
  local rel = names[#names // 2]
  local f = assert(io.open(ws .. "/" .. rel, "ab"))
  f:write(string.format("changed in repetition %d\n", rep))
  f:close()
end

-- ferry's local work in a prepare, without the sandbox: the snapshot (SHA-256 of every file) and the tar
-- stream made in-process.
local function local_work(ws)
  local snapshot = require "ferry.snapshot"
  local snap_ms, _, names = timed(function() return assert(snapshot.take(ws, {})) end)
  local tar_ms = timed(function()
    local writer = core.tar_writer(ws, names)
    while writer:read() do end
  end)
  return snap_ms, tar_ms
end

local function ssh_transfers(sb, counter, f)
  local ws = fresh(string.format("ferry-bench-%d-ws", core.getpid()), fast_dir)
  local names = M.generate(ws, M.WS_BYTES, M.WS_FILES, 50)
  f.tar_bytes = tar_size(ws)
  f.paperclip_commands_computed = paperclip_commands(f.tar_bytes)
  local files, bytes = tree_summary(ws)
  local t = { raw = {}, cold = {}, warm = {}, restore = {}, pull = {}, pc = {}, snap = {}, tar = {}, counted = {},
    pipe_in = {}, before_sync = {}, sync = {}, after_sync = {} }
  local walk_order = select(2, assert(require("ferry.snapshot").take(ws, { hash = false })))
  for rep = 1, M.REPS do
    local state, dirs = fresh("state") .. ".json", {}
    local function dir(tag)
      dirs[#dirs + 1] = remote_dir(tag)
      return dirs[#dirs]
    end
    local cold_dir, raw_dir, pc_dir = dir("cold"), dir("raw"), dir("paperclip")
    t.snap[rep], t.tar[rep] = local_work(ws)
    local order = {
      function()
        local ms, res, n = timed(function() return prepare(sb, counter, ws, cold_dir, state) end)
        t.cold[rep], f.cold_bytes, f.cold_commands = ms, res.bytes_sent, n
        local m = res.phase_marks
        if m.sync and m.finalize then -- before the stream / the stream / after it
          t.before_sync[rep], t.sync[rep], t.after_sync[rep] = m.sync, m.finalize - m.sync, ms - m.finalize
        end
      end,
      function() t.raw[rep] = timed(function() raw_pipe(sb, ws, raw_dir) end) end,
      function() t.pc[rep], f.paperclip_commands = timed(function() return paperclip(sb, ws, pc_dir) end) end,
      function() t.counted[rep] = timed(function() counted_pipe(sb, ws, dir("counted")) end) end,
      function() t.pipe_in[rep] = timed(function() pipe_in(sb, ws, walk_order, dir("pipe-in")) end) end,
    }
    if rep > M.PAPERCLIP_REPS then table.remove(order, 3) end
    if rep % 2 == 0 then order = reversed(order) end
    for _, step in ipairs(order) do step() end
    if rep == 1 then -- every way left the same tree
      check_tree(cold_dir, files, bytes, "ferry prepare")
      check_tree(raw_dir, files, bytes, "raw pipe")
      if M.PAPERCLIP_REPS > 0 then check_tree(pc_dir, files, bytes, "Paperclip baseline") end
    end
    change_one_file(ws, names, rep)
    local ms, res, n = timed(function() return prepare(sb, counter, ws, cold_dir, state) end)
    t.warm[rep], f.warm_bytes, f.warm_commands = ms, res.bytes_sent, n
    ms, res, n = timed(function() return restore(sb, counter, state) end)
    t.restore[rep], f.restore_commands, f.restore_bytes = ms, n, res.bytes_received
    local into = fresh("ferry-bench-pull", fast_dir)
    sh('mkdir -p "$1"', into)
    t.pull[rep] = timed(function() raw_pull(sb, raw_dir, into) end)
    remove(into)
    for _, d in ipairs(dirs) do remove(d) end
  end
  remove(ws)
  for k, list in pairs(t) do f[k .. "_ms"] = #list > 0 and stats.median(list) or nil end
end

-- Per-command round trip: sb:exec("true") through ferry.open(spec) with default options (over ssh: the
-- session, caps.costly), then with session = false (one ssh process per command over the shared connection),
-- vs a new `ssh HOST true` each time; the provider's own argv run directly shows what the connection costs
-- without the client's wrapping.
local function round_trips(sb, server, f)
  local ex, new, direct, plain = {}, {}, {}, {}
  local per_process = assert(ferry.open(server:url(), { session = false }))
  local direct_argv = sb.provider:command("true")
  assert(sb:exec("true").code == 0) -- opens the session
  for _ = 1, 5 do
    for _ = 1, 6 do
      ex[#ex + 1] = timed(function() assert(sb:exec("true").code == 0) end)
      plain[#plain + 1] = timed(function() assert(per_process:exec("true").code == 0) end)
      direct[#direct + 1] = timed(function() run(direct_argv) end)
    end
    new[#new + 1] = timed(function() run(server:ssh_argv("true")) end)
  end
  per_process:close()
  f.exec_ms, f.new_ssh_ms, f.direct_ms = stats.median(ex), stats.median(new), stats.median(direct)
  f.per_process_ms = stats.median(plain)
end

-- A fresh `ferry exec -- true` process with the shared master warm (it stays from the commands above): the
-- whole invocation as a user runs it, next to the same through `ssh` on the master and a new connection.
local function fresh_execs(server, f)
  local times = {}
  local argv = { FERRY_BIN, "exec", "-p", server:url(), "--", "true" }
  run(argv)
  for i = 1, M.FRESH_EXECS do times[i] = timed(function() run(argv) end) end
  f.fresh_exec_ms = stats.median(times)
end

local function ssh_section(f)
  local sshd = require "support.sshd"
  local server = sshd.start()
  local counter = { n = 0 }
  local ok, err = pcall(function()
    local sb = assert(ferry.open(server:url(), { on_exec = function() counter.n = counter.n + 1 end }))
    local inner_ok, inner_err = pcall(function()
      round_trips(sb, server, f)
      fresh_execs(server, f)
      ssh_transfers(sb, counter, f)
    end)
    sb:close()
    if not inner_ok then error(inner_err, 0) end
  end)
  server:stop()
  if not ok then error(err, 0) end
end

-- ---- memory: 1 GiB through build/ferry, a child process that reports its own VmHWM ----

local function free_kib(dir)
  return tonumber(sh('df -Pk "$1" | awk \'NR==2 {print $4}\'', dir).stdout)
end

local CHILD = [[
local ferry = require "ferry"
local res, err = ferry.%s(%s)
if not res then io.stderr:write(tostring(err), "\n") os.exit(1) end
local f = io.open("/proc/self/status")
local status = f:read("a")
f:close()
print(string.format("VmHWM %%s commands %%s", status:match("VmHWM:%%s*(%%d+)"), tostring(res.commands)))
]]

local function child(verb, opts_literal)
  local res = run({ FERRY_BIN, "-e", string.format(CHILD, verb, opts_literal) }, { timeout_ms = 600000 })
  local kib, commands = res.stdout:match("VmHWM (%d+) commands (%S+)")
  assert(kib, "the child printed no VmHWM: " .. res.stdout .. res.stderr)
  return tonumber(kib) / 1024, tonumber(commands)
end

local function memory_section(f)
  local free = free_kib(scratch_root)
  if free < M.BIG_MIN_FREE_KIB then
    f.rss_skipped = string.format("only %.1f GiB free in %s, 4 GiB needed", free / 1048576, scratch_root)
    return
  end
  local ws, dir, state = fresh("ws1g"), fresh("remote1g"), fresh("state") .. ".json"
  local ok, err = pcall(function()
    sh('mkdir -p "$1/small"', ws)
    for i = 1, M.BIG_FILES do -- a repeating line per file: written at disk speed, and not sparse
      sh('yes "big file $2 $(head -c 60 /dev/urandom | base64 -w0)" | head -c "$3" > "$1/big$2.dat"', ws,
        tostring(i), tostring(M.BIG_FILE_BYTES))
    end
    for i = 1, 200 do write_file(string.format("%s/small/%03d.txt", ws, i), text_bytes(4096, i)) end
    f.big_bytes = M.BIG_FILES * M.BIG_FILE_BYTES + 200 * 4096
    local opts = string.format("{ provider = 'local', workspace = %q, remote_dir = %q, state = %q }", ws, dir, state)
    f.rss_prepare_ms, f.rss_prepare_mib, f.rss_prepare_commands = timed(function() return child("prepare", opts) end)
    -- the sandbox changes one big file and adds one: restore receives 1 GiB and writes 256 MiB back
    sh('printf "sandbox edit\\n" >> "$1/big1.dat" && echo new > "$1/new.txt"', dir)
    opts = string.format("{ state = %q, max_bytes = 2 * 1024 * 1024 * 1024 }", state)
    f.rss_restore_ms, f.rss_restore_mib, f.rss_restore_commands = timed(function() return child("restore", opts) end)
    local tail = sh('tail -c 13 "$1/big1.dat"', ws).stdout
    assert(tail == "sandbox edit\n", "restore did not bring the sandbox's edit back")
  end)
  remove(ws)
  remove(dir)
  if not ok then error(err, 0) end
end

-- ---- many sandboxes at once ----

-- `ferry prepare --many FILE --jobs N` (one ferry process, N sandboxes at once) through a provider adding
-- 200 ms per command, next to the sandbox-side command a cold prepare runs (`mkdir -p DIR && tar -x`, fed by
-- a local `tar -c`) run N at once through the same provider without ferry.
local function many_section(f)
  local ws = fresh("wssmall")
  M.generate(ws, 200 * 1000, 20, 7)
  local base = fresh("many")
  sh('mkdir -p "$1"', base)
  -- a workspace per sandbox: prepares of one workspace take turns (its lock)
  local copies = {}
  for i = 1, M.MANY do
    copies[i] = string.format("%s-%d", ws, i)
    sh('cp -a "$1" "$2"', ws, copies[i])
  end
  local function many_file(n)
    local items = {}
    for i = 1, n do
      items[i] = require("cjson").encode { provider = M.SLOW_PROVIDER, workspace = copies[i],
        remote_dir = string.format("%s/r%d-%d", base, n, i), state = string.format("%s/s%d-%d.json", base, n, i) }
    end
    local path = string.format("%s/many-%d.json", scratch_root, n)
    write_file(path, "[" .. table.concat(items, ",\n") .. "]\n")
    return path
  end
  local files = { [1] = many_file(1), [M.MANY] = many_file(M.MANY) }
  local function prepares(n)
    run { FERRY_BIN, "prepare", "--many", files[n], "--jobs", tostring(n) }
  end
  local slow = assert(require("ferry.provider_util").split_words(M.SLOW_PROVIDER:sub(5)))
  local function raw_pipes(n)
    local tasks = {}
    for i = 1, n do
      tasks[i] = ferry.spawn(function()
        local argv = table.move(slow, 1, #slow, 1, {})
        table.move({ "sh", "-c", 'mkdir -p "$1" && tar -x -f - -C "$1"', "sh", string.format("%s/r%d-%d", base, n, i) },
          1, 5, #argv + 1, argv)
        sh('tar -c -f - -C "$1" . | ' .. core.sh_join(argv), ws)
      end)
    end
    ferry.wait(tasks)
  end
  local t = { one = {}, many = {}, raw_one = {}, raw_many = {} }
  local function measure(key, rep, fn, n)
    t[key][rep] = timed(function() fn(n) end)
    if key == "many" and rep == 1 then
      for i = 1, n do check_tree(string.format("%s/r%d-%d", base, n, i), 20, 200 * 1000, "prepare --many") end
    end
    sh('rm -rf "$1"/r* "$1"/s*', base)
  end
  for rep = 1, M.REPS do
    local order = { { "one", prepares, 1 }, { "many", prepares, M.MANY }, { "raw_one", raw_pipes, 1 },
      { "raw_many", raw_pipes, M.MANY } }
    if rep % 2 == 0 then order = { order[4], order[3], order[2], order[1] } end
    for _, m in ipairs(order) do measure(m[1], rep, m[2], m[3]) end
  end
  for k, list in pairs(t) do f[k .. "_ms"] = stats.median(list) end
  remove(ws)
  for _, copy in ipairs(copies) do remove(copy) end
  remove(base)
end

-- ---- run and report ----

--- Run every section; a section that fails leaves an `error_<section>` message and the others still run.
--- Returns the figures (times in ms, medians of REPS; bytes; MiB for RSS).
function M.run()
  scratch_root = assert(core.fs_mkdtemp("/tmp/ferry-bench-"))
  local shm = core.fs_stat("/dev/shm")
  fast_dir = shm and shm.kind == "dir" and free_kib("/dev/shm") > 2 * 1024 * 1024 and "/dev/shm" or "/tmp"
  local f = { reps = M.REPS, fast_dir = fast_dir }
  local sections = { ssh = ssh_section, memory = memory_section, many = many_section }
  for _, name in ipairs(M.SECTIONS) do
    local t0 = core.now_ms()
    local ok, err = pcall(sections[name], f)
    if not ok then f["error_" .. name] = tostring(err) end
    f["section_" .. name .. "_s"] = (core.now_ms() - t0) / 1000
  end
  remove(scratch_root)
  for _, path in ipairs(outside_scratch) do remove(path) end -- what a failed section left behind
  outside_scratch = {}
  return f
end

local function secs(ms) return ms and string.format("%.2f s", ms / 1000) or "-" end
local function millis(ms) return ms and string.format("%.1f ms", ms) or "-" end
local function mb(bytes)
  if not bytes then return "-" end
  if bytes < 1e6 then return string.format("%.1f kB", bytes / 1e3) end
  return string.format("%.1f MB", bytes / 1e6)
end

local function verdict(value, limit)
  if not value then return "" end
  return value <= limit and " ok" or string.format(" MISSED by %.0f%%", (value / limit - 1) * 100)
end

-- Rows of the summary: {name, ferry, baseline, ratio, goal}.
local function summary_rows(f)
  local rows = {}
  local function row(name, ours, theirs, ratio, goal)
    rows[#rows + 1] = { name, ours, theirs, ratio and string.format("%.3f", ratio) or "-", goal or "-" }
  end
  if f.cold_ms then
    local ws = string.format("%s/%d files", mb(M.WS_BYTES), M.WS_FILES)
    row("cold prepare " .. ws .. " over ssh vs tar|ssh tar -x", secs(f.cold_ms), secs(f.raw_ms),
      f.cold_ms / f.raw_ms, "<= 1.15" .. verdict(f.cold_ms / f.raw_ms, 1.15))
    if f.pc_ms then
      row(string.format("cold prepare %s vs Paperclip 32 KiB base64/command (%d cmds)", ws, f.paperclip_commands),
        secs(f.cold_ms), secs(f.pc_ms), f.cold_ms / f.pc_ms)
    end
    row(string.format("warm re-prepare, 1 file changed (sent %s) vs cold raw pipe", mb(f.warm_bytes)),
      secs(f.warm_ms), secs(f.raw_ms), f.warm_ms / f.raw_ms, "<= 0.15" .. verdict(f.warm_ms / f.raw_ms, 0.15))
    row("restore " .. mb(M.WS_BYTES) .. ", nothing changed, vs ssh tar -c|tar -x", secs(f.restore_ms), secs(f.pull_ms),
      f.restore_ms / f.pull_ms)
  end
  if f.exec_ms then
    row("round trip: sb:exec('true') via ferry.open(spec), default options (session) vs new ssh HOST true",
      millis(f.exec_ms), millis(f.new_ssh_ms), f.exec_ms / f.new_ssh_ms, "<= 5 ms" .. verdict(f.exec_ms, 5))
    row("round trip: sb:exec('true') with session = false vs new ssh HOST true", millis(f.per_process_ms),
      millis(f.new_ssh_ms), f.per_process_ms / f.new_ssh_ms)
  end
  if f.fresh_exec_ms then
    row("a fresh `ferry exec -- true` process, shared master warm, vs new ssh HOST true", millis(f.fresh_exec_ms),
      millis(f.new_ssh_ms), f.fresh_exec_ms / f.new_ssh_ms)
  end
  if f.cold_ms and f.cold_commands then
    row("commands per cold prepare (vs Paperclip's)", tostring(f.cold_commands),
      tostring(f.paperclip_commands or f.paperclip_commands_computed),
      f.cold_commands / (f.paperclip_commands or f.paperclip_commands_computed))
    row("commands per warm prepare / per restore", f.warm_commands .. " / " .. f.restore_commands, "-", nil)
  end
  if f.rss_prepare_mib then
    row("peak RSS, prepare 1 GiB (local)", string.format("%.1f MiB", f.rss_prepare_mib), "-", nil,
      "< 64 MiB" .. verdict(f.rss_prepare_mib, 64))
    row("peak RSS, restore 1 GiB (local)", string.format("%.1f MiB", f.rss_restore_mib), "-", nil,
      "< 64 MiB" .. verdict(f.rss_restore_mib, 64))
  elseif f.rss_skipped then
    row("peak RSS 1 GiB: skipped, " .. f.rss_skipped, "-", "-", nil)
  end
  if f.many_ms then
    row(string.format("%d prepares at once (--many) vs the same commands %d at once without ferry, cmd: +200 "
      .. "ms/command", M.MANY, M.MANY), secs(f.many_ms), secs(f.raw_many_ms), f.many_ms / f.raw_many_ms,
      "<= 1.25" .. verdict(f.many_ms / f.raw_many_ms, 1.25))
    row("1 prepare (--many) vs the same command without ferry", secs(f.one_ms), secs(f.raw_one_ms),
      f.one_ms / f.raw_one_ms)
  end
  return rows
end

local function print_details(f)
  local function line(label, value) print(string.format("%-58s %s", label, value)) end
  if f.cold_ms then
    line(string.format("workspace %s in %d files (half text, half random): tar", mb(M.WS_BYTES), M.WS_FILES),
      mb(f.tar_bytes))
    line("  ferry's local work: snapshot with SHA-256 / tar stream", secs(f.snap_ms) .. " / " .. secs(f.tar_ms))
    line("raw pipe tar -c | ssh (shared connection) tar -x", secs(f.raw_ms))
    line("  the same with the remote byte count (tee | wc -c)", secs(f.counted_ms))
    line("  sb:pipe_in of ferry's in-process tar stream", secs(f.pipe_in_ms))
    line("ferry.prepare cold, adapter shell, over ssh", string.format("%s, %s sent, %d commands",
      secs(f.cold_ms), mb(f.cold_bytes), f.cold_commands))
    if f.sync_ms then
      line("  phases: until the stream / the stream / after it", string.format("%s / %s / %s",
        secs(f.before_sync_ms), secs(f.sync_ms), secs(f.after_sync_ms)))
    end
    line("ferry.prepare warm, one file changed", string.format("%s, %s sent, %d commands",
      secs(f.warm_ms), mb(f.warm_bytes), f.warm_commands))
    line("ferry.restore, nothing changed remotely", string.format("%s, %s received, %d commands",
      secs(f.restore_ms), mb(f.restore_bytes), f.restore_commands))
    line("raw ssh tar -c | tar -x (pull)", secs(f.pull_ms))
    if f.pc_ms then
      line(string.format("Paperclip: 32 KiB base64/command, base64 -d|tar -x (median of %d)", M.PAPERCLIP_REPS),
        string.format("%s, %d commands (%d expected)", secs(f.pc_ms), f.paperclip_commands,
        f.paperclip_commands_computed))
    end
  end
  if f.exec_ms then
    line("sb:exec('true') via ferry.open(spec), default: the session (median of 30)", millis(f.exec_ms))
    line("  the same with session = false: an ssh process per command", millis(f.per_process_ms))
    line("  the provider's ssh argv run directly, same connection", millis(f.direct_ms))
    line("new ssh HOST true, handshake each time (median of 5)", millis(f.new_ssh_ms))
    if f.fresh_exec_ms then
      line(string.format("fresh build/ferry exec -- true, master warm (median of %d)", M.FRESH_EXECS),
        millis(f.fresh_exec_ms))
    end
  end
  if f.rss_prepare_mib then
    line(string.format("1 GiB workspace (%d x %d MiB + 200 small)", M.BIG_FILES, M.BIG_FILE_BYTES >> 20),
      mb(f.big_bytes))
    line("  build/ferry prepare into local (1 run): VmHWM, wall", string.format("%.1f MiB, %s, %d commands",
      f.rss_prepare_mib, secs(f.rss_prepare_ms), f.rss_prepare_commands))
    line("  build/ferry restore, 256 MiB changed (1 run): VmHWM, wall", string.format("%.1f MiB, %s, %d commands",
      f.rss_restore_mib, secs(f.rss_restore_ms), f.rss_restore_commands))
  elseif f.rss_skipped then
    line("peak RSS 1 GiB", "skipped: " .. f.rss_skipped)
  end
  if f.many_ms then
    line("provider " .. M.SLOW_PROVIDER, "")
    line("  build/ferry prepare --many, 1 item", secs(f.one_ms))
    line(string.format("  build/ferry prepare --many --jobs %d, %d items", M.MANY, M.MANY), secs(f.many_ms))
    line("  the same command without ferry (tar | mkdir && tar -x): 1", secs(f.raw_one_ms))
    line(string.format("  the same command without ferry: %d at once", M.MANY), secs(f.raw_many_ms))
  end
  for _, s in ipairs { "ssh", "memory", "many" } do
    if f["error_" .. s] then line("section " .. s .. " FAILED", f["error_" .. s]) end
  end
  line("section times (ssh, memory, many)", string.format("%.0f s, %.0f s, %.0f s", f.section_ssh_s or 0,
    f.section_memory_s or 0, f.section_many_s or 0))
end

--- Print the details and the summary table `name | ferry | baseline | ratio | goal`.
function M.report(f)
  print(string.format("transport: times are medians of %d interleaved repetitions; ssh workspace and remote "
    .. "dirs in %s", f.reps, f.fast_dir))
  print_details(f)
  local rows = summary_rows(f)
  print("\nsummary (ratio = ferry / baseline; a goal in ms or MiB applies to the ferry column)\n")
  print("| name | ferry | baseline | ratio | goal |")
  print("|---|---|---|---|---|")
  for _, r in ipairs(rows) do
    local cells = {}
    for i, cell in ipairs(r) do cells[i] = cell:gsub("|", "\\|") end -- a pipe in a cell is markdown's \|
    print("| " .. table.concat(cells, " | ") .. " |")
  end
end

if arg and arg[0] and arg[0]:match("bench/transport%.lua$") then
  M.report(M.run())
end

return M
