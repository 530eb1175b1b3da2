--- ferry.runtime: prepare a managed runtime in a sandbox, and restore the work from it (README "Runtime").
--
-- prepare: send the workspace as one tar stream made in-process (one command: run the adapter's detect
-- probe, create the remote dir, clear it except preserved names, extract) or, after an earlier prepare of
-- the same sandbox, only the difference (one listing, one delete-and-extract); install the adapter's CLI
-- when the probe did not find it (one more command, under a lock dir in the sandbox so racing prepares
-- install once; a failure is a warning), send the adapter's assets (one stream, none without assets), and
-- write the state file with the baseline snapshot. The sandbox is opened without a probe command.
-- restore: take the workspace lock, receive the sandbox's workspace as one tar stream into a spool file,
-- check every entry (ferry.guard), then 3-way merge it into the local workspace (ferry.merge) with writes
-- that never follow a symlink and land by rename.
local core = require "ferry.core"
local excludes = require "ferry.excludes"
local guard = require "ferry.guard"
local merge = require "ferry.merge"
local redact = require "ferry.redact"
local snapshot = require "ferry.snapshot"
local state_file = require "ferry.state"

local M = {}

M.RUNTIME_DIR = ".ferry-runtime"
M.DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
M.INSTALL_TIMEOUT_MS = 300000
M.DEFAULT_ADAPTER = "shell"

local SPOOL_SLACK = 256 * 1024 * 1024 -- archive headers on top of max_bytes of content
local TAIL_LINES, TAIL_CHARS = 3, 480
local q = core.sh_quote

local QUIET = {}
function QUIET.phase() end
function QUIET.advance() end
function QUIET.event() end
function QUIET.set_total() end

-- ---- small helpers ----

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  local pwd = os.getenv("PWD")
  local here, there = core.fs_stat("."), pwd and core.fs_stat(pwd)
  if not (here and there and here.ino == there.ino and here.dev == there.dev) then
    local p = io.popen("pwd", "r")
    pwd = p and p:read("l")
    if p then p:close() end
  end
  if path == "." then return pwd end
  return pwd .. "/" .. path:gsub("^%./", "")
end

local function clean_dir_path(path)
  path = path:gsub("/+$", "")
  return path
end

