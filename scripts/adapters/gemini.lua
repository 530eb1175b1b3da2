--- gemini: Google Gemini CLI. Brings ~/.gemini (settings with MCP servers, GEMINI.md, extensions, commands,
--- the sign-in) into the sandbox, without its per-project scratch space.
local util = require "ferry.adapter_util"

return {
  name = "gemini",
  detect = "gemini",
  install = "npm install -g @google/gemini-cli",
  -- A Gemini sign-in inside the workspace (a checked-out home dir) stays on the host.
  excludes = { "**/.gemini/oauth_creds.json", "**/.gemini/google_accounts.json" },
  --- home: ~/.gemini; run the agent with HOME set so that <HOME>/.gemini is this dir, or link it there.
  assets = function(ctx)
    return util.existing {
      home = { dir = ctx.home .. "/.gemini", follow_symlinks = false, exclude = { "/tmp", "/history" } },
    }
  end,
}
