--- Bench: git-aware sync on a repository with a long history (made here with git fast-import), next to
-- shipping `.git` as plain files (what ferry did before git mode). Not part of `make test`; part of
-- `make bench`, or standalone: `build/ferry run spec/bench/git.lua`.
--
-- Rows: the inbound pack (ferry.git_pack) at several depths, bytes and time, against a tar of `.git`; the
-- whole inbound step into a `local` sandbox (pack, send, build the repository and its index) against
-- sending and extracting that tar; the outbound bundle of 2 new commits (ferry.git_remote.outbound) and its
-- import and integration (ferry.git_import, ferry.git_integrate) against the same tar of `.git` (restore
-- receives the whole workspace: a sandbox holding `.git` as files sends all of it back), and of the
-- sandbox's shallow `.git`. End to end: ferry.prepare of the repository into a fresh `local` sandbox in git
-- mode against `git = false` (`.git` shipped as files), then ferry.restore after the agent's 2 new commits
-- (in git mode: a fast-forward of the host's branch; with `.git` as files: the changed files of `.git` come
-- back through the file merge).
-- Times are medians of REPS runs.
if not package.path:find("spec/?.lua", 1, true) then package.path = "spec/?.lua;" .. package.path end
local ferry = require "ferry"
local core = require "ferry.core"
local git = require "ferry.git"
local git_import = require "ferry.git_import"
local git_integrate = require "ferry.git_integrate"
local git_pack = require "ferry.git_pack"
local git_remote = require "ferry.git_remote"
local helpers = require "support.helpers"
local R = require "support.git_repos"
local snapshot = require "ferry.snapshot"
local stats = require "bench.stats"

local M = {}

M.COMMITS, M.FILES, M.LINES = 2000, 500, 150
M.DEPTHS = { 1, 5, 10, 50 }
M.REPS = 3

local function now_ms() return core.time_ms() end

local function timed(fn)
  local t0 = now_ms()
  local a, b = fn()
  return now_ms() - t0, a, b
end

local function median_of(reps, fn)
  local times, last = {}, nil
  for i = 1, reps do
    local ms, value = timed(fn)
    times[i], last = ms, value
  end
  return stats.median(times), last
end

local function content(f, version)
  local lines = {}
  for i = 1, M.LINES do
    lines[i] = string.format("export const v%d_%d = %d; // file %d version %d", f, i, (f * 7919 + i * 104729) % 1000003,
      f, version)
  end
  return table.concat(lines, "\n") .. "\n"
end

-- A tar stream of `rel` under `root` (every entry of the walk), drained: bytes, or sent into `sink(read)`.
local function tar_of(root, rel, sink)
  local _, names = assert(snapshot.take(root .. "/" .. rel))
  local paths = {}
  for i, name in ipairs(names) do paths[i] = rel .. "/" .. name end
  local writer = assert(core.tar_writer(root, paths, {}))
  local bytes = 0
  local function read()
    local chunk = writer:read()
    if chunk then bytes = bytes + #chunk end
    return chunk
  end
  if sink then sink(read) else while read() do end end
  writer:close()
  return bytes
end

local function send_tree(sb, ws, rd)
  local files = assert(git.files(assert(git.detect(ws))))
  local writer = assert(core.tar_writer(ws, files.list, {}))
  local res = assert(sb:pipe_in("mkdir -p " .. core.sh_quote(rd) .. " && tar -x -f - -C " .. core.sh_quote(rd),
    function() return writer:read() end))
  writer:close()
  assert(res.code == 0, res.stderr)
end

