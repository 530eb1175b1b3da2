--- ferry.adapter_util: what adapters share: reading a dir from the environment, keeping only the assets
-- whose dir exists on the host (a user without, say, ~/.gemini gets no asset rather than an error), bounded
-- host file reads, symlink resolution, and copying a file brought back from the sandbox over a host file
-- under a lock.
local core = require "ferry.core"
local json = require("cjson").new()
local snapshot = require "ferry.snapshot"

local M = {}

--- `value` when it is a string holding more than blanks, else nil (an unset or blank variable).
---@param value any
---@return string|nil
function M.nonempty(value)
  if type(value) == "string" and value:match("%S") then return value end
  return nil
end

--- The dir named by the environment variable `name` when it is set and not blank, else `default`.
---@param ctx table  the adapter context (ctx.env)
---@param name string
---@param default string
---@return string
function M.env_dir(ctx, name, default)
  return M.nonempty(ctx.env(name)) or default
end

--- Whether `path` is a directory on the host (a symlink to one counts).
---@param path string
---@return boolean
function M.is_dir(path)
  local st = core.fs_stat(path)
  return st ~= nil and st.kind == "dir"
end

--- The assets (key -> {dir, follow_symlinks, exclude}) whose dir exists on the host; the others are left out.
---@param assets table
---@return table
function M.existing(assets)
  local out = {}
  for key, asset in pairs(assets) do
    if M.is_dir(asset.dir) then out[key] = asset end
  end
  return out
end

-- Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

--- An RFC 3339 timestamp ("2025-06-30T12:34:56.123456789Z", "...+02:00") as {seconds, nanoseconds} since the
--- epoch, or nil when it is not one (credentials carry such stamps). Fractions are kept exactly: a double
--- cannot hold epoch nanoseconds. Compare two with M.time_after.
---@param text any
---@return integer[]|nil
function M.parse_time(text)
  if type(text) ~= "string" then return nil end
  local y, mo, d, h, mi, s, frac, zone =
    text:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not y then return nil end
  y, mo, d, h, mi, s = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(s)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or s > 60 then return nil end
  if frac == "." then return nil end
  local offset = 0
  if zone ~= "Z" and zone ~= "z" then
    local sign, oh, om = zone:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then return nil end
    offset = (tonumber(oh) * 60 + tonumber(om)) * 60
    if sign == "-" then offset = -offset end
  end
  local digits = (frac:sub(2) .. "000000000"):sub(1, 9)
  local seconds = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset
  return { seconds, tonumber(digits) }
end

--- Whether instant `a` (from M.parse_time) is strictly later than `b`.
---@param a integer[]
---@param b integer[]
---@return boolean
function M.time_after(a, b)
  return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2])
end

local ERRNO_CODES = { [2] = "ENOENT", [13] = "EACCES", [21] = "EISDIR" }

--- Read a host file of at most `max_bytes` bytes. Returns its bytes, or nil, message, code: "read PATH:
--- <why>" with the errno name ("ENOENT", "EACCES", ...); "read PATH: over the N byte limit", "EFBIG" for a
--- larger file (nothing of it is kept); "read PATH: is a directory", "EISDIR".
---@param path string
---@param max_bytes integer
---@return string|nil data, string|nil err, string|nil code
function M.read_file(path, max_bytes)
  local st, serr, scode = core.fs_stat(path)
  if not st then return nil, (serr:gsub("^stat ", "read ", 1)), scode end
  if st.kind == "dir" then return nil, "read " .. path .. ": is a directory", "EISDIR" end
  local too_big = "read " .. path .. ": over the " .. max_bytes .. " byte limit"
  if st.size and st.size > max_bytes then return nil, too_big, "EFBIG" end
  local f, oerr, errno = io.open(path, "rb")
  if not f then return nil, "read " .. oerr, ERRNO_CODES[errno] or "EIO" end
  local data = f:read(max_bytes + 1) or ""
  f:close()
  if #data > max_bytes then return nil, too_big, "EFBIG" end
  return data
end

--- The absolute path with every symlink resolved and no '.' or '..' components (like realpath(3)); the
--- file must exist. Returns nil, message, code otherwise.
---@param path string  an absolute path
---@return string|nil resolved, string|nil err, string|nil code
M.realpath = snapshot.realpath

local MAX_LINKS = 16

--- The file `path` names once its own symlinks are followed (a link to a link, ...), so that a write
--- updates what the link points to; the parent dirs are left as they are. A path that is not a symlink,
--- or does not exist, is itself. nil, message, code for an unreadable link or a chain of more than 16.
---@param path string
---@return string|nil target, string|nil err, string|nil code
function M.link_target(path)
  local current = path
  for _ = 1, MAX_LINKS do
    local st = core.fs_lstat(current)
    if not st or st.kind ~= "symlink" then return current end
    local target, err, code = core.fs_readlink(current)
    if not target then return nil, err, code end
    if target:sub(1, 1) ~= "/" then target = (current:match("^(.*)/[^/]*$") or ".") .. "/" .. target end
    current = target
  end
  return nil, path .. ": more than " .. MAX_LINKS .. " symlinks in a row", "ELOOP"
