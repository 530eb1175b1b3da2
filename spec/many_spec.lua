-- `ferry prepare --many` / `ferry restore --many`: several sandboxes on one loop, at most --jobs at a time,
-- one failure not stopping the others; and ferry.prepare inside ferry.spawn tasks from Lua.
local ferry = require "ferry"
local cjson = require "cjson"
local helpers = require "support.helpers"

local FERRY = helpers.ferry_bin

local function run_ferry(args, env)
  local argv = { FERRY }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return assert(ferry.proc.run { argv = argv, env = env, timeout_ms = 120000 })
end

local function json_lines(stdout)
  local out = {}
  for line in stdout:gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
  return out
end

local function mkdir(path) assert(os.execute("mkdir -p '" .. path .. "'")) end

local BWRAP_WORKS = require("support.sandboxes").BWRAP_WORKS

-- An adapter that logs when each prepare's sync starts and ends (with a pause in between), so the spec can
-- count how many prepares were in flight at once.
local TIMING_ADAPTER = [[
local core = require "ferry.core"
local ferry = require "ferry"
local function log(what, ctx)
  local f = assert(io.open(ctx.env("FERRY_SPEC_TIMING"), "a"))
  f:write(string.format("%s %.3f %s\n", what, core.now_ms(), ctx.workspace))
  f:close()
end
return {
  name = "timing",
  hooks = {
    before_sync = function(ctx) log("start", ctx); ferry.sleep(250) end,
    after_sync = function(ctx) log("end", ctx) end,
  },
}
]]

