--- opencode: OpenCode (sst). Installed with its official script, which puts the binary in ~/.opencode/bin;
--- the install links it into a directory on PATH so that the detect probe finds it next time.
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
  preserve = {},
  --- config: $XDG_CONFIG_HOME/opencode (opencode.json with MCP servers, agents, commands; point
  --- OPENCODE_CONFIG_DIR at it); data: $XDG_DATA_HOME/opencode (auth.json) without sessions, logs, snapshots.
  assets = function(ctx)
    local config = (nonempty(ctx.env("XDG_CONFIG_HOME")) or (ctx.home .. "/.config")) .. "/opencode"
    local data = (nonempty(ctx.env("XDG_DATA_HOME")) or (ctx.home .. "/.local/share")) .. "/opencode"
    local assets = {}
    if is_dir(config) then
      assets.config = { dir = config, follow_symlinks = false, exclude = { "/node_modules" } }
    end
    if is_dir(data) then
      assets.data = { dir = data, follow_symlinks = false, exclude = { "/storage", "/log", "/snapshot", "/bin" } }
    end
    return assets
  end,
  hooks = {},
}
