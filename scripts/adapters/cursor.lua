--- cursor: the Cursor agent CLI (`agent`). Installed with its official script, which puts the binary in
--- ~/.local/bin; the install links it into /usr/local/bin when it can so that the detect probe finds it.
local util = require "ferry.adapter_util"

local INSTALL = table.concat({
  "curl https://cursor.com/install -fsS | bash",
  '{ [ ! -x "$HOME/.local/bin/agent" ] || ln -sf "$HOME/.local/bin/agent" /usr/local/bin/agent 2>/dev/null'
    .. " || true; }",
}, " && ")

return {
  name = "cursor",
  detect = "agent",
  install = INSTALL,
  excludes = { "**/.config/cursor/auth.json" },
  --- home: ~/.cursor limited to what the CLI reads (the editor keeps gigabytes of extensions beside it):
  --- mcp.json, cli-config.json, skills, rules, commands. config: $XDG_CONFIG_HOME/cursor (the CLI sign-in).
  assets = function(ctx)
    local config_home = util.env_dir(ctx, "XDG_CONFIG_HOME", ctx.home .. "/.config")
    return util.existing {
      home = {
        dir = ctx.home .. "/.cursor",
        follow_symlinks = false,
        exclude = { "/*", "!/mcp.json", "!/cli-config.json", "!/skills", "!/rules", "!/commands" },
      },
      config = { dir = config_home .. "/cursor", follow_symlinks = false, exclude = {} },
    }
  end,
}
