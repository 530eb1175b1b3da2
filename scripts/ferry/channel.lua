--- ferry.channel: how one command reaches a sandbox through a provider's `sh -c` when the channel has stdin.
--
-- The command runs under a small wrapper (M.wrap, the `sh -c` script) that reads a header from stdin, then
-- the command's environment (never on a command line: not in `ps` on this host, on the ssh command line or
-- in the sandbox's process list), then — when the command has input — that input in frames; it runs the
-- command in a process group of its own (setsid) and stops that group when the channel closes. The host
-- keeps stdin open while the command runs, so an EOF means "stop": ferry timed out or was interrupted and
-- closed it, ssh or a container runtime went away, or ferry died. Signals from this host alone cannot do
-- that: killing the local ssh client leaves the remote command running (without a pty sshd sends nothing).
--
-- Wire format of stdin (M.input), all of it ASCII but the values and the input bytes:
--   "ferry1 <E> <D>\n"          E: lines of environment that follow; D: 1 when input frames follow, else 0
--   E lines                     shell text setting the environment (`export NAME='value'`, `unset NAME`),
--                               evaluated by the command's own shell before the command, never by the wrapper
--   D=1: "<n>\n" <n bytes> ...  the command's input in frames of at most M.FRAME_MAX bytes, then "0\n"
--   then nothing: EOF (or any byte) from here on stops the command: TERM to its group, KILL after the grace
-- The wrapper relays the frames into a fifo the command reads (M.RELAY_FUNCTION: one `dd` per MiB-block run
-- of a frame), so the command sees its own EOF where the input ends while the channel stays open, and counts
-- the bytes it relayed: its end marker on stderr ("\n<marker> <count>\n", "-" when the command ended before
-- the input did) carries that count, which the client checks against what it sent instead of counting in
-- the data path (a `tee | wc -c` pipeline costs a copy of every byte). The wrapper exits with the
-- command's code.
local core = require "ferry.core"
local proc = require "ferry.proc"
local util = require "ferry.util"

local M = {}

--- The first frame of a gathered input stream, and the block the relay copies with one `dd` each run; a
--- gathered stream's frames double from M.FRAME up to M.FRAME_MAX (whole MiBs but the last), so that a large
--- transfer costs a few `dd` processes in the sandbox, not one per MiB, while the host holds at most
--- M.FRAME_MAX bytes of it. Where a command is cheap (caps.costly unset: local, bwrap) a `dd` costs little and
--- frames stop at M.FRAME_CHEAP_MAX, which keeps the host's peak memory of a large prepare low.
M.FRAME = 1024 * 1024
M.FRAME_MAX = 8 * 1024 * 1024
M.FRAME_CHEAP_MAX = 1024 * 1024

--- The largest input frame for a provider's commands: M.FRAME_MAX where they are costly, else M.FRAME_CHEAP_MAX.
---@param provider table
---@return integer
function M.frame_max(provider)
  return provider.caps and provider.caps.costly and M.FRAME_MAX or M.FRAME_CHEAP_MAX
end

local VERSION = "ferry1"
local DEFAULT_GRACE_MS = 2000

local q = core.sh_quote

-- What the command's shell runs first: the environment the header carried (kept out of every command line:
-- it comes in the variable ferry_x of the command's environment, which the shell drops before the command).
M.APPLY_ENV = '[ -z "${ferry_x:+x}" ] || { eval "$ferry_x" || exit 125; }; unset ferry_x\n'

