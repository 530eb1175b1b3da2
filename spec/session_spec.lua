-- Persistent session (ferry.open(spec, {session = true})) over local, bwrap, busybox (busybox sh, dd and
-- setsid) and ssh: same results as one process per command, one sandbox process for many commands,
-- per-command timeouts that spare the session, a dead shell reopened.
local ferry = require "ferry"
local core = require "ferry.core"
local helpers = require "support.helpers"
local sandboxes = require "support.sandboxes"
local sshd = require "support.sshd"

local MARKER_LIKE = "\nFERRY" .. string.rep("ab", 20) .. " 0 0\n0\n12\n\0\0"

-- Scripts whose results must not depend on the path a command takes.
local CASES = {
  { "echo hi; echo err >&2; exit 3" },
  { "printf '\\000\\377ab\\n\\nc'" },           -- binary, no trailing newline
  { "printf 'x\\n\\n'; printf 'e\\n\\n' >&2" },  -- trailing newlines kept exactly
  { "printf err >&2; exit 0" },
  { "" },
  { "cat", stdin = MARKER_LIKE },
  { "cat", stdin = "" },
  { "cat" },                                     -- no stdin: reads /dev/null
  { "wc -c; printf '%s' \"$0\"", stdin = string.rep("\0", 70000) },
  { "pwd; echo \"$FOO\"; exit 7", cwd = "/tmp", env = { FOO = "a b 'c'" } },
}

local function same_result(a, b, what)
  for _, k in ipairs { "code", "stdout", "stderr", "timed_out", "signal" } do
    assert.are.equal(a[k], b[k], what .. ": " .. k)
  end
end

