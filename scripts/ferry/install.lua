--- ferry.install: the adapter's CLI in the sandbox. The sync command runs a check line (M.check_line: the
-- detect probe, or the marker of an earlier install) and prints what it found on stderr (M.reported);
-- when the CLI is missing and the adapter has an install command, one more command runs it (M.run) under
-- a lock in the runtime dir, so racing prepares install once. A failed, timed-out or blocked install is a
-- warning (the tail of its output), never an error. With a detect probe, only the probe says the CLI is
-- there: "present" when it passes, and after an install that exited 0 "installed" only when it passes then.
--
-- The lock is `flock` on <runtime>/install.flock when the sandbox has flock (the kernel releases it when its
-- holder dies, in any pid namespace), else the directory <runtime>/install.lock whose holder writes the time
-- (date +%s) into its `beat` file every M.HEARTBEAT_S seconds: a beat older than M.STALE_S seconds, or none
-- 2 s after the directory appeared, is a holder that died, and a waiter breaks the lock (one at a time,
-- under <runtime>/install.lock.break). A pid would not do: each bwrap command has its own pid namespace.
local core = require "ferry.core"
local remote = require "ferry.remote"

local M = {}

--- How long the install command may run (and a racing prepare wait for the lock), in ms.
M.TIMEOUT_MS = 300000
--- The fallback lock's heartbeat, and the age of a beat that means its holder died, in seconds.
M.HEARTBEAT_S = 5
M.STALE_S = 20

local q = core.sh_quote

local function marker_path(adapter, runtime_dir)
  return runtime_dir .. "/" .. adapter.name .. ".installed"
end

local function detect_test(adapter)
  return adapter.detect and "command -v " .. q(adapter.detect) .. " >/dev/null 2>&1"
end

-- Take the install lock (see the top), waiting at most wait_s; prints "ferry-install: lock-timeout" and
-- exits when it could not.
local function lock_lines(wait_s)
  return {
    "if command -v flock >/dev/null 2>&1; then",
    '  exec 9> "$ferry_rt/install.flock" || exit 1',
    "  flock -w " .. wait_s .. ' 9 || { echo "ferry-install: lock-timeout"; exit 0; }',
    "else",
    '  ferry_lock="$ferry_rt/install.lock" ferry_waited=0',
    '  while ! mkdir "$ferry_lock" 2>/dev/null; do',
    '    ferry_beat=$(cat "$ferry_lock/beat" 2>/dev/null) ferry_now=$(date +%s)',
    '    if { [ -n "$ferry_beat" ] && [ $((ferry_now - ferry_beat)) -gt ' .. M.STALE_S .. ' ]; } || '
      .. '{ [ -z "$ferry_beat" ] && [ "$ferry_waited" -ge 2 ]; }; then',
    '      if mkdir "$ferry_lock.break" 2>/dev/null; then',
    '        [ "$(cat "$ferry_lock/beat" 2>/dev/null)" = "$ferry_beat" ] && rm -rf "$ferry_lock"',
    '        rmdir "$ferry_lock.break"',
    "        continue",
    "      fi",
    "    fi",
    '    if [ "$ferry_waited" -ge ' .. wait_s .. ' ]; then echo "ferry-install: lock-timeout"; exit 0; fi',
    "    sleep 1; ferry_waited=$((ferry_waited + 1))",
    "  done",
    '  date +%s > "$ferry_lock/beat"',
    "  ( while kill -0 $$ 2>/dev/null; do sleep " .. M.HEARTBEAT_S
      .. '; date +%s > "$ferry_lock/beat.new" && mv -f "$ferry_lock/beat.new" "$ferry_lock/beat"; done )'
      .. " </dev/null >/dev/null 2>&1 &",
    "  ferry_hb=$!",
    "  trap 'kill \"$ferry_hb\" 2>/dev/null; rm -rf \"$ferry_lock\"' EXIT",
    "  trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM",
    "fi",
  }
end

