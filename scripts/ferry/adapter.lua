--- ferry.adapter: an adapter as prepare and restore use it: loaded by name through ferry.policy, the
-- context its hooks and its assets function receive, and a hook run with its failure as a message.
-- (Helpers for the authors of adapter files are in ferry.adapter_util.)
local core = require "ferry.core"
local policy = require "ferry.policy"
local progress_mod = require "ferry.progress"
local schema = require "ferry.schema"

local M = {}

--- The adapter used when none is named.
M.DEFAULT = "shell"

--- The adapter table: the adapter file of that name (default M.DEFAULT), checked by ferry.policy against
--- the adapter schema; or `adapter` itself when it is a table, checked the same way (its defaults filled in).
---@param adapter string|table|nil
---@return table|nil adapter, string|nil err, string|nil code
function M.load(adapter)
  if type(adapter) ~= "table" then return policy.load("adapters", adapter or M.DEFAULT) end
  local problems = schema.validate(schema.ADAPTER, adapter)
  if #problems > 0 then
    return nil, "adapter " .. tostring(adapter.name or "(table)") .. ": " .. problems[1].message, "EINVAL"
  end
  return schema.apply_defaults(schema.ADAPTER, adapter, "custom")
end

--- The context of the adapter's hooks and assets function: `fields` (sb, workspace, remote_dir, ...) plus
--- env, home and log(level, message). Logged messages are redacted and reported to `progress` (and to
--- ferry.log for warnings and errors when nothing reports progress).
---@param fields table
---@param redact_fn function
---@param progress table  a ferry.progress reporter
---@return table
function M.context(fields, redact_fn, progress)
  local ctx = {
    env = os.getenv,
    home = os.getenv("HOME") or "",
    log = function(level, message)
      message = redact_fn(tostring(message))
      progress:event({ level = level, message = message })
      if level == "warn" or level == "error" then
        if progress == progress_mod.QUIET then core.log(level, message) end
      end
    end,
  }
  for k, v in pairs(fields) do ctx[k] = v end
  return ctx
end

--- Run the adapter's hook `name` (none is fine) with `ctx`.
---@param adapter table
---@param name string  before_sync, after_sync, before_restore, after_restore
---@param ctx table
---@return true|nil ok, string|nil err  "adapter <name> <hook> hook failed: <error>"
function M.run_hook(adapter, name, ctx)
  local hook = adapter.hooks and adapter.hooks[name]
  if not hook then return true end
  local ok, err = pcall(hook, ctx)
  if not ok then return nil, string.format("adapter %s %s hook failed: %s", adapter.name, name, tostring(err)) end
  return true
end

return M