end

local LOCK_STEP_MS = 50

--- Take the lock file `path` (created when missing), waiting up to `wait_ms` while another process holds
--- it. Returns the lock (lock:unlock() releases it; so does the process ending), or nil, message, code.
---@param path string
---@param wait_ms integer
---@return userdata|nil lock, string|nil err, string|nil code
function M.lock(path, wait_ms)
  local waited = 0
  while true do
    local lock, err, code = core.fs_lock(path)
    if lock or code ~= "EBUSY" or waited >= wait_ms then return lock, err, code end
    require("ferry").sleep(LOCK_STEP_MS)
    waited = waited + LOCK_STEP_MS
  end
end

-- A name beside `name` in `dir` for the copy of the file a copy-back replaces: "<name>.ferry-backup-<UTC
-- time>", with "-N" added when a copy of that second exists already (two copy-backs in one second keep both).
local function backup_name(dir, name)
  local base = name .. ".ferry-backup-" .. os.date("!%Y%m%dT%H%M%SZ")
  local candidate, n = base, 1
  while core.fs_lstat(dir .. "/" .. candidate) do
    n = n + 1
    candidate = base .. "-" .. n
  end
  return candidate
end

-- Under the lock: keep the host file's bytes as a backup (mode 0600) when asked, then write `data`.
-- Returns true and the backup's path (or nil), or nil, message, code.
local function replace(dir, name, data, host_data, opts)
  local backup
  if opts.backup and host_data then
    backup = backup_name(dir, name)
    local ok, err, code = core.fs_safe_write(dir, backup, host_data, tonumber("600", 8))
    if not ok then return nil, "backup of " .. dir .. "/" .. name .. ": " .. err, code end
    backup = dir .. "/" .. backup
  end
  local ok, err, code = core.fs_safe_write(dir, name, data, opts.mode or tonumber("600", 8))
  if not ok then return nil, err, code end
  return true, backup
end

--- Put `data` (a file brought back from the sandbox) in place of the host file `path` when opts.refuse
--- allows it. refuse(host_bytes) -> reason | nil decides; host_bytes is the host file's content, nil when
--- it is missing, unreadable or over opts.max_bytes. It is asked twice: once, then again holding the lock file
--- ".<name>.ferry-lock" beside the file, so that two restores finishing together cannot put back the older
--- copy. A symlinked `path` has its target replaced and keeps the link. The write is atomic (a temp name in
--- the same dir renamed into place, no symlink followed) with mode opts.mode (default 0600). With
--- opts.backup the file replaced is kept first beside it as "<name>.ferry-backup-<UTC time>" (mode 0600).
--- opts: refuse (required), max_bytes (default 16 MiB), mode, backup, lock_wait_ms (default 5000).
--- Returns "copied", the file written, the backup (or nil); "kept", the reason; or nil, message, code when the
--- link cannot be followed, the lock is not taken or a write fails.
---@param path string
---@param data string
---@param opts table
---@return string|nil status, string|nil detail, string|nil backup_or_code
function M.copy_back(path, data, opts)
  local target, err, code = M.link_target(path)
  if not target then return nil, err, code end
  local max_bytes = opts.max_bytes or 16 * 1024 * 1024
  local host_data
  local function refusal()
    host_data = M.read_file(target, max_bytes)
    return opts.refuse(host_data)
  end
  local reason = refusal()
  if reason then return "kept", reason end
  local dir, name = target:match("^(.*)/([^/]+)$")
  if not dir then dir, name = ".", target end
  local lock, lerr, lcode = M.lock(dir .. "/." .. name .. ".ferry-lock", opts.lock_wait_ms or 5000)
  if not lock then return nil, lerr, lcode end
  local ok, backup_or_err, wcode
  reason = refusal()
  if not reason then ok, backup_or_err, wcode = replace(dir, name, data, host_data, opts) end
  lock:unlock()
  if reason then return "kept", reason end
  if not ok then return nil, backup_or_err, wcode end
  return "copied", target, backup_or_err
end

--- Record what a hook did with a credential in the restore result (`ctx.result.credentials`, shown by the
--- summary): {adapter, path, action = "copied"|"refused"|"skipped", reason}. Nothing when the context
--- carries no result (a hook run by a spec or outside restore).
---@param ctx table  the hook context
---@param path string  the host file
---@param action string
---@param reason string|nil
function M.report_credential(ctx, path, action, reason)
  local result = ctx.result
  if type(result) ~= "table" then return end
  result.credentials = result.credentials or {}
  result.credentials[#result.credentials + 1] = { adapter = ctx.adapter, path = path, action = action,
    reason = reason }
end