local function inbound_rows(f, ws)
  for _, depth in ipairs(M.DEPTHS) do
    local info = assert(git.detect(ws))
    local ms, pack = median_of(M.REPS, function()
      local p = assert(git_pack.pack(info, { depth = depth }))
      git_pack.cleanup(p)
      return p
    end)
    f["pack_" .. depth] = { ms = ms, bytes = pack.bytes, commits = pack.commits }
  end
  f.gitdir_tar_ms, f.gitdir_tar_bytes = median_of(M.REPS, function() return tar_of(ws, ".git") end)
  f.tree_tar_bytes = 0
  local files = assert(git.files(assert(git.detect(ws))))
  local writer = assert(core.tar_writer(ws, files.list, {}))
  while true do
    local chunk = writer:read()
    if not chunk then break end
    f.tree_tar_bytes = f.tree_tar_bytes + #chunk
  end
  writer:close()
end

local function sandbox_rows(f, ws, tmp)
  local sb = assert(ferry.open("local"))
  local rd = tmp .. "/sandbox"
  send_tree(sb, ws, rd)
  local info = assert(git.detect(ws))
  f.inbound_ms = median_of(M.REPS, function()
    local pack = assert(git_pack.pack(info, { depth = 10 }))
    local report = assert(git_remote.inbound(sb, rd, pack))
    git_pack.cleanup(pack)
    assert(report.status == "ok", report.why)
  end)
  local plain = tmp .. "/plain"
  f.plain_inbound_ms = median_of(M.REPS, function()
    tar_of(ws, ".git", function(read)
      local res = assert(sb:pipe_in("rm -rf " .. plain .. " && mkdir -p " .. plain .. " && tar -x -f - -C " .. plain,
        read))
      assert(res.code == 0, res.stderr)
    end)
  end)
  -- the agent's 2 commits, brought back
  local run = function(script)
    local res = assert(sb:exec("cd " .. rd .. " && " .. script))
    assert(res.code == 0, res.stderr)
  end
  run("echo one >> " .. R.path_of(1) .. " && git commit -q -am one && echo two >> " .. R.path_of(2)
    .. " && git commit -q -am two")
  local expect = { ref = info.ref, branch = info.branch, base = info.head }
  local dest = tmp .. "/out.bundle"
  local report
  f.outbound_ms, report = median_of(M.REPS, function()
    return assert(git_remote.outbound(sb, rd, { ref = expect.ref, base = expect.base }, dest))
  end)
  f.outbound_bytes = report.bytes
  local imported
  f.import_ms, imported = median_of(1, function() return assert(git_import.import(info, dest, expect)) end)
  f.integrate_ms = median_of(1, function()
    local result = assert(git_integrate.integrate(info, imported.new, expect))
    assert(result.mode == "fast-forward", result.mode)
    assert(git_integrate.sync_index(info, result, {}))
  end)
  f.sandbox_gitdir_bytes = tar_of(rd, ".git")
  sb:close()
end

-- ferry.prepare then ferry.restore after 2 agent commits, REPS times, each on a fresh copy of the workspace:
-- in git mode (`git_mode` true) or with `.git` as files.
local function end_to_end(ws, tmp, git_mode)
  local prep, back, row = {}, {}, {}
  for i = 1, M.REPS do
    local w, rd, state = tmp .. "/e2e-ws", tmp .. "/e2e-sandbox", tmp .. "/e2e-state.json"
    R.sh(tmp, "rm -rf e2e-ws e2e-sandbox e2e-state.json && cp -a " .. core.sh_quote(ws) .. " e2e-ws")
    local t0 = now_ms()
    local opts = { provider = "local", workspace = w, remote_dir = rd, state = state, delta = false }
    if not git_mode then opts.git = false end
    local r = assert(ferry.prepare(opts))
    prep[i], row.prepare_bytes, row.prepare_commands = now_ms() - t0, r.bytes_sent, r.commands
    R.sh(rd, "echo one >> " .. R.path_of(1) .. " && git commit -q -am one && echo two >> " .. R.path_of(2)
      .. " && git commit -q -am two")
    t0 = now_ms()
    local b = assert(ferry.restore { state = state })
    back[i], row.restore_bytes, row.restore_commands = now_ms() - t0, b.bytes_received, b.commands
    assert(not git_mode or (b.git.mode == "fast-forward" and b.git.commits == 2), "git mode did not fast-forward")
    assert(R.git(w, { "log", "-1", "--format=%s" }) == "two\n", "the commits did not come back")
  end
  row.prepare_ms, row.restore_ms = stats.median(prep), stats.median(back)
  return row
