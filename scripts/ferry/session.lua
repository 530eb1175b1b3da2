--- ferry.session: one long-lived shell in the sandbox that runs every command of a provider. ferry.open uses
-- it by default where starting a command is costly (caps.costly: ssh, docker, podman, kubectl, ...); `session
-- = false` opts out, `session = true` opts in elsewhere. A command then costs one round trip on the open
-- channel, not a new ssh/docker exec.
--
-- The shell runs BOOT (below) as `sh -c`, so the shell itself never reads its stdin: only `read` (one byte
-- at a time) and `dd iflag=fullblock` (exactly the bytes asked) do, so nothing can desynchronise the stream.
-- (busybox `head -c N` reads past N on a pipe; dd does not.) Per command the host sends
--   "<script bytes, or -lines> <has stdin 0|1> <marker> <timeout s|0> <grace, 0.1 s> <env lines>\n" <script>
--   <env lines: shell text setting the command's environment, see ferry.channel>
--   [ "<n>\n" <n bytes> ... "0\n" ]            stdin, streamed while the command runs (ferry.channel's frames)
-- and the shell answers "<marker>\n" on stdout before it starts the command (the host knows the command
-- ran: a shell that died before this ack is reopened and the command sent again), "\n<marker> <exit code>
-- <timed out 0|1>\n" on stdout once it ended (the host then stops sending stdin: the frames end with the
-- current one) and "\n<marker> <bytes of stdin relayed, or ->\n" on stderr after the command's own output;
-- exactly that one newline before the marker is stripped.
-- A command with stdin reads a fifo made for it (a fresh one each time: a background process of an earlier
-- command may hold an old one open); a watcher relays the frames into it (ferry.channel's ferry_relay) while
-- the command runs, and the shell, which holds the fifo's read end too, drains what the command left unread
-- until the end frame (`wc -c`: so the next header is where it expects it), and reports the bytes relayed
-- less those: what the command read, so that one that ended before its input did is told apart.
-- The command runs as `setsid sh -c SCRIPT` (a process group of its own; in the foreground, so its signals
-- are not ignored as an asynchronous command's SIGINT would be); its environment comes in the variable
-- ferry_x of its own environment and is applied by its shell, so no value is on a command line in the
-- sandbox. While it runs, the watcher reads the session's stdin: after the input (if any), a line or EOF (the
-- host closed the session: ferry was interrupted, or died) stops the command's group (ferry.channel's
-- ferry_stop: TERM, then KILL after the grace period); EOF in the middle of the input does too. With a
-- timeout a watchdog inside the sandbox does the same after it: a kill sent through a second provider command
-- would not reach a bwrap sandbox, whose processes live in their own pid namespace. A line that is not a
-- header is skipped. The shell's own stderr is /dev/null (a shell reports "Terminated" for a child a signal
-- ended); the command and the framing have the real one (saved as fd 4). The shell outlives TERM, HUP and
-- INT (caught: the command starts with its defaults) so that its watcher still finds the command as its
-- child; EOF on its stdin ends it, after the command.
local channel = require "ferry.channel"
local core = require "ferry.core"
local proc = require "ferry.proc"
local task = require "ferry.task"
local util = require "ferry.util"

local M = {}

local DEFAULT_GRACE_MS = 2000
local DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024
local BACKSTOP_MS = 10000 -- past timeout + grace, the host gives up on the sandbox's watchdog
local CLOSE_GRACE_MS = DEFAULT_GRACE_MS + 1000 -- the shell's watcher stops a running command within the grace
local LINE_MODE_MAX = 8192 -- a script this short is sent as lines the shell reads itself (no dd process)

