--- opencode: OpenCode (sst). Installed from npm (opencode-ai), or with its official script when the sandbox has
--- no npm (it puts the binary in ~/.opencode/bin, linked into the user prefix's bin dir). Launch: opencode
--- reads $XDG_CONFIG_HOME/opencode and $XDG_DATA_HOME/opencode; the four XDG dirs are the adapter's own,
--- with `opencode` in the config and data ones linked to the assets (MCP servers are the `mcp` key of
--- opencode.json there). OPENCODE_DISABLE_AUTOUPDATE=1: the sandbox's copy is ferry's to update.
local util = require "ferry.adapter_util"

return {
  name = "opencode",
  detect = "opencode",
  npm = "opencode-ai",
  install = util.script_install("https://opencode.ai/install", "bash",
    util.link_command("$HOME/.opencode/bin/opencode", "opencode")),
  -- An OpenCode sign-in inside the workspace (a checked-out home dir) stays on the host.
  excludes = { "**/.local/share/opencode/auth.json" },
  --- config: $XDG_CONFIG_HOME/opencode (opencode.json with MCP servers, agents, commands); data:
  --- $XDG_DATA_HOME/opencode (auth.json) without sessions, logs, snapshots.
  assets = function(ctx)
    local config_home = util.env_dir(ctx, "XDG_CONFIG_HOME", ctx.home .. "/.config")
    local data_home = util.env_dir(ctx, "XDG_DATA_HOME", ctx.home .. "/.local/share")
    return util.existing {
      config = { dir = config_home .. "/opencode", follow_symlinks = false, exclude = { "/node_modules" } },
      data = {
        dir = data_home .. "/opencode",
        follow_symlinks = false,
        exclude = { "/storage", "/log", "/snapshot", "/bin" },
      },
    }
  end,
  launch = function(ctx)
    local dir, xdg = ctx.adapter_dir, ctx.adapter_dir .. "/xdg"
    return {
      env = { XDG_CONFIG_HOME = xdg .. "/config", XDG_DATA_HOME = xdg .. "/data", XDG_CACHE_HOME = xdg .. "/cache",
        XDG_STATE_HOME = xdg .. "/state", OPENCODE_DISABLE_AUTOUPDATE = "1" },
      dirs = { dir .. "/config", dir .. "/data", xdg .. "/cache", xdg .. "/state" },
      links = { [xdg .. "/config/opencode"] = dir .. "/config", [xdg .. "/data/opencode"] = dir .. "/data" },
      command = { "opencode" },
    }
  end,
}
