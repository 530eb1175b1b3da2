--- `make fuzz`: run each libFuzzer target for FUZZ_SECONDS (default 600), FUZZ_JOBS at a time (default 1),
-- and print per target: executions, exec/s, corpus size (units libFuzzer kept, and files in the corpus dir),
-- coverage (cov: C-edge counters, ft: features, Lua lines included) and findings. Exit 1 when any target
-- found a crash, a leak, a timeout (-timeout=10) or a contract violation; the input that did it is in
-- BUILD/artifacts/<target>/.
--
-- usage: ferry run spec/fuzz/run.lua BUILD TARGET...   (BUILD: the fuzz build dir, e.g. build/fuzz)
-- Seeds are read from spec/fuzz/<target>/; new corpus entries go to BUILD/corpus/<target>/ (kept between
-- runs, not in git); each target's log is BUILD/logs/<target>.log; the table also goes to BUILD/summary.txt.
local ferry = require "ferry"
local core = require "ferry.core"

-- The largest input each target gets: enough for what the parser meets in practice, small enough that a
-- mutation still changes something.
local MAX_LEN = {
  b64 = 4096, tar_guard = 32768, listing = 4096, status = 4096, state = 8192, excludes = 1024, tree_file = 4096,
}

local build = assert(arg[1], "usage: run.lua BUILD TARGET...")
local targets = table.move(arg, 2, #arg, 1, {})
assert(#targets > 0, "usage: run.lua BUILD TARGET...")
local seconds = math.tointeger(tonumber(os.getenv("FUZZ_SECONDS") or "600"))
local jobs = math.tointeger(tonumber(os.getenv("FUZZ_JOBS") or "1"))
assert(seconds and seconds > 0, "FUZZ_SECONDS must be a whole number of seconds > 0")
assert(jobs and jobs > 0, "FUZZ_JOBS must be a whole number > 0")

local function mkdir(path)
  assert(os.execute("mkdir -p " .. core.sh_quote(path)))
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function count(dir)
  local names = core.fs_readdir(dir) or {}
  return #names, names
end

-- The figures of one run from its log.
local function figures(log)
  local f = {}
  f.execs = tonumber(log:match("stat::number_of_executed_units:%s*(%d+)"))
  f.rate = tonumber(log:match("stat::average_exec_per_sec:%s*(%d+)"))
  f.new_units = tonumber(log:match("stat::new_units_added:%s*(%d+)"))
  f.rss = tonumber(log:match("stat::peak_rss_mb:%s*(%d+)"))
  for cov, ft, corp in log:gmatch("cov: (%d+) ft: (%d+) corp: (%d+)") do
    f.cov, f.ft, f.units = tonumber(cov), tonumber(ft), tonumber(corp)
  end
  return f
end

local function run_target(name)
  local bin = build .. "/fuzz_" .. name
  local corpus, artifacts = build .. "/corpus/" .. name, build .. "/artifacts/" .. name .. "/"
  local scratch, log_path = build .. "/scratch/" .. name, build .. "/logs/" .. name .. ".log"
  mkdir(corpus)
  core.fs_remove_tree(artifacts) -- what an earlier run found is in its own log
  mkdir(artifacts)
  mkdir(build .. "/logs")
  core.fs_remove_tree(scratch)
  local log = assert(io.open(log_path, "wb"))
  local argv = { bin, "-max_len=" .. MAX_LEN[name], "-timeout=10", "-rss_limit_mb=2048",
    "-max_total_time=" .. seconds, "-print_final_stats=1", "-artifact_prefix=" .. artifacts, corpus,
    "spec/fuzz/" .. name }
  io.stderr:write("fuzz: ", table.concat(argv, " "), "\n")
  local started = os.time()
  local res, err = ferry.proc.run {
    argv = argv,
    env = { FERRY_FUZZ_SCRATCH = scratch, ASAN_OPTIONS = "detect_leaks=1:abort_on_error=1:symbolize=1",
      UBSAN_OPTIONS = "print_stacktrace=1:halt_on_error=1" },
    timeout_ms = (seconds + 300) * 1000,
    on_stdout = function(chunk) log:write(chunk) end,
    on_stderr = function(chunk) log:write(chunk) end,
  }
  log:close()
  core.fs_remove_tree(scratch)
  local f = figures(read(log_path))
  f.name, f.seconds = name, os.time() - started
  f.corpus = count(corpus)
  local _, found = count(artifacts)
  f.findings = {}
  for _, a in ipairs(found) do f.findings[#f.findings + 1] = artifacts .. a end
  table.sort(f.findings)
  if not res then
    f.findings[#f.findings + 1] = "could not run: " .. tostring(err)
  elseif res.code ~= 0 and #f.findings == 0 then
    f.findings[#f.findings + 1] = "exit code " .. res.code .. " (see " .. log_path .. ")"
  end
  return f
end

local results, errors = require("ferry.pool").run(targets, jobs, run_target)
for i, name in ipairs(targets) do
  if errors[i] then results[i] = { name = name, corpus = 0, findings = { "runner error: " .. errors[i] } } end
end

local lines = {
  string.format("fuzz: %d s per target, %d at a time", seconds, jobs),
  string.format("%-10s %12s %8s %8s %8s %6s %7s %7s  %s", "target", "executions", "exec/s", "corpus", "files",
    "cov", "ft", "rss MB", "findings"),
}
local failed = 0
for _, f in ipairs(results) do
  if #f.findings > 0 then failed = failed + 1 end
  lines[#lines + 1] = string.format("%-10s %12s %8s %8s %8d %6s %7s %7s  %s", f.name, tostring(f.execs or "?"),
    tostring(f.rate or "?"), tostring(f.units or "?"), f.corpus, tostring(f.cov or "?"), tostring(f.ft or "?"),
    tostring(f.rss or "?"), #f.findings == 0 and "none" or table.concat(f.findings, " "))
end
local text = table.concat(lines, "\n") .. "\n"
io.stdout:write(text)
local out = io.open(build .. "/summary.txt", "wb")
if out then
  out:write(text)
  out:close()
end
if failed > 0 then
  io.stderr:write("fuzz: ", failed, " target(s) with findings; reproduce with BUILD/fuzz_<target> <artifact>\n")
  os.exit(1)
end