local BOOT = [[
ferry_tmp=%s/.ferry-session-%s
ferry_ss= ferry_i=0
command -v setsid >/dev/null 2>&1 && ferry_ss=setsid
ferry_take() { [ "$1" -gt 0 ] || return 0; dd bs="$1" count=1 iflag=fullblock 2>/dev/null; }
%s
trap : TERM HUP INT
trap 'rm -f "$ferry_tmp.n" "$ferry_tmp.to"' EXIT
exec 3<&0 4>&2 2>/dev/null
while IFS=' ' read -r ferry_sl ferry_in ferry_mk ferry_to ferry_gr ferry_ne; do
  case $ferry_sl in ''|*[!0-9-]*) continue ;; esac
  if [ "$ferry_sl" -lt 0 ]; then
    ferry_s= ferry_k=$((-ferry_sl))
    while [ "$ferry_k" -gt 0 ]; do
      IFS= read -r ferry_l || exit 96
      ferry_s="$ferry_s$ferry_l
"
      ferry_k=$((ferry_k - 1))
    done
  else
    ferry_s=$(ferry_take "$ferry_sl" && echo x) || exit 96
    ferry_s=${ferry_s%%x}
  fi
  ferry_x= ferry_k=${ferry_ne:-0}
  while [ "$ferry_k" -gt 0 ]; do
    IFS= read -r ferry_l || exit 96
    ferry_x="$ferry_x$ferry_l
"
    ferry_k=$((ferry_k - 1))
  done
  printf '%%s\n' "$ferry_mk"
  if [ "$ferry_in" = 1 ]; then
    ferry_i=$((ferry_i + 1))
    ferry_f=$ferry_tmp.$ferry_i
    mkfifo -m 600 "$ferry_f" || exit 97
    ( trap '' TERM HUP INT
      exec 4> "$ferry_f"
      ferry_relay "$ferry_tmp.n"
      ferry_r=$?
      exec 4>&-
      [ "$ferry_r" = 0 ] && IFS= read -r ferry_l
      ferry_stop "$ferry_gr"
    ) <&3 >/dev/null 2>&1 &
    ferry_k=$!
    exec 6< "$ferry_f"
    rm -f "$ferry_f" </dev/null >/dev/null 2>&1 3<&- 4>&- 6<&- &
  else
    ( trap '' TERM HUP INT; IFS= read -r ferry_l; ferry_stop "$ferry_gr" ) <&3 >/dev/null 2>&1 4>&- &
    ferry_k=$!
    exec 6</dev/null
  fi
  ferry_w=
  if [ "$ferry_to" != 0 ]; then
    ( sleep "$ferry_to"; : > "$ferry_tmp.to"; ferry_stop "$ferry_gr" ) </dev/null >/dev/null 2>&1 3<&- 4>&- 6<&- &
    ferry_w=$!
  fi
  ( export ferry_x; exec 2>&4 3<&- 4>&- <&6 6<&-; exec $ferry_ss sh -c "$ferry_s" sh )
  ferry_rc=$? ferry_x= ferry_t=0 ferry_n=-
  if [ -n "$ferry_w" ]; then
    kill "$ferry_w" 2>/dev/null; wait "$ferry_w" 2>/dev/null
    [ -e "$ferry_tmp.to" ] && ferry_t=1 && rm -f "$ferry_tmp.to"
  fi
  printf '\n%%s %%d %%d\n' "$ferry_mk" "$ferry_rc" "$ferry_t"
  if [ "$ferry_in" = 1 ]; then
    ferry_l=$(wc -c <&6) || ferry_l=0
    set -- $ferry_l
    read -r ferry_n < "$ferry_tmp.n" || ferry_n=-
    case $ferry_n in ''|*[!0-9]*) ferry_n=- ;; *) ferry_n=$((ferry_n - ${1:-0})) ;; esac
  fi
  exec 6<&-
  kill -KILL "$ferry_k" 2>/dev/null; wait "$ferry_k" 2>/dev/null
  printf '\n%%s %%s\n' "$ferry_mk" "$ferry_n" >&4
done
]]

local SIGNALS = { [1] = "SIGHUP", [2] = "SIGINT", [9] = "SIGKILL", [15] = "SIGTERM" }

local Session = {}
Session.__index = Session

local function new_marker()
  return "FERRY" .. util.unique_hex(40)
end

