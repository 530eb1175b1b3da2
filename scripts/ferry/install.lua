--- ferry.install: the adapter's CLI in the sandbox. The sync command runs a check line (M.check_line: the
-- detect probe, or the marker of an earlier install) and prints what it found on stderr (M.reported);
-- when the CLI is missing and the adapter has an install command, one more command runs it (M.run) under
-- a lock dir in the runtime dir, so racing prepares install once. A failed, timed-out or blocked install
-- is a warning (the tail of its output), never an error.
local core = require "ferry.core"
local remote = require "ferry.remote"

local M = {}

--- How long the install command may run (and a racing prepare wait for the lock), in ms.
M.TIMEOUT_MS = 300000

local q = core.sh_quote

local function marker_path(adapter, runtime_dir)
  return runtime_dir .. "/" .. adapter.name .. ".installed"
end

local function detect_test(adapter)
  return adapter.detect and "command -v " .. q(adapter.detect) .. " >/dev/null 2>&1"
end

-- The install command: detect, else take the lock (waiting at most wait_s for a racing prepare; a lock
-- whose holder died is broken), detect again or see the marker of an install made meanwhile, else install
-- and mark. Prints one "ferry-install: present|missing|lock-timeout|rc=N" line last.
local function install_script(adapter, runtime_dir, wait_s)
  local detect = detect_test(adapter)
  local install = adapter.install
  local lines = {}
  if detect then lines[#lines + 1] = "if " .. detect .. "; then echo 'ferry-install: present'; exit 0; fi" end
  if not install then
    lines[#lines + 1] = "echo 'ferry-install: missing'; exit 0"
    return table.concat(lines, "\n")
  end
  local already = '[ -e "$ferry_mark" ]'
  if detect then already = detect .. ' || [ "$ferry_mark" -nt "$ferry_since" ]' end
  for _, line in ipairs {
    "ferry_rt=" .. q(runtime_dir) .. " ferry_mark=" .. q(marker_path(adapter, runtime_dir)),
    'ferry_lock="$ferry_rt/install.lock" ferry_since="$ferry_rt/.install-wait.$$"',
    'mkdir -p "$ferry_rt" && : > "$ferry_since" || exit 1',
    "ferry_waited=0",
    'while ! mkdir "$ferry_lock" 2>/dev/null; do',
    '  ferry_pid=$(cat "$ferry_lock/pid" 2>/dev/null)',
    -- a lock whose holder died (a prepare killed mid-install) is broken
    '  if [ -n "$ferry_pid" ] && ! kill -0 "$ferry_pid" 2>/dev/null; then rm -rf "$ferry_lock"; continue; fi',
    '  if [ "$ferry_waited" -ge ' .. wait_s .. ' ]; then rm -f "$ferry_since"; echo "ferry-install: lock-timeout";'
      .. " exit 0; fi",
    "  sleep 1; ferry_waited=$((ferry_waited + 1))",
    "done",
    'echo $$ > "$ferry_lock/pid"',
    "trap 'rm -rf \"$ferry_lock\" \"$ferry_since\"' EXIT",
    "trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM",
    "if " .. already .. "; then echo 'ferry-install: present'; exit 0; fi",
    "(\n" .. install .. "\n) </dev/null 2>&1",
    "ferry_rc=$?",
    'if [ "$ferry_rc" -eq 0 ]; then : > "$ferry_mark"; fi',
    'echo "ferry-install: rc=$ferry_rc"',
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