-- The most intervals of the timing log that overlap, and how many started.
local function peak_overlap(log)
  local events = {}
  for what, t in log:gmatch("(%a+) ([%d.]+)") do
    events[#events + 1] = { t = tonumber(t), d = what == "start" and 1 or -1 }
  end
  table.sort(events, function(a, b) return a.t < b.t or (a.t == b.t and a.d < b.d) end)
  local now, peak, starts = 0, 0, 0
  for _, e in ipairs(events) do
    now = now + e.d
    peak = math.max(peak, now)
    if e.d == 1 then starts = starts + 1 end
  end
  return peak, starts
end

describe("ferry prepare/restore --many", function()
  local tmp, env, items, file, timing

  -- Sandbox i: local for odd i, bwrap for even i (local when bwrap cannot run here).
  local function sandbox(i)
    if i % 2 == 0 and BWRAP_WORKS then
      return "bwrap:" .. tmp .. "/box", "/sandbox/r" .. i, tmp .. "/box/r" .. i
    end
    return "local", tmp .. "/remote/r" .. i, tmp .. "/remote/r" .. i
  end

  before_each(function()
    tmp = helpers.tmpdir()
    mkdir(tmp .. "/policy/adapters")
    mkdir(tmp .. "/box")
    helpers.write_file(tmp .. "/policy/adapters/timing.lua", TIMING_ADAPTER)
    timing = tmp .. "/timing.log"
    env = { FERRY_PATH = tmp .. "/policy", FERRY_SPEC_TIMING = timing, PATH = os.getenv("PATH"),
      HOME = os.getenv("HOME") }
    items = {}
    for i = 1, 6 do
      local ws = tmp .. "/ws" .. i
      if i ~= 4 then -- workspace 4 is missing
        mkdir(ws .. "/src")
        helpers.write_file(ws .. "/README", "workspace " .. i .. "\n")
        helpers.write_file(ws .. "/src/main.c", "int main(void) { return " .. i .. "; }\n")
      end
      local provider, remote_dir, host = sandbox(i)
      items[i] = { provider = provider, adapter = "timing", workspace = ws, remote_dir = remote_dir,
        state = tmp .. "/state" .. i .. ".json", host = host }
    end
    file = tmp .. "/many.json"
    local list = {}
    for i, it in ipairs(items) do
      list[i] = { provider = it.provider, adapter = it.adapter, workspace = it.workspace,
        remote_dir = it.remote_dir, state = it.state }
    end
    helpers.write_file(file, cjson.encode(list))
  end)

  after_each(function() helpers.rmtree(tmp) end)

  it("prepares the others when one fails, at most --jobs at a time, and names the failed one", function()
    local r = run_ferry({ "prepare", "--many", file, "--jobs", "2" }, env)
    assert.equal(1, r.code, r.stderr)
    for i, it in ipairs(items) do
      local line = r.stdout:match("\n?(%u*%l* " .. it.workspace:gsub("%p", "%%%0") .. " %-> [^\n]*)")
      assert.is_string(line, "no summary line for workspace " .. i .. " in:\n" .. r.stdout)
      if i == 4 then
        assert.matches("^FAILED .* %-> " .. it.provider:gsub("%p", "%%%0") .. ":" .. it.remote_dir:gsub("%p", "%%%0")
          .. " %(0 B, %d+ ms%): prepare: workspace .*ws4", line)
      else
        assert.matches("^ok .* %-> " .. it.provider:gsub("%p", "%%%0") .. ":" .. it.remote_dir:gsub("%p", "%%%0")
          .. " %([%d.]+ %a+, %d+ ms%)$", line)
        assert.equal("workspace " .. i .. "\n", helpers.read_file(it.host .. "/README"))
        assert.equal("int main(void) { return " .. i .. "; }\n", helpers.read_file(it.host .. "/src/main.c"))
        assert.is_string(helpers.read_file(it.state))
      end
    end
    assert.matches("prepare %-%-many: 5 ok, 1 failed\n$", r.stdout)
    local peak, starts = peak_overlap(assert(helpers.read_file(timing)))
    assert.equal(5, starts)
    assert.equal(2, peak) -- in parallel, but never more than --jobs

    -- The default (8) runs all five at once.
    os.remove(timing)
    r = run_ferry({ "prepare", "--many", file }, env)
    assert.equal(1, r.code)
    assert.equal(5, (peak_overlap(helpers.read_file(timing))))
  end)

  it("prints one JSON object per sandbox and a final result line with --json", function()
    local r = run_ferry({ "prepare", "--many", file, "--jobs", "3", "--json" }, env)
    assert.equal(1, r.code, r.stderr)
    local lines = json_lines(r.stdout)
    assert.equal(7, #lines)
    local seen = {}
    for k = 1, 6 do
      local e = lines[k]
      assert.equal("sandbox", e.event)
      seen[e.index] = true
      assert.equal(items[e.index].workspace, e.workspace)
      assert.equal(e.index ~= 4, e.ok)
      if e.index == 4 then assert.matches("ws4", e.error) else assert.is_true(e.bytes > 0) end
    end
    assert.equal(6, #seen)
    local final = lines[7]
    assert.equal("result", final.event)
    assert.is_false(final.ok)
    assert.equal(1, final.failed)
    for i = 1, 6 do assert.equal(i, final.results[i].index) end
  end)

  it("restore --many brings every sandbox's changes back", function()
    table.remove(items, 4)
    local list = {}
    for i, it in ipairs(items) do list[i] = { state = it.state } end
    local restore_file = tmp .. "/restore.json"
    helpers.write_file(restore_file, cjson.encode(list))
    local r = run_ferry({ "prepare", "--many", file, "--jobs", "2" }, env)
    assert.equal(1, r.code, r.stderr)
    for k, it in ipairs(items) do
      helpers.write_file(it.host .. "/src/main.c", "edited in sandbox " .. k .. "\n")
      helpers.write_file(it.host .. "/NEW" .. k, "new " .. k .. "\n")
      os.remove(it.host .. "/README")
    end
    r = run_ferry({ "restore", "--many", restore_file, "--jobs", "2" }, env)
    assert.equal(0, r.code, r.stdout .. r.stderr)
    for k, it in ipairs(items) do
      assert.equal("edited in sandbox " .. k .. "\n", helpers.read_file(it.workspace .. "/src/main.c"))
      assert.equal("new " .. k .. "\n", helpers.read_file(it.workspace .. "/NEW" .. k))
      assert.is_nil(helpers.read_file(it.workspace .. "/README"))
      assert.matches("ok " .. it.state:gsub("%p", "%%%0") .. " %-> " .. it.provider:gsub("%p", "%%%0") .. ":", r.stdout)
    end
    assert.matches("restore %-%-many: 5 ok, 0 failed\n$", r.stdout)

    -- A file changed on both sides: every restore finishes, exit 3, the conflict is named.
    r = run_ferry({ "prepare", "--many", file, "--jobs", "2" }, env)
    assert.equal(1, r.code, r.stderr)
    helpers.write_file(items[1].host .. "/src/main.c", "sandbox side\n")
    helpers.write_file(items[1].workspace .. "/src/main.c", "host side\n")
    helpers.write_file(items[2].host .. "/NEW2", "changed in sandbox\n")
    r = run_ferry({ "restore", "--many", restore_file, "--json" }, env)
    assert.equal(3, r.code, r.stdout .. r.stderr)
    local final = json_lines(r.stdout)[6]
    assert.is_true(final.ok)
    assert.same({ "src/main.c" }, final.results[1].conflicts)
    assert.equal("host side\n", helpers.read_file(items[1].workspace .. "/src/main.c"))
    assert.equal("changed in sandbox\n", helpers.read_file(items[2].workspace .. "/NEW2"))

    -- A missing state file fails that one only.
    list[2] = { state = tmp .. "/no-such-state.json" }
    helpers.write_file(restore_file, cjson.encode(list))
    r = run_ferry({ "restore", "--many", restore_file }, env)
    assert.equal(1, r.code)
    assert.matches("FAILED " .. tmp:gsub("%p", "%%%0") .. "/no%-such%-state%.json %-> %?:%? %(0 B, %d+ ms%): restore: ",
      r.stdout)
    assert.matches("restore %-%-many: 4 ok, 1 failed", r.stdout)
  end)

  it("exits 2 naming the file, the item and the field for a bad FILE or --jobs", function()
    local function bad(content, args, pattern)
      local path = tmp .. "/bad.json"
      os.remove(path)
      if content then helpers.write_file(path, content) end
      local argv = args or { "prepare", "--many", path }
      local r = run_ferry(argv, env)
      assert.equal(2, r.code, table.concat(argv, " ") .. ": " .. r.stderr)
      assert.matches(pattern, r.stderr)
      assert.equal("", r.stdout)
    end
    local where = "^ferry: prepare: %-%-many: " .. tmp:gsub("%p", "%%%0") .. "/bad%.json: "
    bad(nil, nil, "^ferry: prepare: %-%-many: .*bad%.json: No such file")
    bad("[{", nil, where .. "not JSON")
    bad('{"provider": "local"}', nil, where .. "expected a JSON list of objects")
    bad("{}", nil, where .. "expected a JSON list")
    bad('[{"provider":"local","workspace":"/tmp","state":"/tmp/s"}, 7]', nil, where .. "item 2: expected an object")
    bad('[{"provider":"local","workspace":"/tmp","state":"/tmp/s"}, {"provider":"local","state":"/tmp/s"}]', nil,
      where .. 'item 2: missing field "workspace"')
    bad('[{"provider":"local","workspace":"/tmp","state":"/tmp/s","remote_dir":5}]', nil,
      where .. 'item 1: field "remote_dir" must be a non%-empty string')
    bad('[{"provider":"local","workpsace":"/tmp","workspace":"/tmp","state":"/tmp/s"}]', nil,
      where .. 'item 1: unknown field "workpsace"')
    bad('[{"workspace":"/tmp"}]', { "restore", "--many", tmp .. "/bad.json" },
      "^ferry: restore: %-%-many: .*item 1: missing field \"state\"")
    for _, jobs in ipairs { "0", "-1", "1.5", "x" } do
      bad("[]", { "prepare", "--many", tmp .. "/bad.json", "--jobs", jobs },
        "%-%-jobs expects an integer >= 1, got '" .. jobs:gsub("%p", "%%%0") .. "'")
    end
    bad(nil, { "prepare", "-p", "local", "-w", tmp, "--jobs", "2" }, "%-%-jobs needs %-%-many FILE")
    bad("[]", { "prepare", "--many", tmp .. "/bad.json", "-p", "local" }, "%-p cannot be combined with %-%-many")
    bad("[]", { "restore", "--many", tmp .. "/bad.json", "--state", "x" }, "%-%-state cannot be combined")
  end)

  it("an empty list does nothing and succeeds", function()
    helpers.write_file(tmp .. "/empty.json", " [ ] ")
    local r = run_ferry({ "prepare", "--many", tmp .. "/empty.json", "--json" }, env)
    assert.equal(0, r.code, r.stderr)
    local final = json_lines(r.stdout)[1]
    assert.same({ event = "result", verb = "prepare", ok = true, failed = 0, results = {} }, final)
    assert.matches('"results":%[%]', r.stdout)
  end)

  it("documents --many and --jobs in both verbs' --help", function()
    for _, verb in ipairs { "prepare", "restore" } do
      local r = run_ferry { verb, "--help" }
      assert.matches("%-%-many FILE", r.stdout)
      assert.matches("%-%-jobs N", r.stdout)
    end
  end)
end)

describe("ferry.prepare inside ferry.spawn tasks", function()
  it("prepares several sandboxes concurrently from Lua and restores them", function()
    local tmp = helpers.tmpdir()
    local tasks = {}
    for i = 1, 4 do
      local ws = tmp .. "/ws" .. i
      mkdir(ws)
      helpers.write_file(ws .. "/file", "content " .. i .. "\n")
      tasks[i] = ferry.spawn(function()
        local r, err = ferry.prepare { provider = "local", workspace = ws, remote_dir = tmp .. "/r" .. i,
          state = tmp .. "/s" .. i .. ".json" }
        assert(r, err)
        return r
      end)
    end
    local results = ferry.wait(tasks)
    for i = 1, 4 do
      assert.equal(tmp .. "/r" .. i, results[i].remote_dir)
      assert.equal("content " .. i .. "\n", helpers.read_file(tmp .. "/r" .. i .. "/file"))
      helpers.write_file(tmp .. "/r" .. i .. "/file", "changed " .. i .. "\n")
    end
    local restored = require("ferry.pool").run({ 1, 2, 3, 4 }, 2, function(i)
      return assert(ferry.restore { state = tmp .. "/s" .. i .. ".json" })
    end)
    for i = 1, 4 do
      assert.same({ "file" }, restored[i].changed)
      assert.equal("changed " .. i .. "\n", helpers.read_file(tmp .. "/ws" .. i .. "/file"))
    end
    helpers.rmtree(tmp)
  end)
end)