-- One output stream of the current command: what comes before `pattern` (the framing) is the command's,
-- delivered as it arrives except a tail that might be the start of the framing (a "\n" then a prefix of
-- `lead`, or the whole lead while the rest of its line is coming), so a short line is not held back.
local function framing_start(buf, lead)
  local at
  for i = #buf, math.max(1, #buf - #lead - 32), -1 do
    if buf:byte(i) == 10 then
      local rest = buf:sub(i)
      if (#rest <= #lead and lead:sub(1, #rest) == rest) or rest:sub(1, #lead) == lead then at = i end
    end
  end
  return at
end

local function stream(pattern, lead, emit, max)
  local s = { buf = "", parts = {}, size = 0, truncated = false }
  local anchored = "^" .. pattern
  local function deliver(data)
    if data == "" then return end
    if emit then
      local ok, err = pcall(emit, data)
      if not ok and not s.err then s.err = err end
      return
    end
    local room = max - s.size
    if #data > room then
      s.truncated = true
      data = data:sub(1, room)
    end
    s.parts[#s.parts + 1] = data
    s.size = s.size + #data
  end
  function s.push(chunk)
    if s.done then return end
    s.buf = s.buf .. chunk
    -- a plain search for the lead first: the pattern tried at every byte of a large chunk costs more
    local at, a, b = s.buf:find(lead, 1, true), nil, nil
    if at then
      local _
      at, _, a, b = s.buf:find(anchored, at)
    end
    if at then
      deliver(s.buf:sub(1, at - 1))
      -- anything after the framing is stray output of a background process: dropped
      s.done, s.fields, s.buf = true, { a, b }, ""
      return
    end
    local keep = framing_start(s.buf, lead)
    if keep then
      deliver(s.buf:sub(1, keep - 1))
      s.buf = s.buf:sub(keep)
    else
      deliver(s.buf)
      s.buf = ""
    end
  end
  function s.flush() deliver(s.buf); s.buf = "" end
  function s.text() return table.concat(s.parts) end
  return s
end

-- Start the shell. Returns true or nil, message, code.
function Session:start()
  local argv = self.provider:command(self.boot)
  if self.on_exec then self.on_exec(argv, self.boot) end
  local gen = {}
  self.gen = gen
  local handle, err, code = core.proc_start({
    argv = argv, stdin = true, eof_first = true,
    on_stdout = function(c) if self.gen == gen and self.cur then self.cur.on_out(c) end end,
    on_stderr = function(c)
      if self.gen ~= gen then return end
      if self.cur then self.cur.on_err(c) else self.stray = (self.stray or "") .. c end
    end,
  }, function(res) if self.gen == gen then self:died(res) end end)
  if not handle then return nil, "session to " .. self.name .. ": " .. err, code end
  self.handle, self.alive, self.pid, self.stray, self.served = handle, true, handle.pid, nil, 0
  self.starts = self.starts + 1
  return true
end

-- The shell exited or the channel dropped: the running command (if any) fails; the next one reopens.
function Session:died(res)
  self.alive, self.handle = false, nil
  self.exit = res
  local cur = self.cur
  if cur and not cur.finished then cur.finish() end
  if self.on_dead then self.on_dead() end
end

local function write(handle, data)
  local err = task.await(function(wake)
    local ok, werr = handle:write(data, wake)
    if not ok then wake(werr) end
  end)
  return err == nil, err
end

-- The command's stdin as frames (ferry.channel's: a string or a bulk reader gathered into large frames, exec's
-- own stdin as it comes) that end early, with the current frame, once cur.cut is set (the command ended).
-- cur.read_from is set once the caller's reader was asked for a chunk (its input can no longer be sent again).
local function stdin_frames(cur, stdin, stream_stdin, frame_max)
  local read = stdin
  if type(stdin) ~= "string" then
    read = function()
      if cur.cut then return nil end
      cur.read_from = true
      return stdin()
    end
  end
  return channel.frames(read, stream_stdin, frame_max)
end

-- Send the header (with the script and the environment), then the stdin frames: a reader's once the shell
-- acknowledged the command (so that a shell found dead before it can take the command again from its first
-- byte). Returns true or nil, message; raises what the stdin reader raised.
local function send(handle, cur, head, popts, frame_max)
  local ok, err = write(handle, head)
  if not ok or popts.stdin == nil then return ok, err end
  if type(popts.stdin) ~= "string" and not cur.acked and not cur.finished then
    task.await(function(wake) cur.on_ack = wake end)
  end
  if cur.finished and not cur.acked then return true end -- the shell died: nothing of the input was read
  if not proc.write_all(handle, stdin_frames(cur, popts.stdin, popts.stream_stdin, frame_max)) then
    return nil, "write to stdin: the session's stdin closed"
  end
  return true
end

-- The script with popts.cwd applied, as the non-session path would (proc.run's cwd), after the line that
-- applies the environment (ferry.channel).
local function with_context(script, popts)
  local cd = popts.cwd and "cd " .. core.sh_quote(popts.cwd) .. " || exit 1\n" or ""
  return channel.APPLY_ENV .. cd .. script
end

local function seconds(ms) return string.format("%.3f", ms / 1000) end

-- The header line, the script and the environment lines of a command (the script as lines the shell reads
-- itself when it is short and holds no NUL, CR or trailing backslash, else as a byte count for dd).
local function command_head(script, popts, marker, binary)
  local size = #script
  if size <= LINE_MODE_MAX and not script:find("[%z\r]") and not script:find("\\\n?$") then
    if script:sub(-1) ~= "\n" then script = script .. "\n" end
    size = -select(2, script:gsub("\n", ""))
  end
  local timeout, grace = popts.timeout_ms or 0, popts.kill_grace_ms or DEFAULT_GRACE_MS
  local env_lines = channel.env_lines(popts.env, binary, "exec", 5)
  local header = string.format("%d %d %s %s %d %d\n", size, popts.stdin ~= nil and 1 or 0, marker,
    timeout > 0 and seconds(timeout) or "0", math.max(1, math.floor(grace / 100 + 0.5)), #env_lines)
  return header .. script .. (#env_lines > 0 and table.concat(env_lines, "\n") .. "\n" or "")
end

-- The current command's hooks for the shell's output: stdout first goes through the ack ("<marker>\n";
-- whatever came before it is stray output of an earlier command's background process, dropped), then to `out`;
-- stderr to `err`. The command is finished when both framings arrived (or the shell died); the stdout status
-- line alone ends its input (cur.cut).
local function current(out, err, marker)
  local cur, pre, ack = {}, "", marker .. "\n"
  function cur.finish()
    cur.finished = true
    local wake = cur.wake or cur.on_ack
    cur.wake, cur.on_ack = nil, nil
    if wake then wake() end
  end
  function cur.on_out(c)
    if not cur.acked then
      pre = pre .. c
      local at = pre:find(ack, 1, true)
      if not at then
        pre = pre:sub(-#ack)
        return
      end
      cur.acked, c, pre = true, pre:sub(at + #ack), nil
      if cur.on_ack then
        local wake = cur.on_ack
        cur.on_ack = nil
        wake()
      end
    end
    out.push(c)
    if out.done then cur.cut = true end
    if out.done and err.done then cur.finish() end
  end
  function cur.on_err(c)
    err.push(c)
    if out.done and err.done and cur.acked then cur.finish() end
  end
  return cur
end

-- The error for a command the shell did not finish: it exited (or the channel dropped). For a shell that
-- died before it took the command, the provider's explanation of its exit when it has one (ssh: "cannot
-- connect: ...").
function Session:lost(cur, err, sent, serr)
  local ex = self.exit or {}
  local stderr = ex.stderr ~= nil and ex.stderr or err.text()
  if not cur.acked and self.provider.explain then
    local msg, code = self.provider:explain({ code = ex.code, signal = ex.signal, stderr = stderr })
    if msg then return nil, msg, code end
  end
  local why = util.tail(stderr)
  return nil, string.format("session to %s: the sandbox shell exited (%s)%s while running a command%s; "
    .. "the next command reopens it", self.name, ex.signal or ("exit code " .. tostring(ex.code)),
    why ~= "" and (": " .. why) or "", sent and "" or (" (" .. tostring(serr) .. ")")), "EIO"
end

-- Run one command on a live session; returns the result or nil, message, code (and, for a command the shell
-- never took, a fourth value true: it can be sent again to a new shell).
function Session:run(script, popts)
  local marker = new_marker()
  local max = popts.max_output or DEFAULT_MAX_OUTPUT
  local lead = "\n" .. marker
  local out = stream(lead .. " (%d+) (%d)\n", lead, popts.on_stdout, max)
  local err = stream(lead .. " ([%d%-]+)\n", lead, popts.on_stderr, max)
  local started, started_at = core.now_ms(), core.time_ms()
  local cur = current(out, err, marker)
  self.cur = cur
  if self.stray then -- stderr that arrived between commands (a background process): this command's
    err.push(self.stray)
    self.stray = nil
  end
  local timeout = popts.timeout_ms or 0
  local backstop
  if timeout > 0 then
    backstop = core.timer(math.floor(timeout + (popts.kill_grace_ms or DEFAULT_GRACE_MS) + BACKSTOP_MS), function()
      if not cur.finished and self.handle then
        cur.backstopped = true
        self.handle:kill("SIGKILL")
      end
    end)
  end
  if popts.on_spawn then popts.on_spawn(self.pid, started_at, self.handle) end
  local handle = self.handle
  local ok, sent, serr = pcall(send, handle, cur, command_head(script, popts, marker, self.binary), popts,
    self.frame_max)
  if not ok then -- the reader raised in the middle of the frames: this shell's stdin is out of step
    handle:kill("SIGKILL")
  end
  if not cur.finished then task.await(function(w) cur.wake = w end) end
  self.cur = nil
  if backstop then backstop:stop() end
  if not ok then error(sent, 0) end
  if not (out.done and err.done) then
    out.flush()
    err.flush()
    if cur.backstopped then
      return { code = 128 + 9, signal = "SIGKILL", timed_out = true, stdout = not popts.on_stdout and out.text()
        or nil, stderr = not popts.on_stderr and err.text() or nil, truncated = out.truncated or err.truncated,
        pid = self.pid, started_at = started_at, duration_ms = core.now_ms() - started }
    end
    local replay = not cur.acked and not cur.read_from
    local _, msg, code = self:lost(cur, err, sent, serr)
    return nil, msg, code, replay
  end
  self.served = self.served + 1
  local code, timed_out = tonumber(out.fields[1]), out.fields[2] == "1"
  if out.err or err.err then error(out.err or err.err, 0) end
  return {
    code = code, signal = timed_out and code > 128 and SIGNALS[code - 128] or nil, timed_out = timed_out,
    stdout = not popts.on_stdout and out.text() or nil, stderr = not popts.on_stderr and err.text() or nil,
    truncated = out.truncated or err.truncated, pid = self.pid, started_at = started_at,
    duration_ms = core.now_ms() - started, input_bytes = math.tointeger(tonumber(err.fields[1])),
  }
end

-- Commands run one at a time: a task that finds the session busy waits its turn.
function Session:lock()
  if not self.busy then
    self.busy = true
    return
  end
  task.await(function(wake) self.queue[#self.queue + 1] = wake end)
end

function Session:unlock()
  local nxt = table.remove(self.queue, 1)
  if nxt then nxt() else self.busy = false end
end

-- Run the command on the live shell, starting one when there is none. A shell that had served commands and
-- is found dead before it took this one (it died while idle, or the channel dropped) is replaced and the
-- command sent again, once.
function Session:run_started(script, popts)
  for attempt = 1, 2 do
    task.check_interrupted() -- waited for the lock while ferry was interrupted
    if not self.alive then
      local started, serr, scode = self:start()
      if not started then return nil, serr, scode end
    end
    local served = self.served
    local res, err, code, replay = self:run(script, popts)
    if res or not replay or served == 0 or attempt == 2 then return res, err, code end
  end
end

--- Run `script` in the session; the result looks like ferry.proc.run's, with input_bytes (the bytes of
--- popts.stdin the sandbox relayed to the command). popts: stdin (string or reader), stream_stdin (a
--- reader's chunks go as they come instead of gathered into large frames), cwd, env, timeout_ms,
--- kill_grace_ms, max_output, on_stdout, on_stderr, on_spawn.
--- Errors: "session to <provider>: <spawn error>", "session to <provider>: the sandbox shell exited (...)
--- while running a command; the next command reopens it" (EIO), the provider's explanation of a shell that
--- exited before it took its first command (ssh: "<name>: cannot connect: ..."), "session to <provider>:
--- closed" (EPIPE).
---@param script string
---@param popts table|nil
---@return table|nil result, string|nil err, string|nil code
function Session:exec(script, popts)
  popts = popts or {}
  if self.closed then return nil, "session to " .. self.name .. ": closed", "EPIPE" end
  task.check_interrupted()
  local interrupts = task.interrupts()
  self:lock()
  local ok, res, err, code = pcall(self.run_started, self, with_context(script, popts), popts)
  self:unlock()
  if not ok then error(res, 0) end
  if task.interrupts() ~= interrupts then task.check_interrupted() end
  return res, err, code
end

--- End the shell: EOF on its stdin, then SIGKILL if it is still there after a short grace.
function Session:close()
  if self.closed then return end
  self.closed = true
  local handle = self.handle
  if not handle then return end
  handle:close_stdin()
  local timer
  task.await(function(wake)
    self.on_dead = wake
    timer = core.timer(CLOSE_GRACE_MS, function() handle:kill("SIGKILL") end)
  end)
  timer:stop()
end

--- Wrap a provider so that every command goes through one long-lived shell: installs provider:exec (used by
--- the client for every command) and a provider:close that ends the shell first. Returns the provider;
--- provider.session is the Session (pid, starts = how many shells were started).
--- opts: on_exec(argv, script) called when a shell is started.
---@param provider table
---@param opts table|nil
---@return table provider
function M.wrap(provider, opts)
  opts = opts or {}
  if type(provider) ~= "table" or type(provider.command) ~= "function" then
    error("session.wrap: expected a provider with a command method", 2)
  end
  local s = setmetatable({
    provider = provider, name = provider.name or "sandbox", on_exec = opts.on_exec, queue = {}, starts = 0,
    served = 0,
    boot = string.format(BOOT, core.sh_quote(provider.scratch_dir or "/tmp"), util.unique_hex(16),
      channel.STOP_FUNCTION .. channel.RELAY_FUNCTION),
    binary = provider.caps == nil or provider.caps.binary ~= false, frame_max = channel.frame_max(provider),
  }, Session)
  local inner_close = provider.close
  provider.session = s
  provider.exec = function(_, script, popts) return s:exec(script, popts) end
  provider.close = function(p)
    s:close()
    if inner_close then inner_close(p) end
  end
  return provider
end

M.Session = Session

return M