local function tail_lines(text)
  local lines = {}
  for line in (text or ""):gmatch("[^\r\n]+") do
    if line:match("%S") and not line:find("^ferry%-install: ") then lines[#lines + 1] = line end
  end
  local out = table.concat(lines, " | ", math.max(1, #lines - TAIL_LINES + 1))
  return #out > TAIL_CHARS and out:sub(1, TAIL_CHARS) or out
end

-- Strings ferry computed from lstat numbers and digests, never from a name, a file's text or the sandbox's
-- words: a file's sha256 in a snapshot and a quick record in local_stat (snapshot.quick_records). They
-- carry no secret, so they skip the redactor, which could only mangle them (a secret's characters can occur
-- in a digest by chance). Most of a state file's text is such strings.
local QUICK_KEY = "^[0-7]+ %d+ %d+ [%d%.e%+%-]+ ()" -- then the sha256

local function is_digest(v, from)
  return #v - from == 63 and not v:find("%X", from)
end

local function computed(k, v, under)
  if type(v) ~= "string" then return false end
  if k == "sha256" then return is_digest(v, 1) end
  if under ~= "local_stat" then return false end
  local sum_at = v:match(QUICK_KEY)
  return sum_at ~= nil and is_digest(v, sum_at)
end

-- Every distinct string (keys too) in `value`, into `out` (a set), but the computed ones. `under` is the
-- key `value` sits under in its parent.
local function collect_strings(value, out, seen, under)
  for k, v in next, value do
    if type(k) == "string" then out[k] = true end
    if type(v) == "string" and not computed(k, v, under) then
      out[v] = true
    elseif type(v) == "table" and not seen[v] then
      seen[v] = true
      collect_strings(v, out, seen, k)
    end
  end
end

-- redact.deep(value, fn), but the computed strings kept as they are.
local function redact_copy(value, fn, seen, under)
  if type(value) == "string" then return fn(value) end
  if type(value) ~= "table" then return value end
  if seen[value] then return seen[value] end
  local out = {}
  seen[value] = out
  for k, v in next, value do
    if computed(k, v, under) then
      out[redact_copy(k, fn, seen)] = v
    else
      out[redact_copy(k, fn, seen)] = redact_copy(v, fn, seen, k)
    end
  end
  return setmetatable(out, getmetatable(value))
end

-- redact_copy(value, fn), but a table whose strings the redactor leaves alone is returned as it is, found
-- with one redactor call over all its distinct strings joined by NUL instead of one call per string (a
-- state file holds a few strings per file of the workspace). No pattern of ferry.redact matches a NUL
-- outside the part it replaces, and no replacement holds one, so a match spanning two strings changes the
-- joined text, and any match inside one string matches the same in the joined text: the joined text comes
-- back unchanged exactly when every string would.
local function redact_table(value, fn)
  if type(value) ~= "table" then return fn(value) end
  local set, list = {}, {}
  collect_strings(value, set, { [value] = true })
  for s in pairs(set) do list[#list + 1] = s end
  local joined = table.concat(list, "\0")
  if fn(joined) == joined then return value end
  return redact_copy(value, fn, {})
end

local function make_redactor(secrets)
  local fn = redact.new(secrets or {})
  return fn, function(value) return redact_table(value, fn) end
end

local function sorted(list)
  table.sort(list)
  return list
end

-- ---- the sandbox ----

-- The sandbox to work on and a counter of the commands run through it. `provider` is a provider string or
-- an opened sandbox (ferry.open's result); on_exec, when given, is called for every command too.
local function open_sandbox(provider, on_exec)
  local counter = { n = 0 }
  local function counted(argv, script)
    counter.n = counter.n + 1
    if on_exec then on_exec(argv, script) end
  end
  if type(provider) == "table" then
    local previous = provider.on_exec
    provider.on_exec = function(argv, script)
      counted(argv, script)
      if previous then previous(argv, script) end
    end
    counter.release = function() provider.on_exec = previous end
    return provider, provider.spec or provider.name, counter
  end
  if type(provider) ~= "string" or provider == "" then
    error("runtime: opts.provider must be a provider string or an opened sandbox", 3)
  end
  -- no probe command at open: the first real command fails as well on an unreachable sandbox, and only
  -- then does diagnose() run the probe, for its clearer message
  local client = require "ferry.client"
  local sb, err, code = client.open(provider, { on_exec = counted, probe = false })
  if not sb then return nil, err, code end
  counter.release = function() sb:close() end
  counter.diagnose = function()
    local probed, perr, pcode = client.open(provider, { on_exec = counted })
    if not probed then return perr, pcode end
    probed:close()
    return nil
  end
  return sb, sb.spec or provider, counter -- a bridge's spec carries its lease id: restore finds the sandbox
end

-- After a failed prepare or restore on a sandbox opened without a probe: the probe's message when the
-- sandbox is unreachable (what opening it with a probe would have said first), else the failure itself.
local function diagnosed(counter, prefix, err, code, ...)
  if not counter.diagnose then return nil, err, code, ... end
  local why, wcode = counter.diagnose()
  if why then return nil, prefix .. why, wcode, ... end
  return nil, err, code, ...
end

local function load_adapter(adapter)
  if type(adapter) == "table" then return adapter end
  local name = adapter or M.DEFAULT_ADAPTER
  local policy = require "ferry.policy"
  local mod, err, code = policy.load("adapters", name)
  if not mod then return nil, err, code end
  if type(mod) ~= "table" then return nil, "adapter " .. name .. " did not return a table", "EINVAL" end
  mod.name = mod.name or name
  return mod
end

local function context(fields, redact_fn, progress)
  local ctx = {
    env = os.getenv,
    home = os.getenv("HOME") or "",
    log = function(level, message)
      message = redact_fn(tostring(message))
      progress:event({ level = level, message = message })
      if level == "warn" or level == "error" then
        if progress == QUIET then core.log(level, message) end
      end
    end,
  }
  for k, v in pairs(fields) do ctx[k] = v end
  return ctx
end

-- Run an adapter hook; returns true or nil, message.
local function run_hook(adapter, name, ctx)
  local hook = adapter.hooks and adapter.hooks[name]
  if not hook then return true end
  local ok, err = pcall(hook, ctx)
  if not ok then return nil, string.format("adapter %s %s hook failed: %s", adapter.name, name, tostring(err)) end
  return true
end

local function command_failure(what, res)
  if res.timed_out then return what .. ": timed out" end
  local why = tail_lines(res.stderr or "")
  return string.format("%s: exit code %s%s", what, tostring(res.code or res.signal), why ~= "" and (": " .. why) or "")
end

-- ---- prepare: install ----

local function install_script(adapter, runtime_dir, wait_s)
  local detect = adapter.detect and "command -v " .. q(adapter.detect) .. " >/dev/null 2>&1"
  local install = adapter.install
  local lines = {}
  if detect then lines[#lines + 1] = "if " .. detect .. "; then echo 'ferry-install: present'; exit 0; fi" end
  if not install then
    lines[#lines + 1] = "echo 'ferry-install: missing'; exit 0"
    return table.concat(lines, "\n")
  end
  local marker = runtime_dir .. "/" .. adapter.name .. ".installed"
  local already = '[ -e "$ferry_mark" ]'
  if detect then already = detect .. ' || [ "$ferry_mark" -nt "$ferry_since" ]' end
  for _, line in ipairs {
    "ferry_rt=" .. q(runtime_dir) .. " ferry_mark=" .. q(marker),
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

-- Returns {installed = true|false|nil, status, warning}.
local function install(sb, adapter, runtime_dir, opts, progress, redact_fn)
  if not adapter.detect and not adapter.install then return { status = "none" } end
  progress:phase("install")
  local timeout_ms = opts.install_timeout_ms or M.INSTALL_TIMEOUT_MS
  local wait_s = math.max(1, timeout_ms // 1000 - 1)
  local out = tail_buffer(16384)
  local res, err = sb:exec(install_script(adapter, runtime_dir, wait_s),
    { timeout_ms = timeout_ms, on_stdout = out.push, on_stderr = out.push })
  local r = {}
  if not res then
    r.installed, r.status, r.warning = false, "failed", "install: " .. tostring(err)
  elseif res.timed_out then
    r.installed, r.status = false, "failed"
    r.warning = string.format("install timed out after %d s: %s", timeout_ms // 1000, tail_lines(out.text))
  else
    local marker = out.text:match("ferry%-install: ([%w=%-]+)%s*$")
    if marker == "present" then
      r.status = "present"
    elseif marker == "missing" then
      r.status = "missing"
      r.warning = "install: " .. adapter.detect .. " is not in the sandbox and adapter " .. adapter.name
        .. " has no install command"
    elseif marker == "lock-timeout" then
      r.installed, r.status = false, "failed"
      r.warning = "install: another prepare held the install lock for over " .. wait_s .. " s"
    elseif marker == "rc=0" then
      r.installed, r.status = true, "installed"
    else
      local rc = marker and marker:match("^rc=(%d+)$") or tostring(res.code)
      r.installed, r.status = false, "failed"
      r.warning = string.format("install exited with code %s: %s", rc, tail_lines(out.text))
    end
  end
  if r.warning then
    r.warning = redact_fn(r.warning)
    progress:event({ level = "warn", message = r.warning })
  end
  return r
end

-- Shell line (for the sync command) telling whether the adapter's CLI is there: "ferry-install: present" or
-- "ferry-install: missing" on stderr, by the detect probe or, without one, the marker of an earlier install;
-- nil when the adapter has neither detect nor install.
local function install_check_line(adapter, runtime_dir)
  local check
  if adapter.detect then
    check = "command -v " .. q(adapter.detect) .. " >/dev/null 2>&1"
  elseif adapter.install then
    check = "[ -e " .. q(runtime_dir .. "/" .. adapter.name .. ".installed") .. " ]"
  else
    return nil
  end
  return "if " .. check .. "; then echo 'ferry-install: present' >&2; else echo 'ferry-install: missing' >&2; fi"
end

-- The install step after a sync that ran install_check_line: nothing more when the CLI is there, the
-- install command (install()) when it is missing and there is one; install() alone when the sync did not
-- report (`found` nil). Returns install()'s result.
local function install_after_check(found, sb, adapter, runtime_dir, opts, progress, redact_fn)
  if not adapter.detect and not adapter.install then return { status = "none" } end
  if found == "present" then return { status = "present" } end
  if found == "missing" and not adapter.install then
    local warning = redact_fn("install: " .. adapter.detect .. " is not in the sandbox and adapter " .. adapter.name
      .. " has no install command")
    progress:phase("install")
    progress:event({ level = "warn", message = warning })
    return { status = "missing", warning = warning }
  end
  return install(sb, adapter, runtime_dir, opts, progress, redact_fn)
end

-- ---- remote excludes (prepare and restore) ----

local SIMPLE_NAME = "^[%w%._%-%*%?%+@,=:~ ]+$" -- one component, read alike by `case`, find -name and us

-- A one-component exclude pattern as a shell `case` pattern: literal runs quoted, '*' and '?' bare.
local function case_pattern(p)
  return (p:gsub("[^%*%?]+", function(lit) return q(lit) end))
end

-- The exclude patterns the sandbox can apply itself, by kind: top-level names (`case`, any tar) and names
-- at any depth (find -name, when find and tar can read a NUL-separated list); each for any entry or for
-- directories only. The sandbox may leave out less than the local excludes do, never more (a path missing
-- from the stream reads as deleted remotely), so nothing is left out when a pattern re-includes ('!').
local function remote_excludes(patterns)
  local x = { top = {}, top_dirs = {}, any = {}, any_dirs = {} }
  for _, p in ipairs(patterns) do
    if p:sub(1, 1) == "!" then return { top = {}, top_dirs = {}, any = {}, any_dirs = {} } end
  end
  for _, p in ipairs(patterns) do
    local body, dirs = p:match("^(.-)(/?)$")
    local anchored = body:match("^/(.+)$")
    local name = anchored or body
    if name:match(SIMPLE_NAME) then
      local top = dirs == "/" and x.top_dirs or x.top
      top[#top + 1] = case_pattern(name)
      if not anchored then
        local any = dirs == "/" and x.any_dirs or x.any
        any[#any + 1] = q(name)
      end
    end
  end
  return x
end

local function find_names(list)
  local parts = {}
  for _, n in ipairs(list) do parts[#parts + 1] = "-name " .. n end
  return table.concat(parts, " -o ")
end

-- find's test for the excluded names the sandbox can apply at any depth (nil when there are none).
local function prune_condition(x)
  local prune = {}
  if #x.any_dirs > 0 then prune[#prune + 1] = "-type d \\( " .. find_names(x.any_dirs) .. " \\)" end
  if #x.any > 0 then prune[#prune + 1] = "\\( " .. find_names(x.any) .. " \\)" end
  if #prune == 0 then return nil end
  return "\\( " .. table.concat(prune, " -o ") .. " \\)"
end

-- find's expression that prunes the excluded names at any depth, then prints the rest NUL-terminated.
local function find_expression(x)
  local cond = prune_condition(x)
  if not cond then return "-print0" end
  return cond .. " -prune -o -print0"
end


-- ---- prepare: sync and assets ----

-- Shell lines that remove everything in "$ferry_r" but the names in `keep`.
local function clear_script(keep)
  local names = {}
  for _, n in ipairs(keep) do names[#names + 1] = q(n) end
  return table.concat({
    'cd "$ferry_r" || exit 1',
    "set --",
    "for f in * .[!.]* ..?*; do",
    "  case $f in " .. table.concat(names, "|") .. ") continue ;; esac",
    '  if [ -e "$f" ] || [ -L "$f" ]; then set -- "$@" "$f"; fi',
    "done",
    'if [ $# -gt 0 ]; then rm -rf -- "$@" || exit 1; fi',
    "cd / || exit 1",
  }, "\n")
end

local function preserved_names(adapter)
  local keep = { M.RUNTIME_DIR }
  for _, n in ipairs(adapter.preserve or {}) do
    if type(n) == "string" and n ~= "" and not n:find("/", 1, true) then keep[#keep + 1] = n end
  end
  return keep
end

-- ---- prepare: sync (full or delta) ----
--
-- After every sync the same command lists the remote tree (kind, mode, size, mtime of each entry) when the
-- sandbox's find can -printf (GNU find), and touches a marker file in the runtime dir; the state keeps that
-- listing as `remote_stat`. The next prepare with the same provider, remote dir, excludes and preserved
-- names lists the tree again in one command, hashing only the files modified after the marker, and works
-- out what a full sync would change: a file whose size, mtime or mode is as ferry left it holds what ferry
-- sent (the baseline), the quick check rsync uses; any other file is judged by its SHA-256, or resent when
-- it has none. Then one command deletes what should go and extracts one tar stream of what should come.
-- The local side has its quick check too: the state keeps `local_stat` (snapshot.quick_records), and the
-- walk reads only the files whose mode, size, inode or mtime moved since, or that were written too close
-- to the earlier walk for their mtime to tell.

local MARK_FILE = M.RUNTIME_DIR .. "/sync.mark"
local LIST_FORMAT = "%y\\0%m\\0%s\\0%T@\\0%p\\0%l\\0" -- kind, mode, size, mtime, ./path, link target
local LIST_FIELDS = 6
local KINDS = { f = "file", d = "dir", l = "symlink" }
local MAX_DELTA_SCRIPT = 96 * 1024 -- the script travels as one argument (Linux allows 128 KiB)
local HAS_GNU_FIND = "find . -maxdepth 0 -printf '' >/dev/null 2>&1"
-- prints "<path>\0<sha256sum output>\0" for each argument; an unreadable file gets an empty hash
local HASH_LOOP = 'for f do printf "%s\\0" "$f"; h=$(sha256sum < "$f" 2>/dev/null) || h=; printf "%s\\0" "$h"; done'

-- Shell lines (cwd "$ferry_r") that set "$@" to "./<name>" for each top-level entry but the `keep` names.
local function top_entries(keep)
  local names = {}
  for _, n in ipairs(keep) do names[#names + 1] = q(n) end
  return table.concat({
    "set --",
    "for f in * .[!.]* ..?*; do",
    "  case $f in " .. table.concat(names, "|") .. ") continue ;; esac",
    '  if [ -e "$f" ] || [ -L "$f" ]; then set -- "$@" "./$f"; fi',
    "done",
  }, "\n")
end

-- Shell lines printing the tree under "$ferry_r" but the kept names as NUL-separated records (LIST_FORMAT;
-- an excluded name the sandbox can match is listed, not entered), with `hashes` then "H" and the SHA-256
-- of each file modified after the marker, then "E". Needs GNU find; exits 1 when find fails.
local function list_lines(keep, patterns, hashes)
  local cond = prune_condition(remote_excludes(patterns))
  local lines = {
    'cd "$ferry_r" || exit 1',
    top_entries(keep),
    'if [ $# -gt 0 ]; then find "$@" -printf ' .. q(LIST_FORMAT) .. (cond and " " .. cond .. " -prune" or "")
      .. " || exit 1; fi",
  }
  if hashes then
    lines[#lines + 1] = "printf 'H\\0'"
    lines[#lines + 1] = 'if [ $# -gt 0 ] && [ -f ' .. q(MARK_FILE) .. " ] && command -v sha256sum >/dev/null 2>&1; then"
    lines[#lines + 1] = '  find "$@" ' .. (cond and cond .. " -prune -o " or "") .. "-type f -newer " .. q(MARK_FILE)
      .. " -exec sh -c " .. q(HASH_LOOP) .. " sh {} + || exit 1"
    lines[#lines + 1] = "fi"
  end
  lines[#lines + 1] = "printf 'E\\0'"
  return table.concat(lines, "\n")
end

-- Shell lines ending a sync: touch the marker and list the tree (base64 for a channel that is not 8-bit
-- clean). A failure here only leaves the listing out (the next prepare is a full sync), never the sync.
local function record_lines(keep, patterns, binary)
  return "if " .. HAS_GNU_FIND .. "; then\n( : > \"$ferry_r/" .. MARK_FILE .. '" || exit 1\n'
    .. list_lines(keep, patterns, false) .. "\n)" .. (binary and "" or " | base64") .. "\nfi\nexit 0"
end

-- Parse list_lines output: rel -> {kind, mode (octal string), size, mtime, target, sha256}; nil when the
-- output is cut short or malformed.
local LIST_RECORD = "^" .. ("([^\0]*)\0"):rep(LIST_FIELDS) .. "()"
local HASH_RECORD = "^([^\0]*)\0([^\0]*)\0()"

local function parse_listing(text)
  local entries, pos, hashing = {}, 1, false
  while true do
    local head = text:sub(pos, pos + 1)
    if head == "E\0" then return entries end
    if head == "H\0" and not hashing then
      hashing, pos = true, pos + 2
    elseif hashing then
      local path, sum, stop = text:match(HASH_RECORD, pos)
      local rel = path and path:match("^%./(.+)$")
      if not rel then return nil end
      sum = sum:match("^(%x+)")
      local e = entries[rel]
      if e and e.kind == "file" and sum and #sum == 64 then e.sha256 = sum:lower() end
      pos = stop
    else
      local kind, mode, size, mtime, path, target, stop = text:match(LIST_RECORD, pos)
      local rel = path and path:match("^%./(.+)$")
      if not rel or not mode:match("^%d+$") then return nil end
      entries[rel] = { kind = KINDS[kind] or "other", mode = mode, size = size, mtime = mtime, target = target }
      pos = stop
    end
  end
end

-- What ferry records of a remote entry: a file's kind, mode, size and mtime; a dir's kind and mode.
local function stat_key(e)
  if e.kind == "file" then return "f " .. e.mode .. " " .. e.size .. " " .. e.mtime end
  if e.kind == "dir" then return "d " .. e.mode end
  return nil
end

local function recorded_stats(entries)
  local out = {}
  for rel, e in pairs(entries) do out[rel] = stat_key(e) end
  return out
end

local function same_list(a, b)
  if type(a) ~= "table" or #a ~= #b then return false end
  for i = 1, #b do
    if a[i] ~= b[i] then return false end
  end
  return true
end

-- The state of an earlier prepare that a delta can start from, or nil and why not (nil when there is none).
local function delta_base(path, provider_string, remote_dir, patterns, keep)
  local st, err, code = state_file.read(path)
  if not st then return nil, code ~= "ENOENT" and err or nil end
  if st.provider ~= provider_string then return nil, "the state is of provider " .. st.provider end
  if st.remote_dir ~= remote_dir then return nil, "the state is of remote dir " .. st.remote_dir end
  if not same_list(st.excludes, patterns) then return nil, "the excludes changed" end
  if not same_list(st.preserve, keep) then return nil, "the preserved names changed" end
  if type(st.remote_stat) ~= "table" then return nil, "the earlier sync did not list the sandbox (no GNU find)" end
  return st
end

-- Does the remote entry hold what the local one has? `rec` is ferry's record of it, `base` the baseline.
local function up_to_date(l, r, rec, base)
  if r.kind ~= l.kind then return false end
  if l.kind == "symlink" then return r.target == l.target end
  local mode_kept = rec ~= nil and rec:match("^%a (%d+)") == r.mode and base ~= nil and base.kind == l.kind
    and base.mode == l.mode
  if not mode_kept or l.kind == "dir" then return mode_kept end
  if rec == stat_key(r) and base.sha256 == l.sha256 then return true end
  return r.sha256 ~= nil and r.sha256 == l.sha256
end

local function parent_of(rel)
  return rel:match("^(.*)/[^/]*$")
end

-- The delta from the remote listing to the local snapshot: names to send (walk order, with their parent
-- dirs), paths to delete (topmost only, sorted) and the number of entries that changed.
local function delta_plan(remote, snap, names, st)
  local wanted, changed, doomed = {}, 0, {}
  for rel, l in pairs(snap) do
    local r = remote[rel]
    if not r or not up_to_date(l, r, st.remote_stat[rel], st.baseline[rel]) then
      changed = changed + 1
      if r and (r.kind ~= l.kind or l.kind == "symlink") then doomed[rel] = true end
      local p = rel
      while p and not wanted[p] do
        wanted[p] = true
        p = parent_of(p)
      end
    end
  end
  for rel in pairs(remote) do
    if not snap[rel] then doomed[rel] = true end
  end
  local delete = {}
  for rel in pairs(doomed) do
    local p, covered = parent_of(rel), false
    while p and not covered do
      covered = doomed[p] or false
      p = parent_of(p)
    end
    if not covered then delete[#delete + 1] = rel end
  end
  local send = {}
  for _, rel in ipairs(names) do
    if wanted[rel] then send[#send + 1] = rel end
  end
  return { send = send, delete = sorted(delete), changed = changed }
end

local function delete_lines(delete)
  if #delete == 0 then return "" end
  local words = {}
  for i, rel in ipairs(delete) do words[i] = q("./" .. rel) end
  return 'cd "$ferry_r" || exit 1\nrm -rf -- ' .. table.concat(words, " ") .. " || exit 1\ncd / || exit 1"
end

-- Approximate tar size of a snapshot, or of its entries in `names` (headers, padded contents, end blocks),
-- for progress totals.
local function archive_estimate(snap, names)
  local total = 1024
  local function add(rel, e)
    total = total + 512 + (#rel > 100 and 1024 or 0)
    if e.kind == "file" then total = total + ((e.size + 511) // 512) * 512 end
  end
  if names then
    for _, rel in ipairs(names) do add(rel, snap[rel]) end
  else
    for rel, e in pairs(snap) do add(rel, e) end
  end
  return total
end

-- The baseline holds what the sandbox received: each sent file gets the SHA-256 of the bytes the stream
-- carried (a file changed since the walk included), and a file the stream left out (it vanished or stopped
-- being a file before it was sent; the writer warned) is no file ferry sent, so it leaves the snapshot.
local function record_digests(snap, names, digests)
  for _, rel in ipairs(names) do
    local e = snap[rel]
    if e and e.kind == "file" then
      e.sha256 = digests[rel]
      if not e.sha256 then snap[rel] = nil end
    end
  end
end

-- One command: `head` (clearing or deleting), the tar stream of `names` extracted (none when empty), the
-- marker and the listing. Returns {bytes, warnings, recorded = rel -> stat_key | nil} or nil, message, code.
local function send_tree(sb, job, head, names)
  job.progress:phase("sync", archive_estimate(job.snap, names))
  local binary = not sb.caps or sb.caps.binary ~= false
  local script = (job.check_line and job.check_line .. "\n" or "")
    .. "ferry_r=" .. q(job.remote_dir) .. "\nmkdir -p \"$ferry_r/" .. M.RUNTIME_DIR .. "\" || exit 1\n"
    .. head .. "\n" .. (#names > 0 and 'tar -x -f - -C "$ferry_r" || exit $?\n' or "")
    .. record_lines(job.keep, job.patterns, binary)
  local writer = #names > 0 and core.tar_writer(job.ws, names, { hash = true })
  local sent = 0
  local res, err, code = sb:pipe_in(script, writer and function() return writer:read() end or "", {
    what = "sync to " .. job.remote_dir,
    on_progress = function(n)
      job.progress:advance(n - sent)
      sent = n
    end,
  })
  if not res then return nil, "prepare: " .. err, code end
  if res.code ~= 0 or res.timed_out then
    return nil, "prepare: " .. command_failure("sync to " .. job.remote_dir, res), "EIO"
  end
  if writer then record_digests(job.snap, names, writer:digests()) end
  local out = res.stdout or ""
  if not binary then out = core.b64_decode(out) or "" end
  local listed = parse_listing(out)
  return { bytes = writer and writer:bytes() or 0, warnings = writer and writer:warnings() or {},
    listed = listed, recorded = listed and recorded_stats(listed),
    install_check = (res.stderr or ""):match("ferry%-install: (%a+)") }
end

-- The first path where the listed remote tree and the snapshot disagree (kind, size, link target, or a path
-- on one side only), or nil when they agree.
local function disagreement(listed, snap)
  for rel, r in pairs(listed) do
    local l = snap[rel]
    if not l or l.kind ~= r.kind or (l.kind == "file" and tostring(l.size) ~= r.size)
      or (l.kind == "symlink" and l.target ~= r.target) then
      return rel
    end
  end
  for rel in pairs(snap) do
    if not listed[rel] then return rel end
  end
  return nil
end

-- The remote tree with hashes of what changed since the marker, or nil and why not.
local function list_remote(sb, remote_dir, keep, patterns)
  local parts = {}
  local script = "ferry_r=" .. q(remote_dir) .. "\n"
    .. 'if [ ! -d "$ferry_r" ]; then echo "ferry-delta: $ferry_r is missing" >&2; exit 3; fi\n'
    .. "if ! " .. HAS_GNU_FIND .. '; then echo "ferry-delta: find cannot -printf" >&2; exit 4; fi\n'
    .. list_lines(keep, patterns, true)
  local res, err = sb:pipe_out(script, function(chunk) parts[#parts + 1] = chunk end,
    { what = "listing " .. remote_dir })
  if not res then return nil, err end
  if res.code ~= 0 or res.timed_out then return nil, command_failure("listing " .. remote_dir, res) end
  local remote = parse_listing(table.concat(parts))
  if not remote then return nil, "listing " .. remote_dir .. ": malformed output" end
  return remote
end

-- A delta sync, or nil and why it cannot be done (then the full sync runs); errors after the sandbox
-- changed are returned as nil, nil, message, code.
local function delta_sync(sb, job, st)
  local remote, why = list_remote(sb, job.remote_dir, job.keep, job.patterns)
  if not remote then return nil, why end
  local plan = delta_plan(remote, job.snap, job.names, st)
  local head = delete_lines(plan.delete)
  if #head > MAX_DELTA_SCRIPT then return nil, #plan.delete .. " paths to delete (the script would be too long)" end
  local synced, err, code = send_tree(sb, job, head, plan.send)
  if not synced then return nil, nil, err, code end
  -- the listing taken after the delta must show the local tree (a race with the sandbox, or a bug, would
  -- not): else the full sync puts it right
  local odd = synced.listed and disagreement(synced.listed, job.snap)
  if odd then return nil, "after the delta, " .. odd .. " differed in the sandbox" end
  synced.delta, synced.delta_files, synced.delta_deleted = true, plan.changed, #plan.delete
  return synced
end

-- Sync the workspace: a delta from the earlier prepare's state `st` (delta_base's) when it fits, else a full
-- sync (clear all but the preserved names, send everything). Returns send_tree's result with delta = true|false (and
-- delta_files, delta_deleted; delta_fallback: why an earlier state was not used) or nil, message, code.
local function sync(sb, job, st, fallback)
  if st then
    local synced, why, err, code = delta_sync(sb, job, st)
    if synced then return synced end
    if err then return nil, err, code end
    fallback = why
  end
  local synced, err, code = send_tree(sb, job, clear_script(job.keep), job.names)
  if not synced then return nil, err, code end
  synced.delta, synced.delta_fallback = false, fallback
  return synced
end

local function check_key(key)
  return type(key) == "string" and key:match("^[%w_.%-]+$") ~= nil and key ~= "." and key ~= ".."
end

-- The asset table: key -> {dir (absolute), follow_symlinks, exclude}; from the adapter then opts.assets.
local function collect_assets(adapter, ctx, extra)
  local assets = {}
  local function add(key, spec, from)
    if type(spec) == "string" then spec = { dir = spec } end
    if not check_key(key) then
      return nil, string.format("prepare: asset key %q (%s) must be letters, digits, '_', '.' or '-'", tostring(key),
        from), "EINVAL"
    end
    if type(spec) ~= "table" or type(spec.dir) ~= "string" or spec.dir == "" then
      return nil, "prepare: asset " .. key .. " (" .. from .. "): expected a dir", "EINVAL"
    end
    assets[key] = { dir = absolute(spec.dir), follow_symlinks = spec.follow_symlinks and true or false,
      exclude = spec.exclude or {} }
    return true
  end
  if adapter.assets then
    local ok, list = pcall(adapter.assets, ctx)
    if not ok then return nil, "prepare: adapter " .. adapter.name .. " assets failed: " .. tostring(list), "EINVAL" end
    for key, spec in pairs(list or {}) do
      local added, err, code = add(key, spec, "adapter " .. adapter.name)
      if not added then return nil, err, code end
    end
  end
  for key, spec in pairs(extra or {}) do
    local added, err, code = add(key, spec, "opts.assets")
    if not added then return nil, err, code end
  end
  return assets
end

-- Is one real path inside (or the same as) the other?
local function nested(a, b)
  return a == b or b:sub(1, #a + 1) == a .. "/" or a:sub(1, #b + 1) == b .. "/"
end

-- Group the assets so that one tar stream carries each group: same follow_symlinks setting, no asset dir
-- inside another of its group. Names in a stream are the real host paths below "/" (O_NOFOLLOW walks
-- from the root need a path without symlinks); the sandbox extracts them into a staging dir and moves each
-- asset dir into place.
local function group_assets(assets, keys, warnings)
  local groups = {}
  for _, key in ipairs(keys) do
    local a = assets[key]
    local real, rerr = snapshot.realpath(a.dir)
    local st = real and core.fs_stat(real)
    if not st or st.kind ~= "dir" then
      warnings[#warnings + 1] = "asset " .. key .. ": " .. a.dir .. (rerr and (": " .. rerr) or " is not a directory")
        .. "; an empty dir is made"
      real = nil
    elseif real == "/" then
      return nil, "prepare: asset " .. key .. ": the root directory cannot be an asset", "EINVAL"
    end
    local home
    for _, g in ipairs(groups) do
      if g.follow == a.follow_symlinks then
        local clash = false
        for _, m in ipairs(g.members) do
          if real and m.real and nested(real, m.real) then clash = true end
        end
        if not clash then home = g break end
      end
    end
    if not home then
      home = { follow = a.follow_symlinks, members = {} }
      groups[#groups + 1] = home
    end
    home.members[#home.members + 1] = { key = key, real = real, asset = a }
  end
  return groups
end

local function group_names(group)
  local names, estimate = {}, 0
  for _, m in ipairs(group.members) do
    if m.real then
      local matcher = excludes.compile(excludes.combine({ "._*" }, m.asset.exclude))
      local snap, list = snapshot.take(m.real, { matcher = matcher, hash = false,
        follow_symlinks = group.follow })
      if not snap then return nil, "prepare: asset " .. m.key .. ": " .. list, "EIO" end
      local base = m.real:sub(2)
      names[#names + 1] = base
      for _, rel in ipairs(list) do names[#names + 1] = base .. "/" .. rel end
      estimate = estimate + archive_estimate(snap)
    end
  end
  return names, estimate
end

local function group_script(group, adapter_dir)
  local lines = {
    "ferry_a=" .. q(adapter_dir) .. ' ferry_s="$ferry_a/.staging.$$"',
    'rm -rf "$ferry_s" && mkdir -p "$ferry_s" && tar -x -f - -C "$ferry_s" || exit 1',
  }
  for _, m in ipairs(group.members) do
    local dest = '"$ferry_a"/' .. q(m.key)
    lines[#lines + 1] = "rm -rf " .. dest .. " || exit 1"
    if m.real then
      lines[#lines + 1] = 'mv "$ferry_s"' .. q(m.real) .. " " .. dest .. " || exit 1"
    else
      lines[#lines + 1] = "mkdir -p " .. dest .. " || exit 1"
    end
  end
  lines[#lines + 1] = 'rm -rf "$ferry_s"'
  return table.concat(lines, "\n")
end

-- Send the assets: one command per group (one in the usual case). Returns the archive bytes sent.
local function send_assets(sb, adapter_name, assets, runtime_dir, progress, warnings)
  local keys = {}
  for key in pairs(assets) do keys[#keys + 1] = key end
  table.sort(keys)
  if #keys == 0 then return 0 end
  local groups, gerr, gcode = group_assets(assets, keys, warnings)
  if not groups then return nil, gerr, gcode end
  local lists, total = {}, 0
  for i, group in ipairs(groups) do
    local names, estimate = group_names(group)
    if not names then return nil, estimate, "EIO" end
    lists[i] = names
    total = total + estimate
  end
  progress:phase("assets", total)
  local adapter_dir = runtime_dir .. "/" .. adapter_name
  local sent_total, sent = 0, 0
  for i, group in ipairs(groups) do
    local writer = core.tar_writer("/", lists[i], { follow_symlinks = group.follow })
    local base = sent
    local res, err, code = sb:pipe_in(group_script(group, adapter_dir), function() return writer:read() end, {
      what = "assets to " .. adapter_dir,
      on_progress = function(n)
        progress:advance(base + n - sent)
        sent = base + n
      end,
    })
    for _, w in ipairs(writer:warnings()) do warnings[#warnings + 1] = w end
    sent_total = sent_total + writer:bytes()
    writer:close()
    if res and (res.code ~= 0 or res.timed_out) then
      err, code, res = command_failure("assets to " .. adapter_dir, res), "EIO", nil
    end
    if not res then return nil, "prepare: " .. err, code end
  end
  return sent_total
end

local function check_remote_dir(remote_dir)
  if type(remote_dir) ~= "string" or remote_dir:sub(1, 1) ~= "/" then
    return nil, "prepare: the remote dir must be an absolute path, got " .. tostring(remote_dir), "EINVAL"
  end
  local clean = clean_dir_path(remote_dir)
  if clean == "" or ("/" .. clean .. "/"):find("/%.%.?/") or clean:find("//", 1, true) then
    return nil, "prepare: refusing remote dir " .. remote_dir .. " (the root, or '.'/'..' components)", "EINVAL"
  end
  return clean
end

local function compile_excludes(patterns, what)
  local ok, matcher = pcall(excludes.compile, patterns)
  if not ok then return nil, what .. ": " .. tostring(matcher), "EINVAL" end
  return matcher
end

local function prepare_inputs(opts)
  if type(opts) ~= "table" then error("runtime.prepare: expected an options table", 3) end
  if type(opts.workspace) ~= "string" or opts.workspace == "" then
    error("runtime.prepare: opts.workspace must be a path", 3)
  end
  local ws = clean_dir_path(absolute(opts.workspace))
  if ws == "" then ws = "/" end
  local st, err, code = core.fs_stat(ws)
  if not st then return nil, "prepare: workspace " .. ws .. ": " .. err, code end
  if st.kind ~= "dir" then return nil, "prepare: workspace " .. ws .. " is not a directory", "ENOTDIR" end
  local adapter, aerr, acode = load_adapter(opts.adapter)
  if not adapter then return nil, "prepare: " .. aerr, acode end
  return { workspace = ws, adapter = adapter }
end

local function run_prepare(opts, sb, provider_string, counter, inputs)
  local progress = opts.progress or QUIET
  local redact_fn, redact_deep = make_redactor(opts.secrets)
  local ws, adapter = inputs.workspace, inputs.adapter
  local remote_dir, rerr, rcode = check_remote_dir(opts.remote_dir or sb.remote_dir_default
    or (sb.provider and sb.provider.default_remote_dir)
    or nil)
  if not remote_dir then
    if opts.remote_dir == nil and not sb.remote_dir_default then
      return nil, "prepare: no remote dir: provider " .. tostring(provider_string)
        .. " has no default; pass remote_dir (-r REMOTE_DIR)", "EINVAL"
    end
    return nil, rerr, rcode
  end
  local runtime_dir = remote_dir .. "/" .. M.RUNTIME_DIR
  local patterns = excludes.combine(excludes.DEFAULT, adapter.excludes, opts.excludes)
  local matcher, merr, mcode = compile_excludes(patterns, "prepare")
  if not matcher then return nil, merr, mcode end

  local asset_dirs = {}
  local ctx = context({ sb = sb, workspace = ws, remote_dir = remote_dir, runtime_dir = runtime_dir,
    adapter = adapter.name, asset_dirs = asset_dirs, provider = provider_string }, redact_fn, progress)
  local assets, aerr, acode = collect_assets(adapter, ctx, opts.assets)
  if not assets then return nil, aerr, acode end
  for key in pairs(assets) do asset_dirs[key] = runtime_dir .. "/" .. adapter.name .. "/" .. key end

  local path = opts.state and absolute(opts.state) or state_file.default_path(provider_string, remote_dir)
  local keep = preserved_names(adapter)
  local base, fallback
  if opts.delta ~= false then
    base, fallback = delta_base(path, provider_string, remote_dir, patterns, keep)
  end
  -- a delta compares local hashes with the sandbox's before it sends (trusting the earlier prepare's
  -- quick records for files whose lstat did not change); a full sync hashes while it sends
  local taken_at = os.time()
  local snap, names, info = snapshot.take(ws, { matcher = matcher, hash = base ~= nil,
    known = base and base.local_stat, stats = true })
  if not snap then return nil, "prepare: " .. names, info end

  local result = { workspace = ws, provider = provider_string, remote_dir = remote_dir, runtime_dir = runtime_dir,
    asset_dirs = asset_dirs,
    adapter = adapter.name, files = info.files, dirs = info.dirs, symlinks = info.symlinks, hashed_files = info.hashed,
    warnings = {} }
  local hooked, herr = run_hook(adapter, "before_sync", ctx)
  if not hooked then return nil, "prepare: " .. redact_fn(herr), "EHOOK" end
  local synced, serr, scode = sync(sb, { ws = ws, snap = snap, names = names, remote_dir = remote_dir,
    keep = keep, patterns = patterns, progress = progress, check_line = install_check_line(adapter, runtime_dir) },
    base, fallback)
  if not synced then return nil, redact_fn(serr), scode end
  local inst = install_after_check(synced.install_check, sb, adapter, runtime_dir, opts, progress, redact_fn)
  result.installed, result.install_status, result.install_warning = inst.installed, inst.status, inst.warning
  result.delta, result.delta_files, result.delta_deleted = synced.delta, synced.delta_files, synced.delta_deleted
  result.delta_fallback = synced.delta_fallback
  for _, w in ipairs(synced.warnings) do result.warnings[#result.warnings + 1] = w end
  for _, rel in ipairs(info.skipped) do
    result.warnings[#result.warnings + 1] = rel .. ": not a file, dir or symlink; skipped"
  end
  hooked, herr = run_hook(adapter, "after_sync", ctx)
  if not hooked then return nil, "prepare: " .. redact_fn(herr), "EHOOK" end

  local asset_bytes, xerr, xcode = send_assets(sb, adapter.name, assets, runtime_dir, progress, result.warnings)
  if not asset_bytes then return nil, redact_fn(xerr), xcode end
  result.bytes_sent = synced.bytes + asset_bytes

  progress:phase("finalize")
  local record = redact_deep({
    version = state_file.VERSION, ferry_version = core.version, provider = provider_string,
    remote_dir = remote_dir, runtime_dir = runtime_dir, adapter = adapter.name, workspace = ws,
    excludes = patterns, preserve = preserved_names(adapter), assets = asset_dirs, baseline = snap,
    remote_stat = synced.recorded, local_stat = snapshot.quick_records(snap, info.stats, taken_at),
    created_at = os.time(),
  })
  local wrote, werr, wcode = state_file.write(path, record)
  if not wrote then return nil, "prepare: " .. werr, wcode end
  result.state = path
  result.commands = counter.n
  return redact_deep(result)
end

--- Prepare the managed runtime in a sandbox. opts:
---   provider        provider string ("local", "bwrap:DIR", "cmd:ARGV...") or an opened sandbox (ferry.open)
---   workspace       local directory to send (never written by prepare)
---   adapter         adapter name (default "shell") or an adapter table
---   remote_dir      absolute dir in the sandbox (default: the provider's default remote dir)
---   excludes        extra exclude patterns (ferry.excludes syntax), after the defaults and the adapter's
---   assets          extra assets: {key = dir | {dir, follow_symlinks, exclude}}
---   state           state file path (default ferry.state.default_path(provider, remote_dir))
---   progress        a ferry.progress reporter (phases sync, install, assets, finalize); secrets: list of
---                   values to redact; on_exec(argv, script) for every command; install_timeout_ms (300 s)
---   delta           false: always a full sync (default: a delta when the state file is of an earlier
---                   prepare with the same provider string, remote dir, excludes and preserved names)
--- Returns {workspace, provider, remote_dir, runtime_dir, asset_dirs = {key = dir}, installed = true|false|nil,
--- install_status
--- ("none"|"present"|"installed"|"failed"|"missing"), install_warning, bytes_sent, commands, state, files,
--- dirs, symlinks, warnings, delta = true|false, delta_files (entries sent), delta_deleted (paths removed),
--- delta_fallback (why an earlier state was not used for a delta), hashed_files (local files read to hash
--- before a delta; 0 for a full sync, which hashes what it sends)} or nil, message, code.
---@param opts table
---@return table|nil result, string|nil err, string|nil code
function M.prepare(opts)
  local inputs, ierr, icode = prepare_inputs(opts)
  if not inputs then return nil, ierr, icode end
  local sb, provider_string, counter = open_sandbox(opts.provider, opts.on_exec)
  if not sb then return nil, "prepare: " .. provider_string, counter end
  local ok, result, err, code = pcall(run_prepare, opts, sb, provider_string, counter, inputs)
  counter.release()
  if not ok then error(result, 0) end
  if not result then return diagnosed(counter, "prepare: ", err, code) end
  return result
end

-- ---- restore ----

-- Shell script that writes the remote workspace as a tar stream on stdout: names "./<top>/...", without
-- the runtime dir, preserved names and the excludes the sandbox can apply (see remote_excludes).
local function restore_script(remote_dir, state)
  local skip = {}
  for _, n in ipairs(state.preserve) do skip[#skip + 1] = q(n) end
  if #skip == 0 then skip[1] = q(M.RUNTIME_DIR) end
  local x = remote_excludes(state.excludes)
  for _, pat in ipairs(x.top) do skip[#skip + 1] = pat end
  local lines = {
    "ferry_r=" .. q(remote_dir),
    'if [ ! -d "$ferry_r" ]; then echo "ferry-restore: missing" >&2; exit 3; fi',
    'cd "$ferry_r" || exit 1',
    "set --",
    "for f in * .[!.]* ..?*; do",
    '  [ -e "$f" ] || [ -L "$f" ] || continue',
    "  case $f in " .. table.concat(skip, "|") .. ") continue ;; esac",
  }
  if #x.top_dirs > 0 then
    lines[#lines + 1] = '  if [ -d "$f" ] && [ ! -L "$f" ]; then case $f in ' .. table.concat(x.top_dirs, "|")
      .. ") continue ;; esac; fi"
  end
  for _, line in ipairs {
    '  set -- "$@" "./$f"',
    "done",
    "[ $# -gt 0 ] || exit 0",
    "if find . -maxdepth 0 -print0 >/dev/null 2>&1 &&",
    "  tar -c -f - --hard-dereference --null --no-recursion -T /dev/null >/dev/null 2>&1; then",
    -- GNU tar: hard-linked files travel as files (a hard link entry is refused on arrival)
    '  find "$@" ' .. find_expression(x) .. " | tar -c -f - --hard-dereference --null --no-recursion -T -",
    "  exit $?",
    "fi",
    'exec tar -c -f - -- "$@"',
  } do
    lines[#lines + 1] = line
  end
  return table.concat(lines, "\n")
end

-- Receive the remote workspace into `spool`. Returns {received} or nil, message, code.
local function receive(sb, remote_dir, st, spool, limit, progress)
  progress:phase("restore")
  local f, ferr = io.open(spool, "wb")
  if not f then return nil, "restore: spool " .. spool .. ": " .. tostring(ferr), "EIO" end
  local written, overflow, write_err, reported = 0, false, nil, 0
  local res, err, code = sb:pipe_out(restore_script(remote_dir, st), function(chunk)
    if overflow or write_err then return end
    written = written + #chunk
    if written > limit then
      overflow = true
      return
    end
    local ok, werr = f:write(chunk)
    if not ok then write_err = werr end
  end, {
    what = "restore from " .. remote_dir,
    on_progress = function(n)
      progress:advance(n - reported)
      reported = n
    end,
  })
  f:close()
  if overflow then
    return nil, string.format("restore refused: the sandbox sent over %d bytes", limit), "EFBIG"
  end
  if write_err then return nil, "restore: spool " .. spool .. ": " .. tostring(write_err), "EIO" end
  if not res then return nil, "restore: " .. err, code end
  if res.code == 3 and (res.stderr or ""):find("ferry-restore: missing", 1, true) then
    return nil, "restore: " .. remote_dir .. " does not exist in the sandbox; nothing restored", "ENOENT"
  end
  local warning
  if res.code == 1 and not res.timed_out then
    warning = "restore: the sandbox's tar reported: " .. tail_lines(res.stderr) -- e.g. a file changed as read
  elseif res.code ~= 0 or res.timed_out then
    return nil, "restore: " .. command_failure("reading " .. remote_dir .. " from the sandbox", res), "EIO"
  end
  return { received = res.received or written, warning = warning }
end

-- The local snapshot for the merge: leftover temp files removed, and paths a killed restore had removed
-- (state.pending_removals) seen as the baseline had them, so the rerun finishes the same plan. Like a
-- delta prepare, the walk reads only the files whose lstat moved since the state's quick records.
local function local_snapshot(ws, matcher, st, result)
  local snap, names, info = snapshot.take(ws, { matcher = matcher, known = st.local_stat })
  if not snap then return nil, names, info end
  for _, rel in ipairs(info.temps) do core.fs_safe_remove(ws, rel) end
  result.hashed_files = info.hashed
  local pending = st.pending_removals
  if type(pending) == "table" then
    table.sort(pending)
    for _, rel in ipairs(pending) do
      local parent = rel:match("^(.*)/[^/]*$")
      if snap[rel] == nil and st.baseline[rel] and (not parent or (snap[parent] and snap[parent].kind == "dir")) then
        snap[rel] = st.baseline[rel]
      end
    end
  end
  return snap
end

local function apply(ws, spool, plan, name_of, max_bytes, result)
  local writes, chmods = {}, {}
  for _, a in ipairs(plan.actions) do
    if a.op == "remove" or a.op == "rmdir" then
      local ok, err, code = core.fs_safe_remove(ws, a.path)
      if not ok then
        if a.op == "rmdir" and code == "ENOTEMPTY" then
          result.warnings[#result.warnings + 1] = a.path .. ": kept (holds excluded content)"
        else
          return nil, "restore: " .. err, code
        end
      end
    elseif a.op == "mkdir" then
      local ok, err, code = core.fs_safe_mkdir(ws, a.path, a.mode)
      if not ok then return nil, "restore: " .. err, code end
    elseif a.op == "write" then
      writes[#writes + 1] = a
    elseif a.op == "chmod" then
      chmods[#chmods + 1] = a
    end
  end
  -- one extract pass per round: a source written to two places needs two passes
  while #writes > 0 do
    local xplan, later, n = {}, {}, 0
    for _, a in ipairs(writes) do
      local name = name_of[a.from]
      if xplan[name] then
        later[#later + 1] = a
      else
        -- the sha256 the guard saw is checked again before each rename
        xplan[name] = { dest = a.path, mode = a.entry.mode or 420, sha256 = a.entry.sha256 }
        n = n + 1
      end
    end
    local count, err, code = core.tar_extract(spool, ws, xplan, { max_bytes = max_bytes })
    if not count then return nil, "restore: " .. err, code end
    if count ~= n then return nil, string.format("restore: wrote %d of %d entries", count, n), "EIO" end
    writes = later
  end
  for _, a in ipairs(chmods) do
    local ok, err, code = core.fs_safe_chmod(ws, a.path, a.mode)
    if not ok then return nil, "restore: " .. err, code end
  end
  return true
end

local function refusal(checked, result)
  for _, r in ipairs(checked.refused) do result.refused[#result.refused + 1] = r.name .. ": " .. r.reason end
  local first = checked.refused[1]
  return nil, "restore refused: " .. first.name .. ": " .. first.reason, "EPERM", result
end

local function merge_into(ws, entries, st, opts, result)
  local matcher, merr, mcode = compile_excludes(st.excludes, "restore")
  if not matcher then return nil, merr, mcode end
  local skip_top = {}
  for _, n in ipairs(st.preserve) do skip_top[n] = true end
  skip_top[M.RUNTIME_DIR] = true
  local checked = guard.check(entries, { workspace = ws, matcher = matcher, skip_top = skip_top,
    baseline = st.baseline, allow_outside_symlinks = opts.allow_outside_symlinks })
  if #checked.refused > 0 then return refusal(checked, result) end
  local remote = guard.snapshot(checked)
  local localsnap, lerr, lcode = local_snapshot(ws, matcher, st, result)
  if not localsnap then return nil, "restore: " .. lerr, lcode end
  local plan, perr, pcode = merge.plan(st.baseline, localsnap, remote)
  if not plan then return nil, "restore: " .. perr, pcode end
  local name_of = {}
  for rel, e in pairs(checked.entries) do name_of[rel] = e.name end
  return plan, remote, name_of
end

local function restore_locked(opts, st, path, ws, progress, redact_deep, result)
  -- the work comes back even when the adapter is gone: only its hooks are missed
  local adapter, aerr = load_adapter(opts.adapter or st.adapter)
  if not adapter then
    result.warnings[#result.warnings + 1] = "restore: " .. aerr .. "; restoring without its hooks"
    adapter = { name = tostring(st.adapter), hooks = {} }
  end
  if not opts.sb and st.provider:find("***", 1, true) then
    return nil, "restore: the provider string in " .. path .. " was redacted (it held a secret); pass the "
      .. "sandbox itself (opts.sb) or keep secrets out of provider strings", "EINVAL"
  end
  local sb, provider_string, counter = open_sandbox(opts.sb or st.provider, opts.on_exec)
  if not sb then return nil, "restore: " .. provider_string, counter end
  local redact_fn = opts.redact_fn
  local ctx = context({ sb = sb, workspace = ws, remote_dir = st.remote_dir, runtime_dir = st.runtime_dir,
    adapter = adapter.name, asset_dirs = st.assets, provider = provider_string, state = path }, redact_fn, progress)
  local spool_dir, serr, scode = core.fs_mkdtemp("ferry-restore-")
  if not spool_dir then
    counter.release()
    return nil, "restore: " .. serr, scode
  end
  local ok, r1, r2, r3, r4 = pcall(function()
    local hooked, herr = run_hook(adapter, "before_restore", ctx)
    if not hooked then return nil, "restore: " .. herr, "EHOOK" end
    local max_bytes = opts.max_bytes or M.DEFAULT_MAX_BYTES
    local spool = spool_dir .. "/remote.tar"
    local got, gerr, gcode = receive(sb, st.remote_dir, st, spool, opts.max_stream_bytes or max_bytes + SPOOL_SLACK,
      progress)
    if not got then return nil, gerr, gcode, result end
    result.bytes_received = got.received
    if got.warning then result.warnings[#result.warnings + 1] = got.warning end
    progress:phase("finalize")
    local entries, terr, tcode = core.tar_scan(spool, { max_bytes = max_bytes })
    if not entries then
      if tcode == "EFBIG" then return nil, "restore refused: " .. terr, "EFBIG", result end
      return nil, "restore: bad archive from the sandbox: " .. terr, tcode, result
    end
    local plan, remote, name_of = merge_into(ws, entries, st, opts, result)
    if not plan then return nil, remote, name_of, result end
    local pending = {}
    for _, a in ipairs(plan.actions) do
      if a.op == "remove" or a.op == "rmdir" then pending[#pending + 1] = a.path end
    end
    if #pending > 0 then
      st.pending_removals = pending
      local wrote, werr, wcode = state_file.write(path, redact_deep(st))
      if not wrote then return nil, "restore: " .. werr, wcode end
    end
    local applied, xerr, xcode = apply(ws, spool, plan, name_of, max_bytes, result)
    if not applied then return nil, xerr, xcode, result end
    st.pending_removals, st.baseline, st.restored_at = nil, remote, os.time()
    local wrote, werr, wcode = state_file.write(path, redact_deep(st))
    if not wrote then return nil, "restore: " .. werr, wcode end
    result.changed = sorted(table.move(plan.mkdirs, 1, #plan.mkdirs, #plan.take + 1,
      table.move(plan.take, 1, #plan.take, 1, {})))
    result.deleted = sorted(table.move(plan.rmdirs, 1, #plan.rmdirs, #plan.delete + 1,
      table.move(plan.delete, 1, #plan.delete, 1, {})))
    result.conflicts = sorted(table.move(plan.conflict_paths, 1, #plan.conflict_paths, 1, {}))
    result.conflict_copies = {}
    for _, c in ipairs(plan.conflicts) do result.conflict_copies[c.path] = c.remote_copy end
    result.kept = plan.keep
    local after, aferr = run_hook(adapter, "after_restore", ctx)
    if not after then result.warnings[#result.warnings + 1] = aferr end
    return result
  end)
  core.fs_remove_tree(spool_dir)
  result.commands = counter.n
  counter.release()
  if not ok then error(r1, 0) end
  if not r1 then return diagnosed(counter, "restore: ", r2, r3, r4) end
  return r1
end

--- Restore the sandbox's workspace into the local one. opts:
---   state           the state file prepare wrote (required)
---   workspace       local workspace (default: the one in the state)
---   sb              an opened sandbox to use instead of opening the state's provider
---   adapter         adapter name or table (default: the state's; a missing one only loses its hooks)
---   allow_outside_symlinks  let symlinks point outside the workspace (default false)
---   max_bytes       content limit of the archive (default 1 GiB)
---   max_stream_bytes  limit of the stream itself, headers included (default max_bytes + 256 MiB)
---   progress, secrets, on_exec   as for prepare (phases restore, finalize)
--- Returns {changed, deleted, conflicts (paths), conflict_copies = {path = copy}, kept, refused, warnings,
--- bytes_received, commands, hashed_files (local files read to hash: those whose lstat moved since the
--- state's quick records), state, workspace, remote_dir, runtime_dir, provider} or nil, message, code[,
--- partial result with `refused` (one "<entry>: <reason>" per refused entry)].
--- Errors: "restore: another restore of <workspace> is running" EBUSY; "restore refused: <entry>: <reason>"
--- EPERM; "restore refused: archive exceeds the N byte limit at <entry>" and "restore refused: the sandbox
--- sent over N bytes" EFBIG; "restore: <remote> does not exist in the sandbox; nothing restored" ENOENT;
--- "restore: reading <remote> from the sandbox: exit code N: ..." EIO; state and filesystem errors.
---@param opts table
---@return table|nil result, string|nil err, string|nil code, table|nil partial
function M.restore(opts)
  if type(opts) ~= "table" or type(opts.state) ~= "string" then
    error("runtime.restore: opts.state must be the path of a state file", 2)
  end
  local path = absolute(opts.state)
  local st, err, code = state_file.read(path)
  if not st then return nil, "restore: " .. err, code end
  local ws = clean_dir_path(absolute(opts.workspace or st.workspace))
  local wst = core.fs_stat(ws)
  if not wst or wst.kind ~= "dir" then
    return nil, "restore: workspace " .. ws .. " is not a directory", wst and "ENOTDIR" or "ENOENT"
  end
  local lock = core.fs_lock(path .. ".lock")
  if not lock then return nil, "restore: another restore of " .. ws .. " is running", "EBUSY" end
  local redact_fn, redact_deep = make_redactor(opts.secrets)
  local progress = opts.progress or QUIET
  local result = { state = path, workspace = ws, remote_dir = st.remote_dir, runtime_dir = st.runtime_dir,
    provider = st.provider, changed = {}, deleted = {}, conflicts = {}, refused = {}, warnings = {},
    bytes_received = 0, commands = 0, hashed_files = 0 }
  local inner = setmetatable({ redact_fn = redact_fn }, { __index = opts })
  local ok, r1, r2, r3, r4 = pcall(restore_locked, inner, st, path, ws, progress, redact_deep, result)
  lock:unlock()
  if not ok then error(r1, 0) end
  if not r1 then return nil, redact_fn(r2), r3, r4 and redact_deep(r4) end
  return redact_deep(r1)
end

return M