--- A host file's JSON object: nil when the file is missing; nil and why ("PATH: not a JSON object", or the
--- read error) when it cannot be used.
---@param path string
---@param max_bytes integer
---@return table|nil doc, string|nil err
function M.read_json(path, max_bytes)
  local text, err, code = M.read_file(path, max_bytes)
  if not text then return nil, code ~= "ENOENT" and err or nil end
  local ok, doc = pcall(json.decode, text)
  if not ok or type(doc) ~= "table" then return nil, path .. ": not a JSON object" end
  return doc
end

-- The end of the JSON string starting at text[i] (a '"'): the index of its closing quote.
local function string_end(text, i)
  local j = i + 1
  while true do
    local c = text:find('["\\]', j)
    if not c then error("unterminated string", 0) end
    if text:sub(c, c) == '"' then return c end
    j = c + 2
  end
end

-- The end of the JSON value starting at text[i]: the index of its last character.
local function value_end(text, i)
  local c = text:sub(i, i)
  if c == '"' then return string_end(text, i) end
  if c ~= "{" and c ~= "[" then return (text:find("[%s,}%]]", i) or #text + 1) - 1 end
  local depth, j = 0, i
  while true do
    local k = text:find('[{}%[%]"]', j)
    if not k then error("unterminated value", 0) end
    local d = text:sub(k, k)
    if d == '"' then
      k = string_end(text, k)
    elseif d == "{" or d == "[" then
      depth = depth + 1
    else
      depth = depth - 1
      if depth == 0 then return k end
    end
    j = k + 1
  end
end

-- The top-level members of the JSON object `text`: a list of {key, first, last} (the member's span, from
-- its key's quote to the end of its value) and the index of the closing brace.
local function members(text)
  local list = {}
  local i = text:find("%S")
  if text:sub(i, i) ~= "{" then error("not an object", 0) end
  i = text:find("%S", i + 1)
  while text:sub(i, i) ~= "}" do
    local key_end = string_end(text, i)
    local key = json.decode(text:sub(i, key_end))
    local v = text:find("%S", text:find(":", key_end + 1, true) + 1)
    local last = value_end(text, v)
    list[#list + 1] = { key = key, first = i, last = last }
    i = text:find("%S", last + 1)
    if text:sub(i, i) == "," then i = text:find("%S", i + 1) end
  end
  return list, i
end

--- The JSON object `text` with its top-level member `key` set to `value` (JSON text; nil removes it), the
--- rest of the text left as it was (re-encoding it with lua-cjson would turn every empty list into {}).
--- Raises when `text` is not a JSON object (check with a decode first).
---@param text string
---@param key string
---@param value string|nil
---@return string
function M.json_set(text, key, value)
  local list, close = members(text)
  local member = value and json.encode(key) .. ":" .. value
  for n, m in ipairs(list) do
    if m.key == key then
      if member then return text:sub(1, m.first - 1) .. member .. text:sub(m.last + 1) end
      -- removed with the comma after it, or before it when it is the last
      local from, to = m.first, m.last
      if list[n + 1] then to = list[n + 1].first - 1 elseif list[n - 1] then from = list[n - 1].last + 1 end
      return text:sub(1, from - 1) .. text:sub(to + 1)
    end
  end
  if not member then return text end
  local before = #list > 0 and text:sub(1, list[#list].last) .. "," or text:sub(1, close - 1)
  return before .. member .. text:sub(#list > 0 and list[#list].last + 1 or close)
end

--- The install command of a vendor's install script at `url`, run by `shell` ("bash", "sh"): downloaded to a
--- temp file first, so that a failed download fails the install (`curl URL | bash` would run a truncated or
--- empty script and succeed, and POSIX sh has no pipefail), then run; then `after` (shell lines, or nil),
--- e.g. linking what it installed into "$FERRY_PREFIX/bin", which is on PATH for the detect probe and the
--- launch.
---@param url string
---@param shell string
---@param after string|nil
---@return string
function M.script_install(url, shell, after)
  local q = core.sh_quote
  return table.concat({
    "ferry_s=$(mktemp) || exit 1",
    "if ! curl -fsSL " .. q(url) .. ' -o "$ferry_s"; then rm -f "$ferry_s"; echo ' .. q("download of " .. url
      .. " failed") .. "; exit 1; fi",
    shell .. ' "$ferry_s"; ferry_rc=$?; rm -f "$ferry_s"; [ "$ferry_rc" -eq 0 ] || exit "$ferry_rc"',
    after,
  }, "\n")
end

--- Shell lines linking the command `path` (shell text: "$HOME/.x/bin/x" is expanded in the sandbox) into
--- "$FERRY_PREFIX/bin" as `name`; they fail when `path` is not an executable file.
---@param path string
---@param name string
---@return string
function M.link_command(path, name)
  return '[ -x "' .. path .. '" ] || { echo "' .. path .. ' is missing after the install"; exit 1; }\n'
    .. 'mkdir -p "$FERRY_PREFIX/bin" && ln -sf "' .. path .. '" "$FERRY_PREFIX/bin/' .. name .. '"'
end

return M
