--- ferry.guard: restore's check of the archive a sandbox sends back, before anything is written.
--
-- The sandbox is hostile: every entry is checked, and one bad entry refuses the whole restore. Refused:
--   absolute paths; '..' components; malformed names (empty or '.' components); hard links, devices, fifos,
--   sockets and other special entries; the same path twice; an entry below a path that is a symlink (or
--   not a directory) in the archive, or a symlink in the workspace on disk; a symlink whose target resolves
--   outside the workspace (every view of each component on the way is followed: the archive's entry and
--   the one on disk), unless allow_outside_symlinks. A symlink the baseline already had, with the same
--   target, is the user's own and passes.
-- Ignored silently (never written): the "." self entry, excluded paths, the runtime dir and preserved names.
-- setuid, setgid and sticky bits are dropped (modes & 0777).
local core = require "ferry.core"
local util = require "ferry.util"

local M = {}

local MODE_MASK = 511 -- 0777
local RESOLVE_BUDGET = 256 -- symlink hops one target may take, over all views

local SPECIAL = {
  hardlink = "hard link", char = "device", block = "device", fifo = "fifo", socket = "socket",
  other = "unsupported entry type",
}

--- A tar member name as a workspace-relative path: "./" prefixes and trailing '/' dropped. Returns "" for
--- the self entry, or nil and why the name is refused.
---@param name string
---@return string|nil rel, string|nil why
function M.normalise(name)
  if name:sub(1, 1) == "/" then return nil, "absolute path" end
  local rel = name
  while rel:sub(1, 2) == "./" do rel = rel:sub(3) end
  rel = rel:gsub("/+$", "")
  if rel == "" or rel == "." then return "" end
  for comp in (rel .. "/"):gmatch("([^/]*)/") do
    if comp == ".." then return nil, "'..' path component" end
    if comp == "" or comp == "." then return nil, "malformed path (empty or '.' component)" end
  end
  return rel
end

local parent_of = util.parent_of

