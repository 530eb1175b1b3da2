--- pi: Mario Zechner's pi coding agent. Brings its agent dir (PI_CODING_AGENT_DIR or ~/.pi/agent: settings,
--- models, sign-in, skills, prompts, extensions) into the sandbox, without past sessions.
local util = require "ferry.adapter_util"

return {
  name = "pi",
  detect = "pi",
  install = "npm install -g @mariozechner/pi-coding-agent",
  -- A pi sign-in inside the workspace (a checked-out home dir) stays on the host.
  excludes = { "**/.pi/agent/auth.json" },
  --- agent: the agent dir; point PI_CODING_AGENT_DIR at it in the sandbox.
  assets = function(ctx)
    local dir = util.env_dir(ctx, "PI_CODING_AGENT_DIR", ctx.home .. "/.pi/agent")
    return util.existing { agent = { dir = dir, follow_symlinks = false, exclude = { "/sessions" } } }
  end,
}