-- The install command: detect, else take the lock, detect again or see the marker of an install made
-- meanwhile (adapters without detect only), else install, then detect once more. Prints one
-- "ferry-install: present|missing|lock-timeout|rc=N|undetected" line last.
local function install_script(adapter, runtime_dir, wait_s)
  local detect = detect_test(adapter)
  local install = adapter.install
  local lines = {}
  if detect then lines[#lines + 1] = "if " .. detect .. "; then echo 'ferry-install: present'; exit 0; fi" end
  if not install then
    lines[#lines + 1] = "echo 'ferry-install: missing'; exit 0"
    return table.concat(lines, "\n")
  end
  lines[#lines + 1] = "ferry_rt=" .. q(runtime_dir) .. " ferry_mark=" .. q(marker_path(adapter, runtime_dir))
  lines[#lines + 1] = 'mkdir -p "$ferry_rt" || exit 1'
  for _, line in ipairs(lock_lines(wait_s)) do lines[#lines + 1] = line end
  local already = detect or '[ -e "$ferry_mark" ]'
  local verified = detect and ("if " .. detect .. "; then : > \"$ferry_mark\"; echo 'ferry-install: rc=0'; "
    .. "else echo 'ferry-install: undetected'; fi") or ': > "$ferry_mark"; echo "ferry-install: rc=0"'
  for _, line in ipairs {
    "if " .. already .. "; then echo 'ferry-install: present'; exit 0; fi",
    "(\n" .. install .. "\n) </dev/null 9>&- 2>&1",
    "ferry_rc=$?",
    'if [ "$ferry_rc" -eq 0 ]; then ' .. verified .. '; else echo "ferry-install: rc=$ferry_rc"; fi',
  } do
    lines[#lines + 1] = line
  end
  return table.concat(lines, "\n")
end

-- Keeps the last `limit` bytes of a stream.
local function tail_buffer(limit)
  local buf = { text = "" }
  function buf.push(chunk)
    buf.text = buf.text .. chunk
    if #buf.text > 2 * limit then buf.text = buf.text:sub(-limit) end
  end
  return buf
end

local function missing_warning(adapter)
  return "install: " .. adapter.detect .. " is not in the sandbox and adapter " .. adapter.name
    .. " has no install command"
end

-- The outcome of the install command from its output: {installed, status, warning}.
local function outcome(adapter, res, output, timeout_ms, wait_s)
  if res.timed_out then
    return { installed = false, status = "failed",
      warning = string.format("install timed out after %d s: %s", timeout_ms // 1000, remote.tail(output)) }
  end
  local marker = output:match("ferry%-install: ([%w=%-]+)%s*$")
  if marker == "present" then return { status = "present" } end
  if marker == "undetected" then
    local why = remote.tail((output:gsub("ferry%-install: undetected%s*$", "")))
    return { installed = false, status = "failed", warning = "install exited 0 but " .. adapter.detect
      .. " is still not in the sandbox" .. (why ~= "" and ": " .. why or "") }
  end
  if marker == "missing" then return { status = "missing", warning = missing_warning(adapter) } end
  if marker == "lock-timeout" then
    return { installed = false, status = "failed",
      warning = "install: another prepare held the install lock for over " .. wait_s .. " s" }
  end
  if marker == "rc=0" then return { installed = true, status = "installed" } end
  local rc = marker and marker:match("^rc=(%d+)$") or tostring(res.code)
  return { installed = false, status = "failed",
    warning = string.format("install exited with code %s: %s", rc, remote.tail(output)) }
end

--- Run the install command (the detect probe first). A warning is redacted and reported to `progress`.
---@param sb table  the sandbox
---@param adapter table
---@param runtime_dir string
---@param opts table  install_timeout_ms
---@param progress table  a ferry.progress reporter
---@param redact_fn function
---@return table  {installed = true|false|nil, status ("none"|"present"|"installed"|"failed"|"missing"), warning}
function M.run(sb, adapter, runtime_dir, opts, progress, redact_fn)
  if not adapter.detect and not adapter.install then return { status = "none" } end
  progress:phase("install")
  local timeout_ms = opts.install_timeout_ms or M.TIMEOUT_MS
  local wait_s = math.max(1, timeout_ms // 1000 - 1)
  local out = tail_buffer(16384)
  local res, err = sb:exec(install_script(adapter, runtime_dir, wait_s),
    { timeout_ms = timeout_ms, on_stdout = out.push, on_stderr = out.push })
  local r
  if not res then
    r = { installed = false, status = "failed", warning = "install: " .. tostring(err) }
  else
    r = outcome(adapter, res, out.text, timeout_ms, wait_s)
  end
  if r.warning then
    r.warning = redact_fn(r.warning)
    progress:event({ level = "warn", message = r.warning })
  end
  return r
end

--- Shell line (for the sync command) telling whether the adapter's CLI is there: "ferry-install: present" or
--- "ferry-install: missing" on stderr, by the detect probe or, without one, the marker of an earlier
--- install; nil when the adapter has neither detect nor install.
---@param adapter table
---@param runtime_dir string
---@return string|nil
function M.check_line(adapter, runtime_dir)
  local check = detect_test(adapter)
  if not check and adapter.install then check = "[ -e " .. q(marker_path(adapter, runtime_dir)) .. " ]" end
  if not check then return nil end
  return "if " .. check .. "; then echo 'ferry-install: present' >&2; else echo 'ferry-install: missing' >&2; fi"
end

--- What the check line printed in a command's stderr: "present", "missing" or nil.
---@param stderr string|nil
---@return string|nil
function M.reported(stderr)
  return (stderr or ""):match("ferry%-install: (%a+)")
end

--- The install step after a sync that ran the check line: nothing more when the CLI is there, the install
--- command (M.run) when it is missing and there is one; M.run alone when the sync did not report (`found`
--- nil). Returns M.run's result.
---@param found string|nil  M.reported's
function M.after_check(found, sb, adapter, runtime_dir, opts, progress, redact_fn)
  if not adapter.detect and not adapter.install then return { status = "none" } end
  if found == "present" then return { status = "present" } end
  if found == "missing" and not adapter.install then
    local warning = redact_fn(missing_warning(adapter))
    progress:phase("install")
    progress:event({ level = "warn", message = warning })
    return { status = "missing", warning = warning }
  end
  return M.run(sb, adapter, runtime_dir, opts, progress, redact_fn)
end

return M
