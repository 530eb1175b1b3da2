--- The verbs that list the policy files (README "CLI"): adapters, providers.
local registry = require "ferry.cli.registry"

local M = {}

-- Each adapter or provider (`kind`) and the file it is loaded from, names aligned in a column.
local function list_policies(kind)
  local policy = require "ferry.policy"
  local list, err = policy.list(kind)
  if not list then registry.fail(err) end
  local width = 0
  for _, e in ipairs(list) do width = math.max(width, #e.name) end
  for _, e in ipairs(list) do
    io.stdout:write(e.name, string.rep(" ", width - #e.name + 2), tostring(e.from), "\n")
  end
end

registry.define("adapters", [[
usage: ferry adapters
List each adapter and the file it is loaded from (FERRY_PATH, the user config dir, or built in).
]], { options = {}, max_args = 0 }, function() list_policies("adapters") end)

registry.define("providers", [[
usage: ferry providers
List each provider and the file it is loaded from (FERRY_PATH, the user config dir, or built in).
]], { options = {}, max_args = 0 }, function() list_policies("providers") end)

return M
