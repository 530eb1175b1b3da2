--- Bench: the compact tree (core.tree_*) on a 100,000-file workspace (small files, in /dev/shm): the
-- building blocks prepare and restore use (README "Large trees"); bench/scale.lua measures the operations.
-- Not part of `make test`; part of `make bench`, or standalone: `build/ferry run spec/bench/tree.lua`.
--
-- Every row runs in a child `ferry` process of its own, so its peak RSS (VmHWM) is that operation's alone
-- (with whatever it needs loaded first, e.g. the known tree of a warm walk); times are medians of REPS runs.
if not package.path:find("spec/?.lua", 1, true) then package.path = "spec/?.lua;" .. package.path end
local core = require "ferry.core"
local stats = require "bench.stats"
local trees = require "support.trees"

local M = {}

M.FILES, M.PER_DIR, M.REPS = 100000, 100, 3

local BIN = (os.getenv("PWD") or ".") .. "/build/ferry"
local SELF = (os.getenv("PWD") or ".") .. "/spec/bench/tree.lua"

-- ---- the cases, run in a child: `ferry run tree.lua --case NAME DIR` prints "<ms> <VmHWM KiB> [<note>]" ----

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function drain(w)
  local n = 0
  for chunk in w.read, w do n = n + #chunk end
  return n
end

-- name -> {prepare = fn(dir) -> state (untimed), run = fn(dir, state) -> note}
local CASES = {}

local function matcher()
  local excludes = require "ferry.excludes"
  return excludes.compile(excludes.DEFAULT)
end

CASES.walk_cold = { run = function(dir)
  local _, info = assert(core.tree_walk(dir .. "/ws", { hash = true, exclude = matcher() }))
  return "hashed " .. info.hashed
end }
CASES.walk_warm = {
  prepare = function(dir) return assert(core.tree_read(dir .. "/base.tree")) end,
  run = function(dir, known)
    local _, info = assert(core.tree_walk(dir .. "/ws", { hash = true, exclude = matcher(), known = known }))
    return "hashed " .. info.hashed
  end,
}
CASES.diff3 = {
  prepare = function(dir)
    return { assert(core.tree_read(dir .. "/base.tree")), assert(core.tree_read(dir .. "/base.tree")),
      assert(core.tree_read(dir .. "/changed.tree")) }
  end,
  run = function(_, t)
    local paths = core.tree_diff(t[1], t[2], t[3])
    return #paths .. " paths differ"
  end,
}
CASES.dump_load = {
  prepare = function(dir) return assert(core.tree_read(dir .. "/base.tree")) end,
  run = function(_, t)
    local s = t:dump()
    local u = assert(core.tree_load(s))
    return #s .. " bytes, " .. u:count() .. " entries"
  end,
}
CASES.write_read = {
  prepare = function(dir) return assert(core.tree_read(dir .. "/base.tree")) end,
  run = function(dir, t)
    assert(t:write(dir .. "/tmp.tree"))
    return assert(core.tree_read(dir .. "/tmp.tree")):count() .. " entries"
  end,
}
CASES.listing_tree = {
  prepare = function(dir) return slurp(dir .. "/listing.bin") end,
  run = function(_, text) return assert(core.tree_parse_listing(text)):count() .. " entries" end,
}
CASES.listing_stream = {
  prepare = function(dir) return slurp(dir .. "/listing.bin") end,
  run = function(_, text)
    local reader = core.tree_listing_reader()
    for i = 1, #text, 65536 do assert(reader:feed(text:sub(i, i + 65535))) end
    return assert(reader:finish()):count() .. " entries"
  end,
}
CASES.scan_tree = { run = function(dir) -- restore's scan and guard
  local guard = require "ferry.guard"
  local excludes = require "ferry.excludes"
  local ws = dir .. "/ws"
  local t, info = assert(core.tar_scan_tree(dir .. "/ws.tar", guard.scan_options(ws,
    guard.ignore_matcher(excludes.DEFAULT, { ".ferry-runtime" }))))
  local checked = guard.check(t, info, { workspace = ws })
  return t:count() .. " entries, " .. #checked.refused .. " refused"
end }
CASES.writer_tree = {
  prepare = function(dir) return assert(core.tree_walk(dir .. "/ws", {})) end,
  run = function(dir, t) return drain(assert(core.tar_writer(dir .. "/ws", t, { hash = true }))) .. " bytes" end,
}

local function run_case(name, dir)
  local case = assert(CASES[name], "no case " .. name)
  local state = case.prepare and case.prepare(dir)
  collectgarbage()
  local t0 = core.time_ms()
  local note = case.run(dir, state)
  print(string.format("%.1f %d %s", core.time_ms() - t0, trees.peak_rss_kib(), note or ""))
end

-- ---- the parent ----

local function sh(cmd)
  assert(os.execute(cmd), "command failed: " .. cmd)
end

local function child(name, dir)
  local p = io.popen(BIN .. " run " .. SELF .. " --case " .. name .. " " .. dir)
  local out = p:read("a")
  assert(p:close(), name .. " failed: " .. out)
  local ms, kib, note = out:match("^([%d.]+) (%d+) ?([^\n]*)")
  assert(ms, name .. ": " .. out)
  return tonumber(ms), tonumber(kib), note
end