end

--- Make the repository, measure; returns the figures.
function M.run()
  local tmp = helpers.tmpdir()
  local f = { commits = M.COMMITS, files = M.FILES }
  f.make_ms = timed(function()
    local repo = R.make { dir = tmp .. "/ws", commits = M.COMMITS, files = M.FILES, content = content }
    R.git(repo.dir, { "gc", "-q" })
  end)
  local ws = tmp .. "/ws"
  local ok, err = pcall(function()
    inbound_rows(f, ws)
    sandbox_rows(f, ws, tmp)
    f.e2e_git, f.e2e_files = end_to_end(ws, tmp, true), end_to_end(ws, tmp, false)
  end)
  helpers.rmtree(tmp)
  assert(ok, err)
  return f
end

local function kb(n) return string.format("%.1f kB", n / 1000) end

--- Print the figures as a markdown table.
function M.report(f)
  print(string.format("git: a repository of %d commits over %d files (made in %.1f s), working tree tar %s; "
    .. "times are medians of %d runs", f.commits, f.files, f.make_ms / 1000, kb(f.tree_tar_bytes), M.REPS))
  print("\n| what | git mode | `.git` as files | ratio |")
  print("|---|---|---|---|")
  for _, depth in ipairs(M.DEPTHS) do
    local p = f["pack_" .. depth]
    print(string.format("| inbound pack, depth %d (%d commits): bytes | %s | %s | %.3f |", depth, p.commits,
      kb(p.bytes), kb(f.gitdir_tar_bytes), p.bytes / f.gitdir_tar_bytes))
    print(string.format("| inbound pack, depth %d: time to make | %.0f ms | %.0f ms (tar) | %.2f |", depth, p.ms,
      f.gitdir_tar_ms, p.ms / f.gitdir_tar_ms))
  end
  print(string.format("| inbound into a local sandbox, depth 10 (pack, send, build repo + index) | %.0f ms | "
    .. "%.0f ms (send + extract) | %.2f |", f.inbound_ms, f.plain_inbound_ms, f.inbound_ms / f.plain_inbound_ms))
  print(string.format("| outbound, 2 new commits: bytes | %s | %s (`.git`; %s shallow) | %.4f |",
    kb(f.outbound_bytes), kb(f.gitdir_tar_bytes), kb(f.sandbox_gitdir_bytes), f.outbound_bytes / f.gitdir_tar_bytes))
  print(string.format("| outbound, 2 new commits: 1 sandbox command / import (verified) / integrate | %.0f / %.0f "
    .. "/ %.0f ms | - | - |", f.outbound_ms, f.import_ms, f.integrate_ms))
  local g, p = f.e2e_git, f.e2e_files
  print(string.format("| `ferry.prepare` end to end (depth 10): bytes sent | %s | %s | %.3f |", kb(g.prepare_bytes),
    kb(p.prepare_bytes), g.prepare_bytes / p.prepare_bytes))
  print(string.format("| `ferry.prepare` end to end: time (%d / %d commands) | %.0f ms | %.0f ms | %.2f |",
    g.prepare_commands, p.prepare_commands, g.prepare_ms, p.prepare_ms, g.prepare_ms / p.prepare_ms))
  print(string.format("| `ferry.restore` of 2 new commits: bytes received | %s | %s | %.3f |", kb(g.restore_bytes),
    kb(p.restore_bytes), g.restore_bytes / p.restore_bytes))
  print(string.format("| `ferry.restore` of 2 new commits: time (%d / %d commands) | %.0f ms | %.0f ms | %.2f |",
    g.restore_commands, p.restore_commands, g.restore_ms, p.restore_ms, g.restore_ms / p.restore_ms))
end

if arg and arg[0] and arg[0]:match("bench/git%.lua$") then M.report(M.run()) end

return M