local function median(list)
  table.sort(list)
  return list[(#list + 1) // 2]
end

local function round_trip_ms(sb, n)
  local times = {}
  for i = 1, n do
    local t0 = core.now_ms()
    local res = assert(sb:exec("true"))
    assert.equal(0, res.code)
    times[i] = core.now_ms() - t0
  end
  return median(times)
end

-- The checks every provider gets, given a function opening a fresh sandbox (opts -> sandbox) and a dir in it.
local function provider_cases(label, open, dir)
  it("gives the same results as one process per command (" .. label .. ")", function()
    local plain, sess = open { session = false }, open { session = true }
    local blob = helpers.random_bytes(300000) .. MARKER_LIKE
    local cases = { { "cat", stdin = blob }, { "head -c 5; echo", stdin = blob } }
    table.move(CASES, 1, #CASES, #cases + 1, cases)
    for i, case in ipairs(cases) do
      local opts = { stdin = case.stdin, cwd = case.cwd, env = case.env }
      local a = assert(plain:exec(case[1], opts))
      local b = assert(sess:exec(case[1], opts))
      same_result(a, b, label .. " case " .. i .. " " .. case[1])
    end
    -- every client operation goes through the session too
    assert(plain:mkdir(dir()))
    local path = dir() .. "/f.bin"
    assert(sess:write(path, blob))
    assert.equal(blob, assert(plain:read(path)))
    assert.equal(blob, assert(sess:read(path)))
    assert.same(assert(plain:ls(dir())), assert(sess:ls(dir())))
    assert.equal(1, sess.provider.session.starts)
    plain:close()
    sess:close()
  end)

  it("runs many commands in one sandbox process and prints the round trip (" .. label .. ")", function()
    local plain, sess = open { session = false }, open { session = true }
    local shells = {}
    for i = 1, 40 do
      local res = assert(sess:exec("echo $PPID; echo " .. i))
      shells[res.stdout:match("^(%d+)\n")] = true
      assert.equal(i, tonumber(res.stdout:match("\n(%d+)\n$")))
    end
    assert.equal(1, sess.provider.session.starts)
    local count = 0
    for _ in pairs(shells) do count = count + 1 end
    assert.equal(1, count)
    local with, without = round_trip_ms(sess, 30), round_trip_ms(plain, 30)
    print(string.format("\n%s: median round trip %.2f ms through the session, %.2f ms one process per command "
      .. "(x%.2f)", label, with, without, without / with))
    -- a local `sh -c` costs one fork+exec, less than the session's framing; elsewhere starting a process is dear
    if label ~= "local" then assert.is_true(with < without, "the session is slower than a process per command") end
    plain:close()
    sess:close()
  end)

  it("streams a command's stdin while it runs, nothing staged first (" .. label .. ")", function()
    local sess = open { session = true }
    local out, calls = {}, 0
    local function seen(text) return table.concat(out):find(text, 1, true) ~= nil end
    local res = assert(sess:exec("read l; echo \"got $l\"; cat; echo done", {
      stdin = function()
        calls = calls + 1
        if calls == 1 then return "ping\n" end
        if calls == 2 then -- the command answered the first line before the input ended
          local deadline = core.now_ms() + 5000
          while not seen("got ping") and core.now_ms() < deadline do ferry.sleep(10) end
          return seen("got ping") and "answered\n" or "never answered\n"
        end
        return nil
      end,
      on_stdout = function(c) out[#out + 1] = c end,
    }))
    assert.equal(0, res.code)
    assert.equal("got ping\nanswered\ndone\n", table.concat(out))
    sess:close()
  end)

  it("detects a command that did not take all its input, with and without the session (" .. label .. ")", function()
    local data = string.rep("0123456789", 30000)
    for _, sb in ipairs { open { session = false }, open { session = true } } do
      local res, err, code = sb:pipe_in("head -c 100 > /dev/null", data)
      assert.is_nil(res)
      assert.equal("EIO", code)
      local read = tonumber(err:match("^pipe_in: sent 300000 bytes but the sandbox read (%d+)$"))
      assert.truthy(read and read < 300000 or err == "pipe_in: sent 300000 bytes but the sandbox command ended "
        .. "before its input did", err)
      res = assert(sb:pipe_in("wc -c", data))
      assert.same({ 0, "300000\n", 300000 }, { res.code, res.stdout:gsub("^%s+", ""), res.count })
      sb:close()
    end
  end)

  it("kills a timed-out command's process group, not the session (" .. label .. ")", function()
    local sess = open { session = true }
    local res = assert(sess:exec("sleep 30 & echo $!; wait", { timeout_ms = 300 }))
    assert.is_true(res.timed_out)
    assert.equal(143, res.code)
    assert.equal("SIGTERM", res.signal)
    assert.is_true(res.duration_ms < 5000, res.duration_ms)
    local child = res.stdout:match("^(%d+)\n$")
    assert.is_truthy(child, res.stdout)
    -- gone, or a zombie where the sandbox's pid 1 does not reap orphans
    local state = assert(sess:exec("awk '{print $3}' /proc/" .. child .. "/stat 2>/dev/null")).stdout
    assert.is_true(state == "" or state == "Z\n", "the background sleep lives: " .. state)
    -- a command that ignores TERM gets KILL after the grace period
    res = assert(sess:exec("trap '' TERM; sleep 30", { timeout_ms = 200, kill_grace_ms = 200 }))
    assert.is_true(res.timed_out)
    assert.equal(137, res.code)
    assert.equal("SIGKILL", res.signal)
    res = assert(sess:exec("echo still here"))
    assert.same({ 0, "still here\n", false }, { res.code, res.stdout, res.timed_out })
    assert.equal(1, sess.provider.session.starts)
    sess:close()
  end)

  it("reopens a shell that died (" .. label .. ")", function()
    local sess = open { session = true }
    local first = assert(sess:exec("echo $PPID")).stdout
    local res, err, code = sess:exec("kill -9 $PPID; sleep 0.1")
    assert.is_nil(res)
    assert.equal("EIO", code)
    assert.matches("^session to " .. sess.provider.name:gsub("%p", "%%%0")
      .. ": the sandbox shell exited %(.-%) while running a command; the next command reopens it$", err)
    local again = assert(sess:exec("echo $PPID; echo ok"))
    assert.equal(0, again.code)
    assert.matches("\nok\n$", again.stdout)
    assert.equal(2, sess.provider.session.starts)
    -- killed from the host while idle: the next command just reopens it
    assert(ferry.proc.run { argv = { "kill", "-9", tostring(sess.provider.session.pid) } })
    ferry.sleep(100)
    assert.equal("ok\n", assert(sess:exec("echo ok")).stdout)
    assert.equal(3, sess.provider.session.starts)
    assert.are_not.equal(first, again.stdout)
    sess:close()
    assert.same({ nil, "session to " .. sess.provider.name .. ": closed", "EPIPE" },
      { sess.provider.session:exec("true") })
  end)
end

describe("session", function()
  local boxes = {}
  after_each(function()
    for _, box in ipairs(boxes) do box:cleanup() end
    boxes = {}
  end)

  for _, label in ipairs { "local", "bwrap", "busybox" } do
    local current
    local function open(opts)
      if not current then
        current = sandboxes.make(label)
        boxes[#boxes + 1] = current
      end
      local sb = current:open(opts)
      return sb
    end
    before_each(function() current = nil end)
    provider_cases(label, open, function() return current.root end)
  end

  it("starts one sandbox process for many commands (counted by the provider)", function()
    local box = sandboxes.counting("cmd")
    boxes[#boxes + 1] = box
    local sb = box:open { session = true }
    box:reset() -- the provider's probe at open time
    for i = 1, 25 do assert.equal(tostring(i) .. "\n", assert(sb:exec("echo " .. i)).stdout) end
    assert(sb:write(box.root .. "/x", "data"))
    assert.equal("data", assert(sb:read(box.root .. "/x")))
    assert.equal(1, box:count())
    sb:close()
    local plain = box:open()
    box:reset()
    for i = 1, 5 do assert(plain:exec("echo " .. i)) end
    assert.equal(5, box:count())
  end)

  it("runs concurrent tasks' commands one at a time, each with its own output", function()
    local box = sandboxes.make("local")
    boxes[#boxes + 1] = box
    local sb = box:open { session = true }
    local tasks = {}
    for i = 1, 8 do
      tasks[i] = ferry.spawn(function()
        local res = assert(sb:exec("cat; echo " .. i .. " >&2", { stdin = string.rep(tostring(i), 50000) }))
        return res.stdout == string.rep(tostring(i), 50000) and res.stderr == i .. "\n"
      end)
    end
    for _, ok in ipairs(ferry.wait(tasks)) do assert.is_true(ok) end
    assert.equal(1, sb.provider.session.starts)
    sb:close()
  end)

  it("ends its shell on close", function()
    local box = sandboxes.make("local")
    boxes[#boxes + 1] = box
    local sb = box:open { session = true }
    assert(sb:exec("true"))
    local pid = sb.provider.session.pid
    sb:close()
    assert.equal(1, ferry.proc.run({ argv = { "sh", "-c", "kill -0 " .. pid .. " 2>/dev/null" } }).code)
  end)

  it("closes a shell that outlives its close grace: KILL after the grace, close returns, nothing is left", function()
    -- the session's shell runs under a wrapper that lingers once the shell read EOF, as a stuck sandbox would
    local mark = "31.5" .. math.random(100000, 999999)
    local sb = assert(ferry.open("cmd:sh -c '\"$@\"; trap \"\" TERM HUP; sleep " .. mark .. "' linger",
      { session = true, probe = false }))
    assert.equal("ok\n", assert(sb:exec("echo ok")).stdout)
    assert.is_true(sb.provider.session.alive)
    local t0 = core.now_ms()
    sb:close()
    local took = core.now_ms() - t0
    assert.is_true(took >= 1900 and took < 6000, took) -- the close grace is 2 s: EOF alone did not end it
    assert.is_false(sb.provider.session.alive)
    assert.equal("SIGKILL", sb.provider.session.exit.signal)
    collectgarbage() -- the close's timer fired, then was stopped; its Lua value goes now
    collectgarbage()
    ferry.sleep(50)
    assert.same({}, helpers.pids_with(mark))
  end)

  describe("over ssh", function()
    local server, started = nil, nil
    setup(function()
      local ok, s = pcall(sshd.start)
      if ok then server, started = s, true end
    end)
    teardown(function() if server then server:stop() end end)
    local function open(opts)
      assert(started, "sshd did not start")
      return assert(ferry.open(server:url(), opts))
    end
    local remote = "/tmp/ferry-session-spec-" .. core.getpid() .. "-" .. math.random(1, 1e9)
    provider_cases("ssh", open, function() return remote end)

    it("is the default over ssh (caps.costly), one process per command with session = false", function()
      local sb = open {}
      assert.is_true(sb.caps.costly)
      assert.truthy(sb.provider.session)
      assert.equal("x\n", assert(sb:exec("echo x")).stdout)
      assert.equal(1, sb.provider.session.starts)
      sb:close()
      local plain = open { session = false }
      assert.is_nil(plain.provider.session)
      plain:close()
      local forced = assert(ferry.open("local", { session = true }))
      assert.truthy(forced.provider.session)
      forced:close()
      local lo = assert(ferry.open("local"))
      assert.is_nil(lo.provider.session)
      lo:close()
    end)

    it("finds its shell dead within one round trip when the sandbox killed it while idle (ssh)", function()
      local sb, plain = open {}, open { session = false }
      local shell = assert(sb:exec("echo $PPID")).stdout:match("^(%d+)\n$")
      assert.truthy(shell)
      assert.equal(0, assert(plain:exec("kill -9 " .. shell)).code)
      ferry.sleep(200)
      local t0 = core.now_ms()
      local res = assert(sb:exec("echo $PPID"))
      local took = core.now_ms() - t0
      assert.equal(0, res.code)
      assert.are_not.equal(shell .. "\n", res.stdout)
      assert.equal(2, sb.provider.session.starts)
      assert.is_true(took < 2000, "took " .. took .. " ms")
      sb:close()
      plain:close()
    end)
  end)
end)
