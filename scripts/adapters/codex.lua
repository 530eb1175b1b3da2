--- codex: OpenAI Codex CLI. Brings the Codex home (CODEX_HOME or ~/.codex) into the sandbox, and after the
--- run copies a refreshed auth.json back to the host: Codex refresh tokens are single-use, so the host copy
--- is dead once the sandbox has refreshed it.
local core = require "ferry.core"
local util = require "ferry.adapter_util"
local cjson = require("cjson").new()

local MAX_AUTH_BYTES = 1024 * 1024
local LOCK_WAIT_MS = 5000
local LOCK_STEP_MS = 50

local function codex_home(ctx)
  return util.env_dir(ctx, "CODEX_HOME", ctx.home .. "/.codex")
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
--- epoch, or nil when it is not one. Fractions are kept exactly: a double cannot hold epoch nanoseconds.
local function parse_timestamp(text)
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

local function later(a, b)
  return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2])
end

local function has_text(t, key)
  return util.nonempty(t[key]) ~= nil
end

--- What decides a copy-back: the ChatGPT account and when its tokens were last refreshed. nil for anything
--- else (not JSON, no tokens, an API-key credential, no usable timestamp): such a file is never written.
local function parse_auth(text)
  local ok, doc = pcall(cjson.decode, text)
  if not ok or type(doc) ~= "table" then return nil end
  if has_text(doc, "OPENAI_API_KEY") then return nil end
  local tokens = doc.tokens
  if type(tokens) ~= "table" then return nil end
  local account = util.nonempty(tokens.account_id)
  if not account then return nil end
  if not (has_text(tokens, "refresh_token") or has_text(tokens, "access_token") or has_text(tokens, "id_token")) then
    return nil
  end
  local refreshed = parse_timestamp(doc.last_refresh)
  if not refreshed then return nil end
  return { account = account, refreshed = refreshed }
end

local function read_local(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read(MAX_AUTH_BYTES + 1)
  f:close()
  if data == nil or #data > MAX_AUTH_BYTES then return nil end
  return data
end

-- The file a host auth.json really is: a symlinked auth.json (a shared credential) is updated in place of
-- its target so that every home linking to it sees the refresh.
local function resolve_links(path)
  for _ = 1, 16 do
    local st = core.fs_lstat(path)
    if not st or st.kind ~= "symlink" then return path end
    local target = core.fs_readlink(path)
    if not target then return nil end
    if target:sub(1, 1) ~= "/" then target = path:match("^(.*)/[^/]*$") .. "/" .. target end
    path = target
  end
  return nil
end

local function take_lock(path)
  local waited = 0
  while true do
    local lock, err, code = core.fs_lock(path)
    if lock or code ~= "EBUSY" or waited >= LOCK_WAIT_MS then return lock, err end
    require("ferry").sleep(LOCK_STEP_MS)
    waited = waited + LOCK_STEP_MS
  end
end

-- Why the sandbox copy must not replace the host copy, or nil when it should.
local function refusal(host, sandbox_auth)
  if not host then return "host auth.json is missing or not a ChatGPT sign-in" end
  if host.account ~= sandbox_auth.account then return "different account" end
  if not later(sandbox_auth.refreshed, host.refreshed) then return "host copy is as new" end
  return nil
end

-- Decide again and write under a lock, so two restores finishing together cannot put back the older
-- credential.
local function install_auth(ctx, host_auth, data, sandbox_auth)
  local reason = refusal(parse_auth(read_local(host_auth) or ""), sandbox_auth)
  if reason then return "kept", reason end
  local dir, name = host_auth:match("^(.*)/([^/]+)$")
  local lock, lock_err = take_lock(dir .. "/." .. name .. ".ferry-lock")
  if not lock then
    ctx.log("warn", "codex: auth.json not copied back: " .. tostring(lock_err))
    return "kept", "lock not taken"
  end
  local status = "kept"
  reason = refusal(parse_auth(read_local(host_auth) or ""), sandbox_auth)
  if not reason then
    local ok, err = core.fs_safe_write(dir, name, data, tonumber("600", 8))
    if ok then status = "copied" else reason = "write failed: " .. tostring(err) end
  end
  lock:unlock()
  return status, reason
end

--- After restore: copy <sandbox home>/auth.json over the host's auth.json when, and only when, it holds a
--- strictly newer refresh of the same account. Returns "copied" or "kept", and why it was kept.
local function copy_back_auth(ctx)
  local remote_home = ctx.asset_dirs and ctx.asset_dirs.home
  if not remote_home then return "kept", "no home asset" end
  local data, err, code = ctx.sb:read(remote_home .. "/auth.json", { max_bytes = MAX_AUTH_BYTES })
  if not data then
    if code ~= "ENOENT" then ctx.log("warn", "codex: sandbox auth.json not read: " .. tostring(err)) end
    return "kept", "sandbox auth.json not read"
  end
  local sandbox_auth = parse_auth(data)
  if not sandbox_auth then
    ctx.log("warn", "codex: sandbox auth.json is not a usable ChatGPT sign-in; host copy kept")
    return "kept", "sandbox auth.json unusable"
  end
  local host_auth = resolve_links(codex_home(ctx) .. "/auth.json")
  if not host_auth then return "kept", "host auth.json link unresolvable" end
  local status, reason = install_auth(ctx, host_auth, data, sandbox_auth)
  if status == "copied" then
    ctx.log("info", "codex: refreshed auth.json copied back to " .. host_auth)
  else
    ctx.log("debug", "codex: host auth.json kept (" .. reason .. ")")
  end
  return status, reason
end

return {
  name = "codex",
  detect = "codex",
  install = "npm install -g @openai/codex",
  -- A Codex sign-in inside the workspace (a checked-out home dir) stays on the host.
  excludes = { "**/.codex/auth.json" },
  preserve = {},
  --- home: the Codex home without scratch space, logs and past sessions (large, and private).
  assets = function(ctx)
    return util.existing {
      home = {
        dir = codex_home(ctx),
        follow_symlinks = false,
        exclude = { "/tmp", "/.tmp", "/log", "/sessions", "/archived_sessions", "/.auth.json.ferry-lock" },
      },
    }
  end,
  hooks = { after_restore = copy_back_auth },
}
