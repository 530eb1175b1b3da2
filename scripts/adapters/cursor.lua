--- cursor: the Cursor agent CLI (`agent`). Installed with its official script, which puts the binary in
--- ~/.local/bin; the install links it into /usr/local/bin when it can so that the detect probe finds it.
local core = require "ferry.core"

local function nonempty(value)
  if type(value) == "string" and value:match("%S") then return value end
  return nil
end

local function is_dir(path)
  local st = core.fs_stat(path)
  return st ~= nil and st.kind == "dir"
end

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
  preserve = {},
  --- home: ~/.cursor limited to what the CLI reads (the editor keeps gigabytes of extensions beside it):
  --- mcp.json, cli-config.json, skills, rules, commands. config: $XDG_CONFIG_HOME/cursor (the CLI sign-in).
  assets = function(ctx)
    local home = ctx.home .. "/.cursor"
    local config = (nonempty(ctx.env("XDG_CONFIG_HOME")) or (ctx.home .. "/.config")) .. "/cursor"
    local assets = {}
    if is_dir(home) then
      assets.home = {
        dir = home,
        follow_symlinks = false,
        exclude = { "/*", "!/mcp.json", "!/cli-config.json", "!/skills", "!/rules", "!/commands" },
      }
    end
    if is_dir(config) then assets.config = { dir = config, follow_symlinks = false, exclude = {} } end
    return assets
  end,
  hooks = {},
}