local function split(path)
  local out = {}
  for c in path:gmatch("[^/]+") do out[#out + 1] = c end
  return out
end

-- What is on disk at rel: "symlink", target | "other" | nil (absent, or under a symlink on disk).
local function make_disk(workspace)
  local cache = {}
  return function(rel)
    local hit = cache[rel]
    if hit then return hit[1], hit[2] end
    local st = core.fs_safe_lstat(workspace, rel)
    local kind, target
    if st then
      kind = st.kind == "symlink" and "symlink" or "other"
      if kind == "symlink" then target = core.fs_readlink(workspace .. "/" .. rel) or "" end
    end
    cache[rel] = { kind, target }
    return kind, target
  end
end

-- The symlink targets at rel over every view (archive, disk), and whether some view has no symlink there.
local function views(ctx, rel)
  local targets, plain = {}, false
  local e = ctx.entries[rel]
  if e then
    if e.kind == "symlink" then targets[#targets + 1] = e.linkname or "" else plain = true end
  end
  local kind, target = ctx.disk(rel)
  if kind == "symlink" then
    if target ~= targets[1] then targets[#targets + 1] = target end
  elseif not e then
    plain = true
  end
  return targets, plain
end

local walk

local function follow(ctx, stack, target, rest)
  if target:sub(1, 1) == "/" then
    local ws = ctx.workspace
    if target == ws or target:sub(1, #ws + 1) == ws .. "/" then
      stack, target = {}, target:sub(#ws + 2)
    else
      return false, "absolute target outside the workspace"
    end
  end
  local comps = split(target)
  table.move(rest, 1, #rest, #comps + 1, comps)
  return walk(ctx, stack, comps)
end

-- Resolve comps from the directory `stack` (components below the root); false when it leaves the root.
walk = function(ctx, stack, comps)
  for i, c in ipairs(comps) do
    if c == ".." then
      if #stack == 0 then return false, "target resolves outside the workspace" end
      stack[#stack] = nil
    elseif c ~= "." then
      stack[#stack + 1] = c
      local targets, plain = views(ctx, table.concat(stack, "/"))
      if #targets > 0 then
        stack[#stack] = nil
        local rest = table.move(comps, i + 1, #comps, 1, {})
        for _, t in ipairs(targets) do
          ctx.budget = ctx.budget - 1
          if ctx.budget < 0 then return false, "too many symlinks to resolve the target" end
          local ok, why = follow(ctx, table.move(stack, 1, #stack, 1, {}), t, rest)
          if not ok then return false, why end
        end
        if not plain then return true end
        stack[#stack + 1] = c
      end
    end
  end
  return true
end

--- True when the symlink at rel with `target` resolves inside the workspace in every view.
local function symlink_inside(ctx, rel, target)
  if target == "" then return false, "empty symlink target" end
  ctx.budget = RESOLVE_BUDGET
  local parent = parent_of(rel)
  return follow(ctx, parent and split(parent) or {}, target, {})
end

local function ignored(opts, rel, kind)
  local top = rel:match("^[^/]+")
  if opts.skip_top and opts.skip_top[top] then return true end
  return opts.matcher ~= nil and opts.matcher(rel, kind == "dir")
end

-- First pass: names, kinds, duplicates, ignores. Fills ctx.entries (rel -> entry) and ctx.order.
local function first_pass(entries, opts, result, ctx)
  for _, e in ipairs(entries) do
    local rel, why = M.normalise(e.name)
    if rel == "" then
      if e.kind ~= "dir" then
        why = "self entry that is not a directory"
      else
        result.ignored[#result.ignored + 1] = e.name
      end
    end
    if why then
      result.refused[#result.refused + 1] = { name = e.name, reason = why }
    elseif rel ~= "" then
      if ignored(opts, rel, e.kind) then
        result.ignored[#result.ignored + 1] = e.name
      elseif SPECIAL[e.kind] or not (e.kind == "file" or e.kind == "dir" or e.kind == "symlink") then
        result.refused[#result.refused + 1] = { name = e.name, reason = SPECIAL[e.kind] or "unsupported entry type" }
      elseif ctx.entries[rel] then
        result.refused[#result.refused + 1] = { name = e.name, reason = "duplicate entry" }
      else
        ctx.entries[rel] = e
        ctx.order[#ctx.order + 1] = rel
      end
    end
  end
end

local function parent_problem(ctx, rel)
  local p = parent_of(rel)
  local chain = {}
  while p do
    table.insert(chain, 1, p)
    p = parent_of(p)
  end
  for _, q in ipairs(chain) do
    local e = ctx.entries[q]
    if e and e.kind == "symlink" then return "parent " .. q .. " is a symlink in the archive" end
    if e and e.kind ~= "dir" then return "parent " .. q .. " is not a directory in the archive" end
    local kind = ctx.disk(q)
    if kind == "symlink" then return "parent " .. q .. " is a symlink in the workspace" end
  end
  return nil
end

local function unchanged_symlink(baseline, rel, e)
  local b = baseline and baseline[rel]
  return b ~= nil and b.kind == "symlink" and b.target == e.linkname
end

--- Check every entry of a scanned archive (core.tar_scan's list).
---@param entries table[]  {name, kind, mode, size, linkname, sha256}
---@param opts table  workspace (absolute path, for the on-disk checks), matcher (excludes), skip_top (set of
---                   top-level names never restored), baseline (snapshot), allow_outside_symlinks
---@return table result  {entries = rel -> archive entry, order = {rel...}, refused = {{name, reason}...},
---                       ignored = {name...}}
function M.check(entries, opts)
  local result = { refused = {}, ignored = {} }
  local ctx = { entries = {}, order = {}, workspace = opts.workspace, disk = make_disk(opts.workspace) }
  first_pass(entries, opts, result, ctx)
  for _, rel in ipairs(ctx.order) do
    local e = ctx.entries[rel]
    local why = parent_problem(ctx, rel)
    if not why and e.kind == "symlink" and not opts.allow_outside_symlinks
        and not unchanged_symlink(opts.baseline, rel, e) then
      local ok, reason = symlink_inside(ctx, rel, e.linkname or "")
      if not ok then why = "symlink to " .. string.format("%q", e.linkname or "") .. ": " .. reason end
    end
    if why then result.refused[#result.refused + 1] = { name = e.name, reason = why } end
  end
  result.entries, result.order = ctx.entries, ctx.order
  return result
end

--- The merge snapshot of the checked entries: rel -> {kind, mode (& 0777), size, sha256, target}, with
--- the directories the archive implies but does not list.
---@param checked table  M.check's result
---@return table snapshot
function M.snapshot(checked)
  local snap = {}
  for _, rel in ipairs(checked.order) do
    local e = checked.entries[rel]
    local entry = { kind = e.kind }
    if e.kind == "symlink" then
      entry.target = e.linkname
    else
      entry.mode = math.tointeger((e.mode or 420) & MODE_MASK)
      if e.kind == "file" then
        entry.size = e.size
        entry.sha256 = e.sha256
      end
    end
    snap[rel] = entry
    local p = parent_of(rel)
    while p and not snap[p] do
      snap[p] = { kind = "dir", mode = 493 } -- 0755, for a directory only implied by its contents
      p = parent_of(p)
    end
  end
  return snap
end

return M
