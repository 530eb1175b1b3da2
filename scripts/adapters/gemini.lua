--- gemini: Google Gemini CLI. Brings ~/.gemini (settings with MCP servers, GEMINI.md, extensions, commands,
--- the sign-in) into the sandbox, without its per-project scratch space. Launch: GEMINI_CLI_HOME replaces HOME
--- for gemini, which reads $GEMINI_CLI_HOME/.gemini: that is a link to the home asset. With MCP servers
--- configured, GEMINI_CLI_TRUST_WORKSPACE=true: gemini disables every MCP server in an untrusted folder.
local util = require "ferry.adapter_util"

local MAX_SETTINGS_BYTES = 4 * 1024 * 1024

-- Whether the settings file at `path` on the host configures an MCP server.
local function has_mcp(path)
  local doc = util.read_json(path, MAX_SETTINGS_BYTES)
  return doc ~= nil and type(doc.mcpServers) == "table" and next(doc.mcpServers) ~= nil
end

return {
  name = "gemini",
  detect = "gemini",
  npm = "@google/gemini-cli",
  -- A Gemini sign-in inside the workspace (a checked-out home dir) stays on the host.
  excludes = { "**/.gemini/oauth_creds.json", "**/.gemini/google_accounts.json" },
  --- home: ~/.gemini.
  assets = function(ctx)
    return util.existing {
      home = { dir = ctx.home .. "/.gemini", follow_symlinks = false, exclude = { "/tmp", "/history" } },
    }
  end,
  launch = function(ctx)
    local env = { GEMINI_CLI_HOME = ctx.adapter_dir }
    if has_mcp(ctx.home .. "/.gemini/settings.json") or has_mcp(ctx.workspace .. "/.gemini/settings.json") then
      env.GEMINI_CLI_TRUST_WORKSPACE = "true"
    end
    local home = ctx.adapter_dir .. "/home"
    return { env = env, dirs = { home }, links = { [ctx.adapter_dir .. "/.gemini"] = home }, command = { "gemini" } }
  end,
}
