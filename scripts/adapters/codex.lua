--- codex: OpenAI Codex CLI. Brings the Codex home (CODEX_HOME or ~/.codex) into the sandbox, and after the
--- run copies a refreshed auth.json back to the host: Codex refresh tokens are single-use, so the host copy
--- is dead once the sandbox has refreshed it.
local util = require "ferry.adapter_util"
local cjson = require("cjson").new()

local MAX_AUTH_BYTES = 1024 * 1024

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
  if not util.time_after(sandbox_auth.refreshed, host.refreshed) then return "host copy is as new" end
  return nil
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
  -- Decided again under the lock, so two restores finishing together cannot put back the older credential.
  local status, detail = util.copy_back(codex_home(ctx) .. "/auth.json", data, {
    max_bytes = MAX_AUTH_BYTES,
    mode = tonumber("600", 8),
    refuse = function(host_data) return refusal(parse_auth(host_data or ""), sandbox_auth) end,
  })
  if status == "copied" then
    ctx.log("info", "codex: refreshed auth.json copied back to " .. detail)
    return "copied"
  end
  if not status then
    ctx.log("warn", "codex: auth.json not copied back: " .. tostring(detail))
    return "kept", "not copied: " .. tostring(detail)
  end
  ctx.log("debug", "codex: host auth.json kept (" .. detail .. ")")
  return "kept", detail
end

return {
  name = "codex",
  detect = "codex",
  install = "npm install -g @openai/codex",
  -- A Codex sign-in inside the workspace (a checked-out home dir) stays on the host.
  excludes = { "**/.codex/auth.json" },
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
