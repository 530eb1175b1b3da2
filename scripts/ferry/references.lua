--- ferry.references: other projects staged read-only for the agent to consult (prepare's `references =
-- {NAME = DIR}`, `--reference NAME=DIR`): each goes to <remote>/.ferry-runtime/references/NAME, its files
-- and dirs chmod a-w, in one command per reference. They live in the runtime dir, so restore never brings
-- them back. What travels: the dir within ferry's default excludes and never a `.git`; a git work tree's
-- top level sends what git shows (tracked plus untracked files that are not ignored). A reference that
-- cannot be read or sent is a warning, never a failed prepare. Each prepare stages exactly the references
-- it names: the sync command clears the references dir first (M.clear_lines).
local core = require "ferry.core"
local excludes = require "ferry.excludes"
local git = require "ferry.git"
local remote = require "ferry.remote"
local snapshot = require "ferry.snapshot"
local util = require "ferry.util"

local M = {}

--- The references dir, relative to the remote dir.
M.DIR = remote.RUNTIME_DIR .. "/references"

local q = core.sh_quote

local function check_name(name)
  return type(name) == "string" and name:match("^[%w_.%-]+$") ~= nil and name ~= "." and name ~= ".."
end

--- Check opts.references: {NAME = DIR}. Returns a sorted list of {name, dir (absolute)}, or nil, message,
--- "EINVAL" for a malformed table (a reference that cannot be read is only a warning, later).
---@param refs table|nil
---@return table|nil list, string|nil err, string|nil code
function M.check(refs)
  if refs == nil then return {} end
  if type(refs) ~= "table" then return nil, "prepare: references must be a table {NAME = DIR}", "EINVAL" end
  local list = {}
  for name, dir in pairs(refs) do
    if not check_name(name) then
      return nil, string.format("prepare: reference name %q must be letters, digits, '_', '.' or '-'",
        tostring(name)), "EINVAL"
    end
    if type(dir) ~= "string" or dir == "" then
      return nil, "prepare: reference " .. name .. ": expected a directory path", "EINVAL"
    end
    list[#list + 1] = { name = name, dir = util.absolute(dir) }
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  return list
end

-- The walk's matcher of a reference: ferry's defaults and `.git`, and what git shows at a work tree's top.
local function matcher_for(real)
  local base = excludes.compile(excludes.combine(excludes.DEFAULT, git.EXCLUDES))
  local info = git.detect(real)
  if not info or info.prefix ~= "" then return base end
  local files = git.files(info)
  return files and git.matcher(files, base) or base
end

--- Walk the references on the host (before the sandbox changes). Each item gets real (the resolved dir),
--- names (the walk) and estimate, or a warning in `warnings` and no names.
---@param list table  M.check's
---@param warnings string[]
function M.plan(list, warnings)
  for _, r in ipairs(list) do
    local real, rerr = snapshot.realpath(r.dir)
    local st = real and core.fs_stat(real)
    local why = rerr or (not st and "no such directory") or (st.kind ~= "dir" and "not a directory") or nil
    if not why then
      local snap, names = snapshot.take(real, { matcher = matcher_for(real), hash = false })
      if snap then
        r.real, r.names, r.estimate = real, names, snapshot.tar_estimate(snap)
      else
        why = names
      end
    end
    if why then warnings[#warnings + 1] = "reference " .. r.name .. ": " .. r.dir .. ": " .. why .. "; not staged" end
  end
end

--- Shell lines (with "$ferry_r" the remote dir) that remove the staged references.
---@return string
function M.clear_lines()
  local dir = '"$ferry_r/' .. M.DIR .. '"'
  return "if [ -d " .. dir .. " ]; then chmod -R u+w " .. dir .. " 2>/dev/null; rm -rf " .. dir .. " || exit 1; fi"
end

local function send_one(sb, r, remote_dir)
  local dest = remote_dir .. "/" .. M.DIR .. "/" .. r.name
  local writer
  if #r.names > 0 then
    local err
    writer, err = core.tar_writer(r.real, r.names, {})
    if not writer then return nil, err end
  end
  local script = table.concat({
    "ferry_d=" .. q(dest),
    'if [ -d "$ferry_d" ]; then chmod -R u+w "$ferry_d" 2>/dev/null; rm -rf "$ferry_d" || exit 1; fi',
    'mkdir -p "$ferry_d" || exit 1',
    writer and 'tar -x -f - -C "$ferry_d" || exit 1' or ":",
    'chmod -R a-w "$ferry_d"',
  }, "\n")
  local res, perr = sb:pipe_in(script, writer and function() return writer:read() end or "",
    { what = "reference " .. r.name })
  local bytes = writer and writer:bytes() or 0
  if writer then writer:close() end
  if not res then return nil, perr end
  if res.code ~= 0 or res.timed_out then return nil, remote.failure("staging it", res) end
  return bytes, dest
end

--- Send the walked references, one command each. Returns the bytes sent and {NAME = remote dir} of those
--- staged; a failure is a warning in `warnings`.
---@param sb table
---@param list table  M.plan'ed
---@param remote_dir string
---@param progress table
---@param warnings string[]
---@return integer bytes, table dirs
function M.send(sb, list, remote_dir, progress, warnings)
  local total, dirs = 0, {}
  for _, r in ipairs(list) do
    if r.names then
      progress:phase("assets", r.estimate) -- staged like assets
      local bytes, dest = send_one(sb, r, remote_dir)
      if bytes then
        total, dirs[r.name] = total + bytes, dest
      else
        warnings[#warnings + 1] = "reference " .. r.name .. ": " .. tostring(dest) .. "; not staged"
      end
    end
  end
  return total, dirs
end

return M
