--- codex: OpenAI Codex CLI. Brings the Codex home (CODEX_HOME or ~/.codex) into the sandbox. Codex refresh
--- tokens are single-use, so once the sandbox has refreshed its copy the host's is dead; but a hostile sandbox
--- must not plant its own tokens on the host either. So auth.json comes back only when the caller opts in
--- (restore's credentials = "copy-back", `ferry restore --copy-back-credentials`), and then only a genuine
--- refresh: the same account, refreshed after the host's copy and not in the future. Whatever happens is
--- reported in the restore result (`credentials`). Launch: CODEX_HOME is the home asset's dir (made when the host
--- has none: codex refuses a CODEX_HOME that does not exist).
local util = require "ferry.adapter_util"
local cjson = require("cjson").new()

local MAX_AUTH_BYTES = 1024 * 1024
local CLOCK_SKEW_S = 5 * 60 -- a refresh stamped later than the host clock plus this is forged

local function codex_home(ctx)
  return util.env_dir(ctx, "CODEX_HOME", ctx.home .. "/.codex")
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
  local refreshed = util.parse_time(doc.last_refresh)
  if not refreshed then return nil end
  return { account = account, refreshed = refreshed }
end

-- Why the sandbox copy must not replace the host copy, or nil when it should.
local function refusal(host, sandbox_auth)
  if not host then return "host auth.json is missing or not a ChatGPT sign-in" end
  if host.account ~= sandbox_auth.account then return "different account" end
  if not util.time_after(sandbox_auth.refreshed, host.refreshed) then return "not newer than the host's copy" end
  return nil
end

local OFF = "copy-back of credentials is off (ferry restore --copy-back-credentials to allow it)"

-- The sandbox's auth.json; nil when there is none (or no home asset); or false and why it was not read.
local function sandbox_auth_json(ctx)
  local remote_home = ctx.asset_dirs and ctx.asset_dirs.home
  if not remote_home then return nil, "no home asset" end
  local data, err, code = ctx.sb:read(remote_home .. "/auth.json", { max_bytes = MAX_AUTH_BYTES })
  if data then return data end
  if code == "ENOENT" then return nil, "no sandbox auth.json" end
  ctx.log("warn", "codex: sandbox auth.json not read: " .. tostring(err))
  return false, "sandbox auth.json not read: " .. tostring(err)
end

-- With copy-back on: copy `data` over the host file when it is a genuine refresh; "copied" or "refused".
local function copy_back(ctx, path, data)
  local sandbox_auth = parse_auth(data)
  if not sandbox_auth then
    ctx.log("warn", "codex: sandbox auth.json is not a usable ChatGPT sign-in; host copy kept")
    return "refused", "sandbox auth.json is not a usable ChatGPT sign-in"
  end
  if util.time_after(sandbox_auth.refreshed, { os.time() + CLOCK_SKEW_S, 0 }) then
    ctx.log("warn", "codex: sandbox auth.json claims a refresh in the future; host copy kept")
    return "refused", "refresh time is in the future"
  end
  -- Decided again under the lock, so two restores finishing together cannot put back the older credential.
  local status, detail, backup = util.copy_back(path, data, {
    max_bytes = MAX_AUTH_BYTES,
    mode = tonumber("600", 8),
    backup = true,
    refuse = function(host_data) return refusal(parse_auth(host_data or ""), sandbox_auth) end,
  })
  if status == "copied" then
    ctx.log("info", "codex: refreshed auth.json copied back to " .. detail
      .. (backup and " (previous copy kept as " .. backup .. ")" or ""))
    return "copied", backup and "previous copy kept as " .. backup or nil
  end
  if not status then
    ctx.log("warn", "codex: auth.json not copied back: " .. tostring(detail))
    return "refused", "not copied: " .. tostring(detail)
  end
  ctx.log("debug", "codex: host auth.json kept (" .. detail .. ")")
  return "refused", detail
end

--- After restore: when the sandbox's auth.json differs from the host's, copy it back if the caller opted in
--- (ctx.copy_back_credentials) and it is a genuine refresh, else keep the host's. Returns the action reported
--- in the result ("copied", "refused", "skipped"), or "none" when there was nothing to decide, and why.
local function after_restore(ctx)
  local data, why = sandbox_auth_json(ctx)
  if data == nil then return "none", why end
  local path = codex_home(ctx) .. "/auth.json"
  local action, reason
  if data and data == util.read_file(util.link_target(path) or path, MAX_AUTH_BYTES) then
    return "none", "same as the host's"
  elseif not ctx.copy_back_credentials then
    action, reason = "skipped", OFF
  elseif not data then
    action, reason = "refused", why
  else
    action, reason = copy_back(ctx, path, data)
  end
  util.report_credential(ctx, path, action, reason)
  return action, reason
end

return {
  name = "codex",
  detect = "codex",
  npm = "@openai/codex",
  -- A Codex sign-in inside the workspace (a checked-out home dir) stays on the host.
  excludes = { "**/.codex/auth.json", "**/.codex/auth.json.ferry-backup-*" },
  --- home: the Codex home without scratch space, logs and past sessions (large, and private).
  assets = function(ctx)
    return util.existing {
      home = {
        dir = codex_home(ctx),
        follow_symlinks = false,
        -- the copy-back's lock and the backups of replaced sign-ins stay on the host
        exclude = { "/tmp", "/.tmp", "/log", "/sessions", "/archived_sessions", "/.auth.json.ferry-lock",
          "/auth.json.ferry-backup-*" },
      },
    }
  end,
  hooks = { after_restore = after_restore },
  launch = function(ctx)
    local home = ctx.adapter_dir .. "/home"
    return { env = { CODEX_HOME = home }, dirs = { home }, command = { "codex" } }
  end,
}