--- Shell text defining ferry_stop GRACE: stop the command this shell ($$) runs in the foreground: TERM to its
--- process group (found in /proc: the child of $$ that leads a group of its own, which setsid made; without
--- setsid, each child but the caller), then, if something of it is still there, KILL after GRACE tenths of a
--- second. Called from a subshell of $$ (the watcher), which it never signals.
M.STOP_FUNCTION = [[
ferry_stop() {
  ferry_gt=$1 ferry_me= ferry_t= ferry_o=
  read -r ferry_me ferry_l < /proc/self/stat 2>/dev/null
  for ferry_s in /proc/[0-9]*/stat; do
    read -r ferry_l < "$ferry_s" 2>/dev/null || continue
    set -- ${ferry_l##*) }
    [ "$2" = "$$" ] || continue
    ferry_s=${ferry_s#/proc/} && ferry_s=${ferry_s%/stat}
    [ "$ferry_s" = "$ferry_me" ] && continue
    if [ "$3" = "$ferry_s" ]; then ferry_t=-$ferry_s; else ferry_o="$ferry_o $ferry_s"; fi
  done
  [ -n "$ferry_t" ] || ferry_t=$ferry_o
  [ -n "$ferry_t" ] || return 0
  kill -TERM $ferry_t 2>/dev/null
  ferry_i=0
  while [ "$ferry_i" -lt "$ferry_gt" ]; do
    sleep 0.1 2>/dev/null || sleep 1
    ferry_a=
    for ferry_s in $ferry_t; do kill -0 "$ferry_s" 2>/dev/null && ferry_a=1; done
    [ -n "$ferry_a" ] || return 0
    ferry_i=$((ferry_i + 1))
  done
  kill -KILL $ferry_t 2>/dev/null
}
]]

--- Shell text defining ferry_relay COUNT_FILE: copy the input frames on stdin ("<n>\n" <n bytes> ..., then
--- "0\n") to fd 4, each frame's whole MiBs with one `dd` and the rest with another (`iflag=fullblock`: exactly
--- those bytes are read, so the stream after the frame stays in place; dd's record counts, in the C locale,
--- tell a frame cut short by EOF, which dd does not count as an error), then write the number of bytes
--- relayed to COUNT_FILE. Returns 0 after the end frame, 1 when a `dd` failed (the reader of fd 4 went
--- away), 2 at EOF, a short frame or a line that is no frame header (the channel closed mid-stream).
M.RELAY_FUNCTION = [[
ferry_copy() {
  ferry_ro=$(LC_ALL=C dd bs="$1" count="$2" iflag=fullblock 2>&1 >&4) || return 1
  case $ferry_ro in "$2+0 records in"*) return 0 ;; esac
  return 2
}
ferry_relay() {
  ferry_rn=0
  while IFS= read -r ferry_rl; do
    case $ferry_rl in ''|*[!0-9]*) break ;; esac
    if [ "$ferry_rl" -eq 0 ]; then echo "$ferry_rn" > "$1"; return 0; fi
    ferry_rb=$((ferry_rl / 1048576)) ferry_rt=$((ferry_rl % 1048576)) ferry_rs=0
    [ "$ferry_rb" = 0 ] || ferry_copy 1048576 "$ferry_rb" || ferry_rs=$?
    [ "$ferry_rs" != 0 ] || [ "$ferry_rt" = 0 ] || ferry_copy "$ferry_rt" 1 || ferry_rs=$?
    if [ "$ferry_rs" != 0 ]; then echo "$ferry_rn" > "$1"; return "$ferry_rs"; fi
    ferry_rn=$((ferry_rn + ferry_rl))
  done
  echo "$ferry_rn" > "$1"
  return 2
}
]]

-- The wrapper. %s: the command's script (quoted), the grace in tenths of a second, the fifo path (quoted),
-- the end marker, ferry_stop and ferry_relay. The command runs in the foreground (an asynchronous command
-- would start with SIGINT and SIGQUIT ignored), the watcher beside it: it relays the input frames into the
-- fifo (the count to "<fifo>.n"), then reads stdin until EOF and stops the command. The wrapper outlives TERM,
-- HUP and INT (caught, not ignored: the command starts with its defaults), so that the watcher can still find
-- the command as its child. Its own stderr goes to /dev/null once the command runs (a shell reports
-- "Terminated" for a child a signal ended); the end marker goes to the saved one (fd 5). The count is read
-- once the command ended: a command that read its input to EOF ended after the relay wrote it; one that
-- stopped at its own end of data (tar at the end-of-archive blocks) may end while the relay still takes the
-- end frame, so the wrapper waits for the count up to 0.2 s (only then: `sleep` processes).
local WRAPPER = [[
ferry_c=%s
ferry_g=%d ferry_f=%s ferry_m=%s
IFS=' ' read -r ferry_v ferry_e ferry_d || exit 125
[ "$ferry_v" = ferry1 ] || { echo "ferry: the command's stdin did not start with its header" >&2; exit 125; }
ferry_x=
while [ "$ferry_e" -gt 0 ]; do
  IFS= read -r ferry_l || exit 125
  ferry_x="$ferry_x$ferry_l
"
  ferry_e=$((ferry_e - 1))
done
%s
trap : TERM HUP INT
ferry_ss= ferry_in=/dev/null
command -v setsid >/dev/null 2>&1 && ferry_ss=setsid
if [ "$ferry_d" = 1 ]; then
  mkfifo -m 600 "$ferry_f" || exit 125
  ferry_in=$ferry_f
fi
exec 3<&0 </dev/null
( trap '' TERM HUP INT
  if [ "$ferry_d" = 1 ]; then
    exec 4> "$ferry_f"
    ferry_relay "$ferry_f.n"
    ferry_r=$?
    exec 4>&-
    [ "$ferry_r" = 1 ] && cat > /dev/null
  fi
  while IFS= read -r ferry_l; do :; done
  ferry_stop "$ferry_g"
) <&3 >/dev/null 2>&1 &
ferry_w=$!
exec 3<&- 5>&2 2>/dev/null
( export ferry_x; exec 2>&5 5>&- < "$ferry_in"; exec $ferry_ss sh -c "$ferry_c" sh )
ferry_rc=$? ferry_n=- ferry_k=0
if [ "$ferry_d" = 1 ]; then
  while [ ! -s "$ferry_f.n" ] && [ "$ferry_k" -lt 20 ]; do sleep 0.01 || break; ferry_k=$((ferry_k + 1)); done
  read -r ferry_n < "$ferry_f.n" || ferry_n=-
  rm -f "$ferry_f" "$ferry_f.n" </dev/null >/dev/null 2>&1 &
fi
kill -KILL "$ferry_w"
wait "$ferry_w"
printf '\n%%s %%s\n' "$ferry_m" "$ferry_n" >&5
exit "$ferry_rc"
]]

