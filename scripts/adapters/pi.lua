--- pi: Mario Zechner's pi coding agent. Brings its agent dir (PI_CODING_AGENT_DIR or ~/.pi/agent: settings,
--- models, sign-in, skills, prompts, extensions) into the sandbox, without past sessions.
local core = require "ferry.core"

local function nonempty(value)
  if type(value) == "string" and value:match("%S") then return value end
  return nil
end

local function is_dir(path)
  local st = core.fs_stat(path)
  return st ~= nil and st.kind == "dir"
end

return {
  name = "pi",
  detect = "pi",
  install = "npm install -g @mariozechner/pi-coding-agent",
  -- A pi sign-in inside the workspace (a checked-out home dir) stays on the host.
  excludes = { "**/.pi/agent/auth.json" },
  preserve = {},
  --- agent: the agent dir; point PI_CODING_AGENT_DIR at it in the sandbox.
  assets = function(ctx)
    local dir = nonempty(ctx.env("PI_CODING_AGENT_DIR")) or (ctx.home .. "/.pi/agent")
    if not is_dir(dir) then return {} end
    return { agent = { dir = dir, follow_symlinks = false, exclude = { "/sessions" } } }
  end,
  hooks = {},
}
