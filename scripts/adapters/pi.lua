--- pi: Mario Zechner's pi coding agent. Brings its agent dir (PI_CODING_AGENT_DIR or ~/.pi/agent: settings,
--- models, sign-in, skills, prompts, extensions) into the sandbox, without past sessions. Launch:
--- PI_CODING_AGENT_DIR is that dir, and PI_OFFLINE=1 (pi would download fd and rg from GitHub at start).
local util = require "ferry.adapter_util"

return {
  name = "pi",
  detect = "pi",
  npm = "@mariozechner/pi-coding-agent",
  -- A pi sign-in inside the workspace (a checked-out home dir) stays on the host.
  excludes = { "**/.pi/agent/auth.json" },
  --- agent: the agent dir.
  assets = function(ctx)
    local dir = util.env_dir(ctx, "PI_CODING_AGENT_DIR", ctx.home .. "/.pi/agent")
    return util.existing { agent = { dir = dir, follow_symlinks = false, exclude = { "/sessions" } } }
  end,
  launch = function(ctx)
    local dir = ctx.adapter_dir .. "/agent"
    return { env = { PI_CODING_AGENT_DIR = dir, PI_OFFLINE = "1" }, dirs = { dir }, command = { "pi" } }
  end,
}
