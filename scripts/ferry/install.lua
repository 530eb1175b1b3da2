--- ferry.install: the adapter's CLI in the sandbox. The sync command runs a check line (M.check_line: the
-- detect probe, or the marker of an earlier install) and prints what it found on stderr (M.reported);
-- when the CLI is missing and the adapter has an install command, one more command runs it (M.run) under
-- a lock in the runtime dir, so racing prepares install once. A failed, timed-out or blocked install is a
-- warning (what npm said, else the tail of its output), never an error. With a detect probe, only the probe
-- says the CLI is there: "present" when it passes, and after an install that exited 0 "installed" only when
-- it passes then. Its output is shown as it comes (the last line and a timer on a terminal, "install" events
-- with --json).
--
-- Where it installs: an adapter with `npm` installs that package with ferry.install_npm (npm's global prefix
-- when the user can write it, else the user prefix); its own `install` command runs when it has no `npm`, or
-- when npm or node is missing. Both run with FERRY_PREFIX set to the adapter's user prefix,
-- <runtime>/<adapter>/prefix (kept across prepares), and with its bin dirs (M.bin_dirs: node_modules/.bin,
-- where npm puts a local install's commands, and bin, for a command a vendor script installed elsewhere)
-- first on PATH, for the install and for every detect probe.
--
-- The lock is `flock` on <runtime>/install.flock when the sandbox has flock (the kernel releases it when its
-- holder dies, in any pid namespace), else the directory <runtime>/install.lock whose holder writes the time
-- (date +%s) into its `beat` file every M.HEARTBEAT_S seconds: a beat older than M.STALE_S seconds, or none
-- 2 s after the directory appeared, is a holder that died, and a waiter breaks the lock (one at a time,
-- under <runtime>/install.lock.break). A pid would not do: each bwrap command has its own pid namespace.
local core = require "ferry.core"
local install_npm = require "ferry.install_npm"
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

--- Whether the adapter installs something (then it has a user prefix).
---@param adapter table
---@return boolean
function M.installs(adapter)
  return adapter.npm ~= nil or adapter.install ~= nil
end

--- The adapter's user prefix in the sandbox: <runtime_dir>/<adapter>/prefix.
---@param runtime_dir string  <remote>/.ferry-runtime
---@param adapter_name string
---@return string
function M.prefix(runtime_dir, adapter_name)
  return runtime_dir .. "/" .. adapter_name .. "/prefix"
end

--- The dirs of a user prefix that go first on PATH: DIR/node_modules/.bin (npm's local install) and DIR/bin.
---@param prefix string
---@return string[]
function M.bin_dirs(prefix)
  return { prefix .. "/node_modules/.bin", prefix .. "/bin" }
end

-- The shell line putting the adapter's user prefix first on PATH (nil when it installs nothing).
local function path_line(adapter, runtime_dir)
  if not M.installs(adapter) then return nil end
  local prefix = M.prefix(runtime_dir, adapter.name)
  return "FERRY_PREFIX=" .. q(prefix) .. "; export FERRY_PREFIX; PATH="
    .. q(table.concat(M.bin_dirs(prefix), ":")) .. "${PATH:+:$PATH}; export PATH"
end

local function detect_test(adapter)
  return adapter.detect and "command -v " .. q(adapter.detect) .. " >/dev/null 2>&1"
end

-- The install command's body: the npm package (with the adapter's own command when npm is missing), or
-- the adapter's own command.
local function install_body(adapter)
  if adapter.npm then return install_npm.body(adapter.npm, adapter.install) end
  return adapter.install
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
  local install = install_body(adapter)
  local lines = { path_line(adapter, runtime_dir) }
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

-- ferry's own lines in the install's output: never shown, never quoted in a warning.
local OWN_LINE = "^ferry%-"

--- How often the install's last line and timer are redrawn, and the longest line shown, in ms and bytes.
M.TICK_MS = 250
M.LINE_MAX = 200

-- The install's output as it comes: each line (split at \n or \r: a progress bar redraws with \r) that is
-- not one of ferry's goes to progress as an "install" event and the status a terminal shows, at most one
-- every progress interval; the last one held back is sent at the next tick or at the end. Also keeps the
-- npm markers: where npm installed, and whether npm or node was missing.
local function live_output(progress)
  local feed = { partial = "", held = nil, last_sent = -math.huge, markers = {} }
  local interval_ms = math.floor((progress.interval or 0.1) * 1000)
  local function send(line)
    feed.held, feed.last_sent = nil, core.now_ms()
    progress:event({ event = "install", line = line })
    if progress.status then progress:status(line) end
  end
  local function line_of(text)
    text = text:gsub("%s+$", "")
    if text:find(OWN_LINE) then
      feed.markers[#feed.markers + 1] = text
      return
    end
    if not text:match("%S") then return end
    if #text > M.LINE_MAX then text = text:sub(1, M.LINE_MAX) end
    if core.now_ms() - feed.last_sent >= interval_ms then send(text) else feed.held = text end
  end
  function feed.push(chunk)
    local text = feed.partial .. chunk
    local start = 1
    for line, stop in text:gmatch("([^\r\n]*)[\r\n]()") do
      line_of(line)
      start = stop
    end
    feed.partial = text:sub(start)
    if #feed.partial > 4 * M.LINE_MAX then feed.partial = feed.partial:sub(-M.LINE_MAX) end
  end
  function feed.tick()
    if feed.held then send(feed.held) end
    if progress.tick then progress:tick() end
  end
  function feed.finish()
    if feed.partial ~= "" then line_of(feed.partial) end
    feed.partial = ""
    if feed.held then send(feed.held) end
  end
  return feed
end

-- A timer calling fn every `ms` until stop() (the loop runs it while the install command blocks).
local function every(ms, fn)
  local ticker = { stopped = false }
  local function arm()
    ticker.timer = core.timer(ms, function()
      if ticker.stopped then return end
      fn()
      arm()
    end)
  end
  arm()
  function ticker.stop()
    ticker.stopped = true
    ticker.timer:stop()
  end
  return ticker
end

local function missing_warning(adapter)
  return "install: " .. adapter.detect .. " is not in the sandbox and adapter " .. adapter.name
    .. " has no install command"
end

-- The output a warning quotes: the install's, without ferry's own lines.
local function quoted_tail(output)
  local kept = {}
  for line in output:gmatch("[^\n]+") do
    if not line:find(OWN_LINE) then kept[#kept + 1] = line end
  end
  return remote.tail(table.concat(kept, "\n"))
end

-- Which of npm and node the install found missing ("npm", "node"), or nil.
local function npm_missing(feed)
  for _, m in ipairs(feed.markers) do
    local what = m:match("^ferry%-npm: no%-(%a+)$")
    if what then return what end
  end
  return nil
end

-- Why an install that exited with `rc` failed, for the warning; `offline` names the sandbox when its
-- provider says it has no network (bwrap without net=1), for a registry that could not be reached.
local function failure_warning(adapter, rc, output, missing, offline)
  local why, kind
  if adapter.npm and not missing then why, kind = install_npm.explain(output, adapter.npm) end
  if why and kind == "network" and offline then
    why = why .. " (" .. offline .. " has no network: add net=1 to its provider string)"
  end
  if why then return "install: " .. why end
  local tail = quoted_tail(output)
  local exited = string.format("exited with code %s%s", rc, tail ~= "" and ": " .. tail or "")
  if missing then
    return "install: " .. install_npm.missing(missing, adapter.npm, adapter.install and exited or nil)
  end
  return "install " .. exited
end

-- The outcome of the install command from its output: {installed, status, warning, note, prefix}.
local function outcome(adapter, res, output, feed, timeout_ms, wait_s, offline)
  if res.timed_out then
    return { installed = false, status = "failed",
      warning = string.format("install timed out after %d s: %s", timeout_ms // 1000, quoted_tail(output)) }
  end
  local marker = output:match("ferry%-install: ([%w=%-]+)%s*$")
  local missing = adapter.npm and npm_missing(feed)
  if marker == "present" then return { status = "present" } end
  if marker == "undetected" then
    local why = quoted_tail(output)
    return { installed = false, status = "failed", warning = "install exited 0 but " .. adapter.detect
      .. " is still not in the sandbox" .. (why ~= "" and ": " .. why or "") }
  end
  if marker == "missing" then return { status = "missing", warning = missing_warning(adapter) } end
  if marker == "lock-timeout" then
    return { installed = false, status = "failed",
      warning = "install: another prepare held the install lock for over " .. wait_s .. " s" }
  end
  if marker == "rc=0" then
    local r = { installed = true, status = "installed" }
    r.prefix = adapter.npm and not missing and install_npm.prefix_used(table.concat(feed.markers, "\n")) or nil
    if missing then -- the adapter's own install ran instead, and worked: not a warning
      r.note = "install: " .. install_npm.why_missing(missing) .. "; installed with the adapter's own install"
    end
    return r
  end
  local rc = marker and marker:match("^rc=(%d+)$") or tostring(res.code)
  return { installed = false, status = "failed", warning = failure_warning(adapter, rc, output, missing, offline) }
end

--- Run the install command (the detect probe first), its output shown live on `progress` (an "install"
--- event per line, the last line and a timer on a terminal). A warning is redacted and reported to
--- `progress`.
---@param sb table  the sandbox
---@param adapter table
---@param runtime_dir string
---@param opts table  install_timeout_ms
---@param progress table  a ferry.progress reporter
---@param redact_fn function
---@return table  {installed = true|false|nil, status ("none"|"present"|"installed"|"failed"|"missing"), warning,
---               prefix (the user prefix npm installed into)}
function M.run(sb, adapter, runtime_dir, opts, progress, redact_fn)
  if not adapter.detect and not M.installs(adapter) then return { status = "none" } end
  progress:phase("install")
  local timeout_ms = opts.install_timeout_ms or M.TIMEOUT_MS
  local wait_s = math.max(1, timeout_ms // 1000 - 1)
  local out, feed = tail_buffer(16384), live_output(progress)
  local function push(chunk)
    out.push(chunk)
    feed.push(chunk)
  end
  local ticker = every(M.TICK_MS, feed.tick)
  local ok, res, err = pcall(sb.exec, sb, install_script(adapter, runtime_dir, wait_s),
    { timeout_ms = timeout_ms, on_stdout = push, on_stderr = push })
  ticker.stop()
  if not ok then error(res, 0) end
  feed.finish()
  if progress.status then progress:status(nil) end
  local r
  if not res then
    r = { installed = false, status = "failed", warning = "install: " .. tostring(err) }
  else
    local p = sb.provider
    r = outcome(adapter, res, out.text, feed, timeout_ms, wait_s, type(p) == "table" and p.net == false and p.name)
  end
  if r.note then progress:event({ level = "info", message = redact_fn(r.note) }) end
  r.note = nil
  if r.warning then
    r.warning = redact_fn(r.warning)
    progress:event({ level = "warn", message = r.warning })
  end
  return r
end

--- Shell line (for the sync command) telling whether the adapter's CLI is there: "ferry-install: present" or
--- "ferry-install: missing" on stderr, by the detect probe (with the user prefix first on PATH) or, without
--- one, the marker of an earlier install; nil when the adapter has neither detect nor install.
---@param adapter table
---@param runtime_dir string
---@return string|nil
function M.check_line(adapter, runtime_dir)
  local check = detect_test(adapter)
  if check and M.installs(adapter) then check = "( " .. path_line(adapter, runtime_dir) .. "; " .. check .. " )" end
  if not check and M.installs(adapter) then check = "[ -e " .. q(marker_path(adapter, runtime_dir)) .. " ]" end
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
  if not adapter.detect and not M.installs(adapter) then return { status = "none" } end
  if found == "present" then return { status = "present" } end
  if found == "missing" and not M.installs(adapter) then
    local warning = redact_fn(missing_warning(adapter))
    progress:phase("install")
    progress:event({ level = "warn", message = warning })
    return { status = "missing", warning = warning }
  end
  return M.run(sb, adapter, runtime_dir, opts, progress, redact_fn)
end

return M
