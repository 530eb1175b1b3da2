--- The verbs that list the policy files (README "CLI"): adapters, providers.
local printable = require "ferry.printable"
local registry = require "ferry.cli.registry"

local M = {}

-- A provider's entry after its name: its usage string, then (indented) its help line and the file it is loaded
-- from. A file that does not load says so (the problem is --check's to list in full).
local function provider_lines(e, indent)
  local mod, err = require("ferry.policy").load("providers", e.name)
  local usage, help
  if mod then
    usage = type(mod.usage) == "string" and mod.usage or e.name
    help = type(mod.help) == "string" and mod.help or nil
  else
    usage, help = e.name, "does not load: " .. tostring(err)
  end
  local lines = { usage }
  if help then lines[#lines + 1] = indent .. help end
  lines[#lines + 1] = indent .. "from " .. tostring(e.from)
  return printable.text(table.concat(lines, "\n")) .. "\n"
end

-- `ferry adapters|providers`: each name and the file that wins; with --check, load every file and print each
-- problem ("FILE:LINE: message"), then "N <kind> checked, M with problems"; exit 1 when any.
local function list_policies(kind, o)
  local policy = require "ferry.policy"
  if o.check then
    local results, bad = policy.check(kind), 0
    for _, e in ipairs(results) do
      if #e.problems > 0 then bad = bad + 1 end
      for _, problem in ipairs(e.problems) do io.stdout:write(problem, "\n") end
    end
    io.stdout:write(string.format("%d %s checked, %d with problems\n", #results,
      #results == 1 and kind:sub(1, -2) or kind, bad))
    return bad > 0 and registry.EXIT.failed or registry.EXIT.ok
  end
  local list, err = policy.list(kind)
  if not list then registry.fail(err) end
  local width = 0
  for _, e in ipairs(list) do width = math.max(width, #e.name) end
  for _, e in ipairs(list) do
    local pad = string.rep(" ", width - #e.name + 2)
    if kind == "providers" then
      io.stdout:write(e.name, pad, provider_lines(e, string.rep(" ", width + 2)))
    else
      io.stdout:write(e.name, pad, tostring(e.from), "\n")
    end
  end
end

local CHECK = { names = { "--check" }, key = "check" }

registry.define("adapters", [[
usage: ferry adapters [--check]
List each adapter and the file it is loaded from (FERRY_PATH, the user config dir, or built in).
  --check   load every adapter and print each problem as FILE:LINE: message (a load error, an unknown field,
            a field of the wrong type), then a count; exit 1 when any adapter has a problem
]], { options = { CHECK }, max_args = 0 }, function(o) return list_policies("adapters", o) end)

registry.define("providers", [[
usage: ferry providers [--check]
List each provider: its name and usage (the provider string to give -p), what it does, and the file it is
loaded from (FERRY_PATH, the user config dir, or built in).
  --check   load every provider and print each problem as FILE:LINE: message (a load error, an unknown field,
            a field of the wrong type), then a count; exit 1 when any provider has a problem
]], { options = { CHECK }, max_args = 0 }, function(o) return list_policies("providers", o) end)

return M
