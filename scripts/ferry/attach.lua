--- ferry.attach: the sandbox one prepare or restore works on. A provider string is opened without a probe
-- command (the first real command fails as well on an unreachable sandbox, and only then does the probe
-- run, for its clearer message: M.diagnosed); an opened sandbox (ferry.open's result) is borrowed as it is.
-- Either way the commands run through it are counted and shown to the caller's on_exec.
local client = require "ferry.client"

local M = {}

--- The sandbox for one operation: sb, its provider string and a handle: handle.commands() (commands run so
--- far), handle.release() (closes a sandbox it opened; stops counting on a borrowed one). Or nil, message,
--- code when a provider string does not open.
---@param provider string|table  a provider string or an opened sandbox
---@param on_exec function|nil  called with (argv, script) for every command
---@param option string  names the option `provider` came from in a raised error ("ferry.prepare: opts.provider")
---@param session boolean|nil  ferry.open's opts.session for a provider string (nil: the provider's default)
---@return table|nil sb, string provider_or_err, table|string|nil handle_or_code
function M.open(provider, on_exec, option, session)
  local n = 0
  local function counted(argv, script)
    n = n + 1
    if on_exec then on_exec(argv, script) end
  end
  local handle = { commands = function() return n end }
  if type(provider) == "table" then
    handle.release = provider:watch(counted)
    return provider, provider.name, handle
  end
  if type(provider) ~= "string" or provider == "" then
    error(option .. " must be a provider string or an opened sandbox", 3)
  end
  local sb, err, code = client.open(provider, { on_exec = counted, probe = false, session = session })
  if not sb then return nil, err, code end
  handle.release = function() sb:close() end
  handle.diagnose = function()
    local probed, perr, pcode = client.open(provider, { on_exec = counted, session = false })
    if not probed then return perr, pcode end
    probed:close()
    return nil
  end
  return sb, sb.spec or provider, handle -- a bridge's spec carries its lease id: restore finds the sandbox
end

--- After a failed operation on a sandbox opened without a probe: the probe's message (after `prefix`) when
--- the sandbox is unreachable (what opening it with a probe would have said first), else the failure itself.
--- Returns nil, message, code and the rest of the arguments.
---@param handle table  M.open's
---@param prefix string  e.g. "prepare: "
---@param err string
---@param code string|nil
function M.diagnosed(handle, prefix, err, code, ...)
  if not handle.diagnose then return nil, err, code, ... end
  local why, wcode = handle.diagnose()
  if why then return nil, prefix .. why, wcode, ... end
  return nil, err, code, ...
end

return M
