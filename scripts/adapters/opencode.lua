--- opencode: OpenCode (sst). Installed with its official script, which puts the binary in ~/.opencode/bin;
--- the install links it into a directory on PATH so that the detect probe finds it next time.
local util = require "ferry.adapter_util"

local INSTALL = table.concat({
  "curl -fsSL https://opencode.ai/install | bash",
  'bin="$HOME/.opencode/bin/opencode"',
  '{ [ ! -x "$bin" ] || ln -sf "$bin" /usr/local/bin/opencode 2>/dev/null'
    .. ' || { mkdir -p "$HOME/.local/bin" && ln -sf "$bin" "$HOME/.local/bin/opencode"; }; }',
}, " && ")

return {
  name = "opencode",
  detect = "opencode",
  install = INSTALL,
  -- An OpenCode sign-in inside the workspace (a checked-out home dir) stays on the host.
  excludes = { "**/.local/share/opencode/auth.json" },
  --- config: $XDG_CONFIG_HOME/opencode (opencode.json with MCP servers, agents, commands; point
  --- OPENCODE_CONFIG_DIR at it); data: $XDG_DATA_HOME/opencode (auth.json) without sessions, logs, snapshots.
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
}
