--- ferry.assets: the host directories prepare copies to <remote>/.ferry-runtime/<adapter>/<key>: collected
-- from the adapter and the caller (M.collect), walked and grouped on the host before anything in the sandbox
-- changes (M.plan), then sent as one tar stream per group (M.send; one in the usual case).
local core = require "ferry.core"
local excludes = require "ferry.excludes"
local snapshot = require "ferry.snapshot"
local remote = require "ferry.remote"
local transfer = require "ferry.transfer"
local util = require "ferry.util"

local M = {}

local q = core.sh_quote

local function check_key(key)
  return type(key) == "string" and key:match("^[%w_.%-]+$") ~= nil and key ~= "." and key ~= ".."
end

--- The asset table: key -> {dir (absolute), follow_symlinks, exclude}; from the adapter's assets(ctx), then
--- `extra` (opts.assets: key -> dir | {dir, follow_symlinks, exclude}).
---@param adapter table
---@param ctx table  the hook context (ferry.adapter.context)
---@param extra table|nil
---@return table|nil assets, string|nil err, string|nil code
function M.collect(adapter, ctx, extra)
  local assets = {}
  local function add(key, spec, from)
    if type(spec) == "string" then spec = { dir = spec } end
    if not check_key(key) then
      return nil, string.format("prepare: asset key %q (%s) must be letters, digits, '_', '.' or '-'", tostring(key),
        from), "EINVAL"
    end
    if type(spec) ~= "table" or type(spec.dir) ~= "string" or spec.dir == "" then
      return nil, "prepare: asset " .. key .. " (" .. from .. "): expected a dir", "EINVAL"
    end
    assets[key] = { dir = util.absolute(spec.dir), follow_symlinks = spec.follow_symlinks and true or false,
      exclude = spec.exclude or {} }
    return true
  end
  if adapter.assets then
    local ok, list = pcall(adapter.assets, ctx)
    if not ok then return nil, "prepare: adapter " .. adapter.name .. " assets failed: " .. tostring(list), "EINVAL" end
    for key, spec in pairs(list or {}) do
      local added, err, code = add(key, spec, "adapter " .. adapter.name)
      if not added then return nil, err, code end
    end
  end
  for key, spec in pairs(extra or {}) do
    local added, err, code = add(key, spec, "opts.assets")
    if not added then return nil, err, code end
  end
  return assets
end

