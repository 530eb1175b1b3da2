--- claude: Anthropic Claude Code. Launch: CLAUDE_CONFIG_DIR is the adapter's dir in the sandbox, where the user's
--- skills arrive (<dir>/skills) and where, after the workspace sync, the user's MCP servers are written into
--- <dir>/.claude.json (the file Claude reads its user-scope servers from when CLAUDE_CONFIG_DIR is set). Project
--- MCP servers (.mcp.json) travel with the workspace; the sign-in never leaves the host.
local launch = require "ferry.launch"
local util = require "ferry.adapter_util"
local cjson = require("cjson").new()

local MAX_CONFIG_BYTES = 16 * 1024 * 1024

local function config_dir(ctx)
  return util.env_dir(ctx, "CLAUDE_CONFIG_DIR", ctx.home .. "/.claude")
end

-- ~/.claude.json holds the user's MCP servers; with CLAUDE_CONFIG_DIR set, it lives inside that dir.
local function settings_file(ctx)
  local dir = util.nonempty(ctx.env("CLAUDE_CONFIG_DIR"))
  if dir then return dir .. "/.claude.json" end
  return ctx.home .. "/.claude.json"
end

local function copy_servers(into, servers)
  if type(servers) ~= "table" then return end
  for name, server in pairs(servers) do
    if type(name) == "string" and type(server) == "table" then
      -- lua-cjson turns [] into {} on the way back out; an empty args list means the same as none.
      if type(server.args) == "table" and next(server.args) == nil then server.args = nil end
      into[name] = server
    end
  end
end

--- The user-scope MCP servers, overlaid with the local-scope ones Claude keeps for this workspace path.
local function mcp_servers(ctx)
  local path = settings_file(ctx)
  local doc, err = util.read_json(path, MAX_CONFIG_BYTES)
  if not doc then
    if err then ctx.log("warn", "claude: " .. err .. "; MCP servers not copied") end
    return nil
  end
  local servers = {}
  copy_servers(servers, doc.mcpServers)
  local project = type(doc.projects) == "table" and doc.projects[ctx.workspace]
  if type(project) == "table" then copy_servers(servers, project.mcpServers) end
  if next(servers) == nil then return nil end
  return servers
end

-- The sandbox's .claude.json text when it holds a JSON object (Claude keeps its own state there too), else
-- an empty object's.
local function sandbox_settings(ctx, path)
  local text = ctx.sb:read(path, { max_bytes = MAX_CONFIG_BYTES })
  local ok, doc = pcall(cjson.decode, text or "")
  if ok and type(doc) == "table" and pcall(util.json_set, text, "mcpServers", nil) then return text, doc end
  return "{}", {}
end

--- After the sync: the user's MCP servers into the `mcpServers` of <config dir>/.claude.json in the sandbox,
--- the rest of that file kept, mode 0600 (server definitions often carry API keys in env or headers);
--- servers of an earlier prepare the host no longer has are dropped. Returns the file's path, or nil when
--- there was nothing to write.
local function write_mcp_config(ctx)
  local servers = mcp_servers(ctx)
  local dir = launch.adapter_dir(ctx.remote_dir, "claude")
  local path = dir .. "/.claude.json"
  local text, doc = sandbox_settings(ctx, path)
  if not servers and doc.mcpServers == nil then return nil end
  text = util.json_set(text, "mcpServers", servers and cjson.encode(servers))
  local ok, err = ctx.sb:mkdir(dir)
  if ok then ok, err = ctx.sb:write(path, text, { mode = tonumber("600", 8) }) end
  if not ok then
    ctx.log("warn", "claude: MCP config not written to " .. path .. ": " .. tostring(err))
    return nil
  end
  local count = 0
  for _ in pairs(servers or {}) do count = count + 1 end
  ctx.log("info", string.format("claude: %d MCP server(s) written to %s", count, path))
  return path
end

return {
  name = "claude",
  detect = "claude",
  npm = "@anthropic-ai/claude-code",
  -- A Claude sign-in inside the workspace (a checked-out home or config dir) stays on the host.
  excludes = { "**/.claude/.credentials.json", ".claude.json" },
  --- skills: <config dir>/skills, symlinked skills resolved (skill folders are often links into a repo).
  assets = function(ctx)
    return util.existing { skills = { dir = config_dir(ctx) .. "/skills", follow_symlinks = true, exclude = {} } }
  end,
  hooks = { after_sync = write_mcp_config },
  launch = function(ctx)
    return { env = { CLAUDE_CONFIG_DIR = ctx.adapter_dir }, dirs = { ctx.adapter_dir }, command = { "claude" } }
  end,
}