local function measure(name, dir)
  local times, kib, note = {}, 0, nil
  for i = 1, M.REPS do
    local ms, k, n = child(name, dir)
    times[i], kib, note = ms, math.max(kib, k), n
  end
  return { ms = stats.median(times), kib = kib, note = note }
end

local function timed_shell(cmd)
  local times = {}
  for i = 1, M.REPS do
    local t0 = core.time_ms()
    sh(cmd)
    times[i] = core.time_ms() - t0
  end
  return stats.median(times)
end

-- The workspace (files an hour old, so that a warm walk may trust them), its states and archives.
local function setup(dir)
  local made_ms = stats.make_workspace(dir, M.FILES, M.PER_DIR)
  local ws = dir .. "/ws"
  local function write(path, text)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
  end
  local base = assert(core.tree_walk(ws, { hash = true }))
  assert(base:write(dir .. "/base.tree"))
  local changed = assert(core.tree_load(base:dump()))
  local n = 0
  for rel, kind in base:iter(nil, "kind") do
    if kind == "file" then
      n = n + 1
      if n % 1000 == 0 then changed:set_sha256(rel, string.format("%064x", n)) end
    end
  end
  assert(changed:write(dir .. "/changed.tree"))
  sh("mkdir -p " .. core.sh_quote(ws .. "/.ferry-runtime")) -- the listing keeps its temp files there, as in a sandbox
  local script = require("ferry.listing").list_script(ws, { ".ferry-runtime" }, {})
  local res = assert(require("ferry").proc.run { argv = { "sh", "-c", script }, max_output = 1 << 30 })
  assert(res.code == 0, res.stderr)
  write(dir .. "/listing.bin", res.stdout)
  write(dir .. "/list.sh", script)
  sh("tar -C " .. core.sh_quote(ws) .. " -cf " .. core.sh_quote(dir .. "/ws.tar") .. " .")
  return { made_ms = made_ms, listing_bytes = #res.stdout, tree_bytes = #slurp(dir .. "/base.tree"),
    entries = base:count(), tree_mem = base:bytes() }
end

function M.run()
  local root = io.open("/dev/shm", "r") and "/dev/shm" or "/tmp"
  local p = io.popen("mktemp -d " .. root .. "/ferry-bench-tree.XXXXXX")
  local dir = p:read("l")
  p:close()
  local ok, f = pcall(function()
    local f = setup(dir)
    local q = core.sh_quote
    f.pipe_ms = timed_shell("rm -rf " .. q(dir .. "/copy") .. " && mkdir " .. q(dir .. "/copy") .. " && tar -C "
      .. q(dir .. "/ws") .. " -cf - . | tar -C " .. q(dir .. "/copy") .. " -xf -")
    f.tar_c_ms = timed_shell("tar -C " .. q(dir .. "/ws") .. " -cf - . > /dev/null")
    f.list_cmd_ms = timed_shell("sh " .. q(dir .. "/list.sh") .. " > /dev/null")
    for name in pairs(CASES) do f[name] = measure(name, dir) end
    return f
  end)
  sh("rm -rf " .. core.sh_quote(dir))
  if not ok then error(f, 0) end
  return f
end

local function mib(kib) return string.format("%.1f MiB", kib / 1024) end

function M.report(f)
  print(string.format("tree: %d files in %d dirs (%d entries; made in %.1f s); medians of %d runs, each in a "
    .. "process of its own; raw `tar -c | tar -x` %.0f ms, `tar -c > /dev/null` %.0f ms", M.FILES,
    M.FILES // M.PER_DIR, f.entries, f.made_ms / 1000, M.REPS, f.pipe_ms, f.tar_c_ms))
  print(string.format("memory of one tree: %.1f MiB (%.0f bytes an entry, paths included); as a tree file %.1f MB; "
    .. "the sandbox's full listing %.1f MB", f.tree_mem / 1048576, f.tree_mem / f.entries, f.tree_bytes / 1e6,
    f.listing_bytes / 1e6))
  print("\n| what | time | peak RSS |")
  print("|---|---|---|")
  local rows = {
    { "walk, cold (hashing every file)", "walk_cold" },
    { "walk, warm (known digests, nothing read)", "walk_warm" },
    { "3-way compare of 100k entries (1% changed)", "diff3" },
    { "dump + load (string)", "dump_load" },
    { "write + read (file)", "write_read" },
    { "parse the sandbox's full listing (one string)", "listing_tree" },
    { "the same, read as it arrives (64 KiB pieces)", "listing_stream" },
    { "restore's scan of a tar of the workspace and the guard", "scan_tree" },
    { "tar stream of the workspace from a tree, hashing", "writer_tree" },
  }
  for _, r in ipairs(rows) do
    local a = f[r[2]]
    print(string.format("| %s | %.0f ms (%s) | %s |", r[1], a.ms, a.note, mib(a.kib)))
  end
  print(string.format("\nwalk warm / raw pipe: %.2f; walk cold / raw pipe: %.2f; writer from a tree / `tar -c`: %.2f; "
    .. "the sandbox's full listing command (run locally): %.0f ms", f.walk_warm.ms / f.pipe_ms,
    f.walk_cold.ms / f.pipe_ms, f.writer_tree.ms / f.tar_c_ms, f.list_cmd_ms))
end

if arg and arg[1] == "--case" then
  run_case(arg[2], arg[3])
elseif arg and arg[0] and arg[0]:match("bench/tree%.lua$") then
  M.report(M.run())
end

return M
