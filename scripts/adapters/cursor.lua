--- cursor: the Cursor agent CLI (`agent`). Installed with its official script (there is no npm package), which
--- puts the command in ~/.local/bin: it is linked into the user prefix's bin dir, which is on PATH for the
--- detect probe and the launch. Launch (from Cursor's documentation, not tried here): CURSOR_CONFIG_DIR is
--- the home asset (cli-config.json, mcp.json, skills), XDG_CONFIG_HOME holds `cursor` linked to the config
--- asset (the CLI sign-in).
local util = require "ferry.adapter_util"

return {
  name = "cursor",
  detect = "agent",
  install = util.script_install("https://cursor.com/install", "bash",
    util.link_command("$HOME/.local/bin/agent", "agent")),
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
  launch = function(ctx)
    local dir = ctx.adapter_dir
    return {
      env = { CURSOR_CONFIG_DIR = dir .. "/home", XDG_CONFIG_HOME = dir .. "/xdg" },
      dirs = { dir .. "/home", dir .. "/config" },
      links = { [dir .. "/xdg/cursor"] = dir .. "/config" },
      command = { "agent" },
    }
  end,
}