-- Is one real path inside (or the same as) the other?
local function nested(a, b)
  return a == b or b:sub(1, #a + 1) == a .. "/" or a:sub(1, #b + 1) == b .. "/"
end

-- Group the assets so that one tar stream carries each group: same follow_symlinks setting, no asset dir
-- inside another of its group. Names in a stream are the real host paths below "/" (O_NOFOLLOW walks
-- from the root need a path without symlinks); the sandbox extracts them into a staging dir and moves each
-- asset dir into place. A missing asset dir is a warning (an empty dir is made).
local function group(assets, keys, warnings)
  local groups = {}
  for _, key in ipairs(keys) do
    local a = assets[key]
    local real, rerr = snapshot.realpath(a.dir)
    local st = real and core.fs_stat(real)
    if not st or st.kind ~= "dir" then
      warnings[#warnings + 1] = "asset " .. key .. ": " .. a.dir .. (rerr and (": " .. rerr) or " is not a directory")
        .. "; an empty dir is made"
      real = nil
    elseif real == "/" then
      return nil, "prepare: asset " .. key .. ": the root directory cannot be an asset", "EINVAL"
    end
    local home
    for _, g in ipairs(groups) do
      if g.follow == a.follow_symlinks then
        local clash = false
        for _, m in ipairs(g.members) do
          if real and m.real and nested(real, m.real) then clash = true end
        end
        if not clash then home = g break end
      end
    end
    if not home then
      home = { follow = a.follow_symlinks, members = {} }
      groups[#groups + 1] = home
    end
    home.members[#home.members + 1] = { key = key, real = real, asset = a }
  end
  return groups
end

-- The names a group's stream carries (below "/") and its estimated size.
local function group_names(g)
  local names, estimate = {}, 0
  for _, m in ipairs(g.members) do
    if m.real then
      local matcher = excludes.compile(excludes.combine({ "._*" }, m.asset.exclude))
      local snap, list = snapshot.take(m.real, { matcher = matcher, hash = false, follow_symlinks = g.follow })
      if not snap then return nil, "prepare: asset " .. m.key .. ": " .. list, "EIO" end
      local base = m.real:sub(2)
      names[#names + 1] = base
      for _, rel in ipairs(list) do names[#names + 1] = base .. "/" .. rel end
      estimate = estimate + snapshot.tar_estimate(snap)
    end
  end
  return names, estimate
end

--- Walk and group the assets on the host: {groups (each with names, its stream's entries), total (the
--- estimated bytes), warnings (missing asset dirs)} or nil, message, code. Nothing is sent.
---@param assets table  M.collect's
---@return table|nil plan, string|nil err, string|nil code
function M.plan(assets)
  local keys = {}
  for key in pairs(assets) do keys[#keys + 1] = key end
  table.sort(keys)
  local plan = { groups = {}, total = 0, warnings = {} }
  if #keys == 0 then return plan end
  local groups, gerr, gcode = group(assets, keys, plan.warnings)
  if not groups then return nil, gerr, gcode end
  for _, g in ipairs(groups) do
    local names, estimate, code = group_names(g)
    if not names then return nil, estimate, code end
    g.names = names
    plan.total = plan.total + estimate
  end
  plan.groups = groups
  return plan
end

-- The command extracting a group's stream into a staging dir and moving each asset dir into place (an
-- empty dir for a missing one).
local function group_script(g, adapter_dir)
  local lines = {
    "ferry_a=" .. q(adapter_dir) .. ' ferry_s="$ferry_a/.staging.$$"',
    'rm -rf "$ferry_s" && mkdir -p "$ferry_s" && tar -x -f - -C "$ferry_s" || exit 1',
  }
  for _, m in ipairs(g.members) do
    local dest = '"$ferry_a"/' .. q(m.key)
    lines[#lines + 1] = "rm -rf " .. dest .. " || exit 1"
    if m.real then
      lines[#lines + 1] = 'mv "$ferry_s"' .. q(m.real) .. " " .. dest .. " || exit 1"
    else
      lines[#lines + 1] = "mkdir -p " .. dest .. " || exit 1"
    end
  end
  lines[#lines + 1] = 'rm -rf "$ferry_s"'
  return table.concat(lines, "\n")
end

-- Send one group: its tar writer is made (and its failure reported) before the command runs.
local function send_group(sb, g, adapter_dir, progress, sent, warnings)
  local writer, werr, wcode = core.tar_writer("/", g.names, { follow_symlinks = g.follow })
  if not writer then return nil, "prepare: assets: " .. werr, wcode end
  local stream, base = transfer.guarded(function() return writer:read() end), sent.n
  local res, err, code = sb:pipe_in(group_script(g, adapter_dir), stream.read, {
    what = "assets to " .. adapter_dir,
    on_progress = function(n)
      progress:advance(base + n - sent.n)
      sent.n = base + n
    end,
  })
  for _, w in ipairs(writer:warnings()) do warnings[#warnings + 1] = w end
  local bytes = writer:bytes()
  writer:close()
  if stream.failure then return nil, "prepare: assets: " .. stream.failure, "EIO" end
  if res and (res.code ~= 0 or res.timed_out) then
    err, code, res = remote.failure("assets to " .. adapter_dir, res), "EIO", nil
  end
  if not res then return nil, "prepare: " .. err, code end
  return bytes
end

--- Send the planned assets to <runtime_dir>/<adapter_name>/<key>: one command per group. The plan's
--- warnings and the tar writers' go to `warnings`. Returns the archive bytes sent or nil, message, code.
---@param sb table
---@param adapter_name string
---@param plan table  M.plan's
---@param runtime_dir string
---@param progress table  a ferry.progress reporter (phase "assets")
---@param warnings string[]
---@return integer|nil bytes, string|nil err, string|nil code
function M.send(sb, adapter_name, plan, runtime_dir, progress, warnings)
  table.move(plan.warnings, 1, #plan.warnings, #warnings + 1, warnings)
  if #plan.groups == 0 then return 0 end
  progress:phase("assets", plan.total)
  local adapter_dir = runtime_dir .. "/" .. adapter_name
  local total, sent = 0, { n = 0 }
  for _, g in ipairs(plan.groups) do
    local bytes, err, code = send_group(sb, g, adapter_dir, progress, sent, warnings)
    if not bytes then return nil, err, code end
    total = total + bytes
  end
  return total
end

return M
