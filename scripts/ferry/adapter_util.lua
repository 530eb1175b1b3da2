--- ferry.adapter_util: what adapters share: reading a dir from the environment and keeping only the assets
-- whose dir exists on the host (a user without, say, ~/.gemini gets no asset rather than an error).
local core = require "ferry.core"

local M = {}

--- `value` when it is a string holding more than blanks, else nil (an unset or blank variable).
---@param value any
---@return string|nil
function M.nonempty(value)
  if type(value) == "string" and value:match("%S") then return value end
  return nil
end

--- The dir named by the environment variable `name` when it is set and not blank, else `default`.
---@param ctx table  the adapter context (ctx.env)
---@param name string
---@param default string
---@return string
function M.env_dir(ctx, name, default)
  return M.nonempty(ctx.env(name)) or default
end

--- Whether `path` is a directory on the host (a symlink to one counts).
---@param path string
---@return boolean
function M.is_dir(path)
  local st = core.fs_stat(path)
  return st ~= nil and st.kind == "dir"
end

--- The assets (key -> {dir, follow_symlinks, exclude}) whose dir exists on the host; the others are left out.
---@param assets table
---@return table
function M.existing(assets)
  local out = {}
  for key, asset in pairs(assets) do
    if M.is_dir(asset.dir) then out[key] = asset end
  end
  return out
end

return M
