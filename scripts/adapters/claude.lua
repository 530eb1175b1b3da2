--- claude: Anthropic Claude Code. Brings the user's skills into the sandbox and, after the workspace sync,
--- writes the user's MCP servers to <runtime>/mcp-config/mcp.json for `claude --mcp-config`. Project MCP
--- servers (.mcp.json) travel with the workspace; the sign-in never leaves the host.
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

-- The JSON object in a host file: nil when the file is missing; nil and why when it is unusable.
local function read_json(path)
  local text, err, code = util.read_file(path, MAX_CONFIG_BYTES)
  if not text then return nil, code ~= "ENOENT" and err or nil end
  local ok, doc = pcall(cjson.decode, text)
  if not ok or type(doc) ~= "table" then return nil, path .. ": not a JSON object" end
  return doc
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
  local doc, err = read_json(path)
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

local function write_mcp_config(ctx)
  local servers = mcp_servers(ctx)
  if not servers then return nil end
  local dir = ctx.runtime_dir .. "/mcp-config"
  local path = dir .. "/mcp.json"
  local ok, err = ctx.sb:mkdir(dir)
  if ok then
    -- 0600: server definitions often carry API keys in env or headers.
    ok, err = ctx.sb:write(path, cjson.encode({ mcpServers = servers }), { mode = tonumber("600", 8) })
  end
  if not ok then
    ctx.log("warn", "claude: MCP config not written to " .. path .. ": " .. tostring(err))
    return nil
  end
  if type(ctx.asset_dirs) == "table" then ctx.asset_dirs["mcp-config"] = dir end
  local count = 0
  for _ in pairs(servers) do count = count + 1 end
  ctx.log("info", string.format("claude: %d MCP server(s) written to %s", count, path))
  return path
end

return {
  name = "claude",
  detect = "claude",
  install = "npm install -g @anthropic-ai/claude-code",
  -- A Claude sign-in inside the workspace (a checked-out home or config dir) stays on the host.
  excludes = { "**/.claude/.credentials.json", ".claude.json" },
  --- skills: <config dir>/skills, symlinked skills resolved (skill folders are often links into a repo).
  assets = function(ctx)
    return util.existing { skills = { dir = config_dir(ctx) .. "/skills", follow_symlinks = true, exclude = {} } }
  end,
  hooks = { after_sync = write_mcp_config },
}
