--- gemini: Google Gemini CLI. Brings ~/.gemini (settings with MCP servers, GEMINI.md, extensions, commands,
--- the sign-in) into the sandbox, without its per-project scratch space.
local core = require "ferry.core"

local function is_dir(path)
  local st = core.fs_stat(path)
  return st ~= nil and st.kind == "dir"
end

return {
  name = "gemini",
  detect = "gemini",
  install = "npm install -g @google/gemini-cli",
  -- A Gemini sign-in inside the workspace (a checked-out home dir) stays on the host.
  excludes = { "**/.gemini/oauth_creds.json", "**/.gemini/google_accounts.json" },
  preserve = {},
  --- home: ~/.gemini; run the agent with HOME set so that <HOME>/.gemini is this dir, or link it there.
  assets = function(ctx)
    local home = ctx.home .. "/.gemini"
    if not is_dir(home) then return {} end
    return { home = { dir = home, follow_symlinks = false, exclude = { "/tmp", "/history" } } }
  end,
  hooks = {},
}