--- The `sh -c` script that runs `script` under the wrapper. opts: grace_ms (TERM to KILL inside the sandbox,
--- default 2000), fifo (a path in the sandbox no other command uses, for the input of a command with input),
--- marker (a word no output holds: the wrapper's last line on stderr, M.stderr_filter).
---@param script string
---@param opts table
---@return string
function M.wrap(script, opts)
  local tenths = math.max(1, math.floor((opts.grace_ms or DEFAULT_GRACE_MS) / 100 + 0.5))
  return string.format(WRAPPER, q(M.APPLY_ENV .. script), tenths, q(opts.fifo), opts.marker,
    M.STOP_FUNCTION .. M.RELAY_FUNCTION)
end

--- The command's stderr without the wrapper's end marker ("\n<marker> <count>\n", written once the command
--- ended): filter.push(chunk) passes everything else to emit(bytes) as it comes (holding back only a tail that
--- could be the marker's start) and calls on_end(count) at the marker (count: the bytes the wrapper relayed
--- to the command's stdin, nil when it did not know), where the host closes the command's stdin (a program
--- between ferry and the sandbox may wait for that EOF to exit); filter.finish() passes what was held.
---@param marker string
---@param emit fun(bytes: string)
---@param on_end fun(count: integer|nil)
---@return table filter
function M.stderr_filter(marker, emit, on_end)
  local lead = "\n" .. marker .. " "
  local held, seen = "", false
  local filter = {}
  function filter.push(chunk)
    if seen then
      emit(chunk)
      return
    end
    held = held .. chunk
    local at = held:find(lead, 1, true)
    local stop = at and held:find("\n", at + #lead, true)
    if stop then
      seen = true
      local count = held:sub(at + #lead, stop - 1)
      local before, after = held:sub(1, at - 1), held:sub(stop + 1)
      held = ""
      if before ~= "" then emit(before) end
      on_end(math.tointeger(tonumber(count:match("^%d+$") or "")))
      if after ~= "" then emit(after) end
      return
    end
    local keep = at and #held - at + 1 or 0 -- the marker, its count still coming
    if not at then
      for k = math.min(#lead - 1, #held), 1, -1 do
        if held:sub(-k) == lead:sub(1, k) then
          keep = k
          break
        end
      end
    end
    if #held > keep then
      emit(held:sub(1, #held - keep))
      held = held:sub(#held - keep + 1)
    end
  end
  function filter.finish()
    if held ~= "" then emit(held) end
    held = ""
  end
  return filter
end

-- A value as one shell word, ASCII only: printable bytes inside '...', the others as printf escapes
-- ($(printf '\ooo...x') with the x kept against the stripping of trailing newlines; printf is a builtin of
-- dash, bash and busybox sh, so no command line shows it).
local function ascii_assignment(name, value)
  if not value:find("[^\32-\126]") then return "export " .. name .. "=" .. q(value) end
  local escaped = value:gsub(".", function(c)
    local b = c:byte()
    if c == "%" then return "%%" end
    if b < 32 or b > 126 or c == "'" or c == "\\" then return string.format("\\%03o", b) end
  end)
  return name .. "=$(printf '" .. escaped .. "x') && " .. name .. "=${" .. name .. "%x} && export " .. name
end

--- The shell lines that set `env` (NAME = string or number; false unsets NAME), sorted by name: with `binary`
--- (the channel is 8-bit clean) `export NAME='value'` with the value's bytes as they are (a value holding a
--- newline spans lines), else ASCII only. Misuse raises "<what>: opts.env key 'K' is not a variable name",
--- "<what>: opts.env.NAME must be a string, number or false", "<what>: opts.env.NAME contains a NUL byte".
---@param env table|nil
---@param binary boolean
---@param what string  names the caller in errors ("exec")
---@param level integer  the error level
---@return string[] lines
function M.env_lines(env, binary, what, level)
  if env == nil then return {} end
  if type(env) ~= "table" then error(what .. ": opts.env must be a table", level) end
  local names = {}
  for k, v in pairs(env) do
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then
      error(what .. ": opts.env key '" .. tostring(k) .. "' is not a variable name", level)
    end
    if type(v) ~= "string" and type(v) ~= "number" and v ~= false then
      error(what .. ": opts.env." .. k .. " must be a string, number or false", level)
    end
    if type(v) == "string" and v:find("\0", 1, true) then
      error(what .. ": opts.env." .. k .. " contains a NUL byte", level)
    end
    names[#names + 1] = k
  end
  table.sort(names)
  local text = {}
  for _, k in ipairs(names) do
    local v = env[k]
    if v == false then
      text[#text + 1] = "unset " .. k
    elseif binary then
      text[#text + 1] = "export " .. k .. "=" .. q(tostring(v))
    else
      text[#text + 1] = ascii_assignment(k, tostring(v))
    end
  end
  local lines = {}
  if #text == 0 then return lines end
  for line in (table.concat(text, "\n") .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  return lines
end

-- Frames of a reader: "<n>\n" then the n bytes, then "0\n". The bytes go out as the pieces the reader gave
-- (never copied into one string). With `gather`, chunks are gathered into frames of M.FRAME bytes, then
-- twice that, up to M.FRAME_MAX (whole MiBs, so that the relay copies each with one `dd`; the last frame holds
-- what is left): a bulk stream. Without, each chunk goes as it comes (cut at M.FRAME_MAX): a stream someone
-- may be waiting on, such as exec's stdin.
local function frames(read, gather, frame_max)
  frame_max = frame_max or M.FRAME_MAX
  local out, oi = {}, 1              -- what to return next: a frame's header, then its pieces
  local held, from, size = {}, {}, 0 -- chunks not framed yet, the offset of each one's first unframed byte
  local eof, done = false, false
  local target = gather and math.min(M.FRAME, frame_max) or frame_max
  return function()
    local piece = out[oi]
    if piece then
      out[oi], oi = nil, oi + 1
      return piece
    end
    if done then return nil end
    while not eof and (size == 0 or (gather and size < target)) do
      local chunk = read()
      if chunk == nil then
        eof = true
      elseif #chunk > 0 then
        held[#held + 1], from[#held + 1], size = chunk, 1, size + #chunk
      end
    end
    if size == 0 then
      done = true
      return "0\n"
    end
    out, oi = {}, 1
    local limit = math.min(target, frame_max)
    if gather then target = math.min(target * 2, frame_max) end
    local n = 0
    while n < limit and held[1] do
      local chunk, at = held[1], from[1]
      local take = math.min(#chunk - at + 1, limit - n)
      out[#out + 1] = (at == 1 and take == #chunk) and chunk or chunk:sub(at, at + take - 1)
      n = n + take
      if at + take > #chunk then
        table.remove(held, 1)
        table.remove(from, 1)
      else
        from[1] = at + take
      end
    end
    size = size - n
    return n .. "\n"
  end
end

--- The frames of `data` (a reader, or a string) as a reader (see M.input): a string or a reader without
--- `stream` is gathered into frames of up to M.FRAME_MAX bytes; with `stream` a reader's chunks go as they come.
---@param data function|string
---@param stream boolean|nil
---@param frame_max integer|nil  the largest frame (default M.FRAME_MAX)
---@return function reader
function M.frames(data, stream, frame_max)
  if type(data) == "string" then
    local given = false
    return frames(function()
      if given then return nil end
      given = true
      return data
    end, true, frame_max)
  end
  return frames(data, not stream, frame_max)
end

--- The command's stdin under the wrapper, as a reader for ferry.proc.run (with keep_stdin, so that the
--- channel stays open after it): the header, the environment lines, and the frames of `data` (a reader, a
--- string, or nil for a command without input); `stream`: a reader's chunks go as they come instead of
--- gathered into frames of up to M.FRAME bytes.
---@param env_lines string[]
---@param data function|string|nil
---@param stream boolean|nil
---@param frame_max integer|nil  the largest frame (default M.FRAME_MAX)
---@return function reader
function M.input(env_lines, data, stream, frame_max)
  local head = VERSION .. " " .. #env_lines .. " " .. (data ~= nil and 1 or 0) .. "\n"
    .. (#env_lines > 0 and table.concat(env_lines, "\n") .. "\n" or "")
  local body = data ~= nil and M.frames(data, stream, frame_max) or nil
  local sent_head = false
  return function()
    if not sent_head then
      sent_head = true
      return head
    end
    if body then return body() end
    return nil
  end
end

local DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024

--- Get ready to run `script` through `provider` (its command method) under the wrapper: popts.stdin and the
--- environment `env` travel on stdin, which stays open until the wrapper's end marker arrives on stderr (then
--- it is closed) or the command is stopped; `binary`: the channel is 8-bit clean. Returns the argv, the
--- wrapped script (what argv runs with `sh -c`) and a function that runs it (what ferry.proc.run returns, with
--- input_bytes: the bytes of popts.stdin the wrapper relayed to the command, nil when it did not say).
--- popts.stream_stdin: a reader's chunks go as they come (see M.input).
---@param provider table
---@param script string
---@param popts table  ferry.proc.run options (changed in place)
---@param env table|nil
---@param binary boolean
---@return string[] argv, string wrapped, function run
function M.prepare_run(provider, script, popts, env, binary)
  local marker = "ferry-end-" .. util.unique_hex(24)
  local wrapped = M.wrap(script, { grace_ms = popts.kill_grace_ms, marker = marker,
    fifo = (provider.scratch_dir or "/tmp") .. "/.ferry-fifo-" .. util.unique_hex(16) })
  local argv = provider:command(wrapped)
  local handle, ended = nil, false
  local on_spawn = popts.on_spawn
  popts.on_spawn = function(pid, started_at, h)
    handle = h
    if ended then h:close_stdin() end
    if on_spawn then on_spawn(pid, started_at, h) end
  end
  local kept, size, max, truncated = {}, 0, popts.max_output or DEFAULT_MAX_OUTPUT, false
  local collect = popts.on_stderr == nil
  local emit = popts.on_stderr or function(bytes)
    local room = max - size
    if #bytes > room then truncated, bytes = true, bytes:sub(1, room) end
    kept[#kept + 1], size = bytes, size + #bytes
  end
  local relayed
  local filter = M.stderr_filter(marker, emit, function(count)
    ended, relayed = true, count
    if handle then handle:close_stdin() end
  end)
  popts.on_stderr = filter.push
  popts.stdin = M.input(M.env_lines(env, binary, "exec", 4), popts.stdin, popts.stream_stdin,
    M.frame_max(provider))
  popts.keep_stdin = true
  popts.argv = argv
  return argv, wrapped, function()
    local res, err, code = proc.run(popts)
    filter.finish()
    if res then res.input_bytes = relayed end
    if res and collect then
      res.stderr = table.concat(kept)
      res.truncated = res.truncated or truncated
    end
    return res, err, code
  end
end

--- Check sb:exec's cwd and env: misuse raises, naming the field ("exec: opts.cwd contains a NUL byte",
--- "exec: opts.env.NAME contains a NUL byte", ...); an environment needs a channel with stdin (`has_stdin`), or
--- its values would be on the command line.
---@param opts table
---@param has_stdin boolean
---@param name string  the sandbox's name
function M.check_exec(opts, has_stdin, name)
  local cwd = opts.cwd
  if cwd ~= nil and type(cwd) ~= "string" then error("exec: opts.cwd must be a string", 3) end
  if cwd and cwd:find("\0", 1, true) then error("exec: opts.cwd contains a NUL byte", 3) end
  local lines = M.env_lines(opts.env, true, "exec", 4)
  if #lines > 0 and not has_stdin then
    error("exec: opts.env needs a channel with stdin: " .. name .. " has none, and the values would be on the "
      .. "command line", 3)
  end
end

return M
