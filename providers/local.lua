--- Provider `local`: commands run on this host with `sh -c`; remote paths are host paths.
local M = {}

M.usage = "local"
M.help = "commands run on this host; remote paths are host paths (no isolation)"

local Local = {}
Local.__index = Local

--- The argv that runs `script` with sh.
---@param script string
---@return string[]
function Local.command(_, script)
  return { "sh", "-c", script }
end

function Local.close() end

--- Open the provider. `arg` must be empty: `local` takes no argument.
---@param arg string|nil
---@return table|nil provider, string|nil err, string|nil code
function M.open(arg)
  if arg ~= nil and arg ~= "" then
    return nil, "local:" .. arg .. ": the local provider takes no argument (use -p local)", "EINVAL"
  end
  return setmetatable({
    name = "local",
    caps = { stdin = true, binary = true },
    default_remote_dir = nil,
    scratch_dir = os.getenv("TMPDIR") or "/tmp",
  }, Local)
end

return M
