--- `make demo`: a workspace goes into a sandbox, an "agent" edits it there while the host edits another
--- file, and the work comes back merged. Run as `build/ferry run spec/demo/demo.lua`; exits non-zero when a
--- step fails. FERRY_DEMO_KEEP=1 keeps the temp dir; FERRY_DEMO_PROVIDER=local skips bubblewrap.
local ferry = require "ferry"

local NO_COLOR = os.getenv("NO_COLOR") ~= nil or not (ferry.core.isatty and ferry.core.isatty(1))
local function bold(s) return NO_COLOR and s or "\27[1m" .. s .. "\27[0m" end

local step_no = 0
local function step(text)
  step_no = step_no + 1
  io.write("\n", bold(("%d. %s"):format(step_no, text)), "\n")
  io.stdout:flush()
end

local function say(fmt, ...) io.write("   ", fmt:format(...), "\n") end

local cleanup = {}
local function finish(code)
  for i = #cleanup, 1, -1 do cleanup[i]() end
  io.stdout:flush()
  os.exit(code)
end

local function die(what, err)
  io.stderr:write("demo: ", what, " failed: ", tostring(err), "\n")
  finish(1)
end

local function run(argv)
  local r, err = ferry.proc.run { argv = argv }
  if not r then die(table.concat(argv, " "), err) end
  return r
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

-- Every path under `dir`, sorted, dirs marked with a trailing "/".
local function tree(dir)
  local r = run { "find", dir, "-mindepth", "1", "-printf", "%P\t%y\t%s\n" }
  local lines = {}
  for rel, kind, size in r.stdout:gmatch("([^\t\n]+)\t(%a)\t(%d+)\n") do
    lines[#lines + 1] = kind == "d" and rel .. "/" or ("%-24s %6d bytes"):format(rel, tonumber(size))
  end
  table.sort(lines)
  return lines
end

local function list(t) return #t == 0 and "(none)" or table.concat(t, ", ") end

---------------------------------------------------------------------------------------------------------------

if not ferry.prepare or not ferry.restore or not ferry.open then
  die("loading the managed runtime", "this build has no ferry.prepare/ferry.restore/ferry.open")
end

local tmp = run({ "mktemp", "-d", "/tmp/ferry-demo.XXXXXX" }).stdout:gsub("\n$", "")
if os.getenv("FERRY_DEMO_KEEP") then
  print("(keeping " .. tmp .. ")")
else
  cleanup[#cleanup + 1] = function() run { "rm", "-rf", tmp } end
end
local ws = tmp .. "/workspace"

step("An example workspace on the host: " .. ws)
run { "mkdir", "-p", ws .. "/src", ws .. "/docs" }
write_file(ws .. "/README.md", "# hello\n\nA tiny project.\n")
write_file(ws .. "/src/main.lua", 'print("hello")\n')
write_file(ws .. "/src/util.lua", "return { answer = 42 }\n")
write_file(ws .. "/docs/notes.txt", "old notes, to be deleted by the agent\n")
write_file(ws .. "/docs/todo.txt", "- write docs\n")
for _, line in ipairs(tree(ws)) do say("%s", line) end

step("Choose a sandbox")
local provider, remote_dir
local forced_local = os.getenv("FERRY_DEMO_PROVIDER") == "local"
local probe = not forced_local and ferry.proc.run { argv = { "bwrap", "--ro-bind", "/", "/", "true" } }
if probe and probe.code == 0 then
  run { "mkdir", tmp .. "/sandbox" }
  provider = "bwrap:" .. tmp .. "/sandbox"
  say("bubblewrap works here: %s (host read-only, %s/sandbox mounted at /sandbox)", provider, tmp)
else
  provider = "local"
  remote_dir = tmp .. "/remote"
  if forced_local then
    say("FERRY_DEMO_PROVIDER=local: using the local provider (no isolation)")
  else
    say("bubblewrap cannot run here (%s); falling back to the local provider (no isolation)",
      probe and (probe.stderr:match("[^\n]+") or "exit " .. probe.code) or "bwrap not found")
  end
  say("with %s standing in for the sandbox's workspace", remote_dir)
end

step("ferry prepare: copy the workspace into the sandbox")
local state_file = tmp .. "/state.json"
local prep, perr = ferry.prepare {
  provider = provider, adapter = "shell", workspace = ws, remote_dir = remote_dir, state = state_file,
}
if not prep then die("prepare", perr) end
remote_dir = prep.remote_dir or remote_dir
say("workspace is at %s in the sandbox; state saved to %s", remote_dir, state_file)
say("(same as: ferry prepare -p %s -w %s%s --state %s)", provider, ws,
  provider == "local" and " -r " .. remote_dir or "", state_file)

step("The agent works in the sandbox: edits src/main.lua, adds src/feature.lua, deletes docs/notes.txt")
local script = table.concat({
  "cd " .. ferry.sh.quote(remote_dir),
  "printf 'print(\"hello from the sandbox\")\\n' >> src/main.lua",
  "printf 'return function() return \"new feature\" end\\n' > src/feature.lua",
  "rm docs/notes.txt",
  "echo \"agent: done in $(pwd)\"",
}, " && ")
say("$ %s", script)
local sb, oerr = ferry.open(provider)
if not sb then die("opening " .. provider, oerr) end
local r, xerr = sb:exec(script)
sb:close()
if not r then die("the agent's command", xerr) end
for line in (r.stdout or ""):gmatch("[^\n]+") do say("%s", line) end
if r.code ~= 0 then die("the agent's command", "exit " .. r.code .. ": " .. (r.stderr or "")) end

step("Meanwhile, on the host: edit docs/todo.txt")
write_file(ws .. "/docs/todo.txt", "- write docs\n- ship it (edited on the host during the run)\n")
say("the host's edit must survive the restore")

step("ferry restore: bring the work back, merged against the baseline")
local res, rerr = ferry.restore { state = state_file }
if not res then die("restore", rerr) end
say("changed:   %s", list(res.changed or {}))
say("deleted:   %s", list(res.deleted or {}))
say("conflicts: %s", list(res.conflicts or {}))
say("(same as: ferry restore --state %s)", state_file)

step("The workspace on the host now")
for _, line in ipairs(tree(ws)) do say("%s", line) end
io.write("\n")
say("src/main.lua:")
for line in (read_file(ws .. "/src/main.lua") or ""):gmatch("[^\n]+") do say("  | %s", line) end
say("docs/todo.txt:")
for line in (read_file(ws .. "/docs/todo.txt") or ""):gmatch("[^\n]+") do say("  | %s", line) end

local checks = {
  { "the sandbox's edit of src/main.lua came back",
    (read_file(ws .. "/src/main.lua") or ""):find("hello from the sandbox", 1, true) },
  { "src/feature.lua was added", read_file(ws .. "/src/feature.lua") ~= nil },
  { "docs/notes.txt was deleted", read_file(ws .. "/docs/notes.txt") == nil },
  { "the host's edit of docs/todo.txt was kept",
    (read_file(ws .. "/docs/todo.txt") or ""):find("edited on the host", 1, true) },
  { "no conflicts", #(res.conflicts or {}) == 0 },
}
step("Checks")
local failed = 0
for _, c in ipairs(checks) do
  say("%s %s", c[2] and "ok  " or "FAIL", c[1])
  if not c[2] then failed = failed + 1 end
end
finish(failed == 0 and 0 or 1)
