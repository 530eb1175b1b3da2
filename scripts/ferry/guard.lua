--- ferry.guard: restore's check of the archive a sandbox sends back, before anything is written.
--
-- The sandbox is hostile: every entry is checked, and one bad entry refuses the whole restore. Refused:
--   absolute paths; '..' components; malformed names (empty or '.' components); names too long to be
--   written and walked again later (M.path_limit bytes for the path, 255 for a component, 256 components);
--   hard links, devices, fifos, sockets and other special entries; the same path twice; an entry whose
--   parent is not a directory entry of the archive, or is a symlink in the workspace on disk; a symlink whose
--   target resolves outside the workspace (every view of each component on the way is followed: the
--   archive's entry and the one on disk), unless allow_outside_symlinks. A symlink the baseline already had,
--   with the same target, is the user's own and passes.
-- Ignored silently (never written): the "." self entry, excluded paths and everything below them, the
-- runtime dir and preserved names. setuid, setgid and sticky bits are dropped (modes & 0777).
--
-- The archive is read by core.tar_scan_tree (M.scan_options): it refuses, in C and with these words, what the
-- archive alone shows wrong (names, limits, kinds, duplicates, a parent that is a symlink or a file in the
-- archive) and marks the parents it does not list (implied). M.check adds what needs the disk and the
-- symlink targets, looking only at the archive's directories and symlinks. Its cost is linear in the
-- archive: each directory's disk state is found once, and resolving symlinks has a budget that grows with
-- the archive.
local core = require "ferry.core"
local excludes = require "ferry.excludes"

local M = {}

local RESOLVE_BUDGET = 256 -- symlink hops one target may take, over all views

--- The limits on a restored path: a component's bytes, the components of a path, and the room kept under
--- PATH_MAX (4096 with its NUL) for the workspace's own path, a '/', and ferry's longest additions to a
--- name (a temp name beside it, a ".ferry-remote-N" copy): every path written can be walked again later.
M.MAX_COMPONENT = 255
M.MAX_DEPTH = 256
local PATH_MAX = 4095
local ROOM = 64

--- The longest entry path (bytes) restore writes below `workspace`: 4095 - 64 - #workspace - 1.
---@param workspace string
---@return integer
function M.path_limit(workspace)
  return PATH_MAX - ROOM - #workspace - 1
end

--- A tar member name as a workspace-relative path: "./" prefixes and trailing '/' dropped. Returns "" for
--- the self entry, or nil and why the name is refused; then the number of components and the longest one's
--- bytes.
---@param name string
---@return string|nil rel, string|nil why, integer depth, integer longest
function M.normalise(name)
  if name:sub(1, 1) == "/" then return nil, "absolute path", 0, 0 end
  local first, last = 1, #name
  while name:byte(first) == 46 and name:byte(first + 1) == 47 do first = first + 2 end -- "./"
  while last >= first and name:byte(last) == 47 do last = last - 1 end -- trailing '/'
  local rel = name:sub(first, last)
  if rel == "" or rel == "." then return "", nil, 0, 0 end
  local depth, longest = 0, 0
  for comp in (rel .. "/"):gmatch("([^/]*)/") do
    if comp == ".." then return nil, "'..' path component", depth, longest end
    if comp == "" or comp == "." then return nil, "malformed path (empty or '.' component)", depth, longest end
    depth = depth + 1
    if #comp > longest then longest = #comp end
  end
  return rel, nil, depth, longest
end


--- The matcher of what restore ignores in an archive: the excludes `patterns`, and the top-level names
--- `skip_top` (the runtime dir, the preserved names) with everything below them. Raises on a bad pattern.
---@param patterns string[]
---@param skip_top string[]
---@return function matcher
function M.ignore_matcher(patterns, skip_top)
  local all = excludes.combine(patterns)
  for _, name in ipairs(skip_top) do all[#all + 1] = "/" .. name:gsub("[\\*?]", "\\%0") end
  return excludes.compile(all)
end

--- core.tar_scan_tree's options for the archive restore reads into `workspace`: exclude (M.ignore_matcher's),
--- max_path (M.path_limit), max_bytes, members (ferry's own files in the stream).
---@return table
function M.scan_options(workspace, matcher, max_bytes, members)
  return { exclude = matcher, max_path = M.path_limit(workspace), max_bytes = max_bytes, members = members }
end

-- ---- what is on disk ----

local function parent_of(rel)
  return rel:match("^(.*)/[^/]*$") or ""
end

-- What is on disk at rel: "dir", "symlink" (and ctx.targets[rel]), "other", or false (absent, or below
-- something that is not a directory on disk). One lstat per path, and only below real directories.
local function disk(ctx, rel)
  if rel == "" then return "dir" end
  local known = ctx.disk[rel]
  if known ~= nil then return known end
  local kind = false
  if disk(ctx, parent_of(rel)) == "dir" then
    ctx.steps = ctx.steps + 1
    local path = ctx.workspace .. "/" .. rel
    local st = core.fs_lstat(path)
    kind = st and (st.kind == "dir" and "dir" or st.kind == "symlink" and "symlink" or "other") or false
    if kind == "symlink" then ctx.targets[rel] = core.fs_readlink(path) or "" end
  end
  ctx.disk[rel] = kind
  return kind
end

-- ---- symlink targets ----

-- The archive's entry at rel ({kind, target}), or nil (an implied parent is no entry).
local function entry(ctx, rel)
  local e = ctx.tree:get(rel)
  if not e or e.implied then return nil end
  return e
end

-- The symlink targets at rel over every view (archive, disk), and whether some view has no symlink there.
local function views(ctx, rel)
  local targets, plain = {}, false
  local e = entry(ctx, rel)
  if e then
    if e.kind == "symlink" then targets[#targets + 1] = e.target or "" else plain = true end
  end
  if disk(ctx, rel) == "symlink" then
    if ctx.targets[rel] ~= targets[1] then targets[#targets + 1] = ctx.targets[rel] end
  elseif not e then
    plain = true
  end
  return targets, plain
end

local function split(path)
  local out = {}
  for c in path:gmatch("[^/]+") do out[#out + 1] = c end
  return out
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
  ctx.steps = ctx.steps + #comps + #stack
  return walk(ctx, stack, comps)
end

-- Resolve comps from the directory `stack` (the paths below the root); false when it leaves the root.
walk = function(ctx, stack, comps)
  for i, c in ipairs(comps) do
    ctx.steps = ctx.steps + 1
    if ctx.steps > ctx.max_steps then return false, "too many symlinks to resolve the target" end
    if c == ".." then
      if #stack == 0 then return false, "target resolves outside the workspace" end
      stack[#stack] = nil
    elseif c ~= "." then
      local rel = #stack > 0 and stack[#stack] .. "/" .. c or c
      local targets, plain = views(ctx, rel)
      if #targets > 0 then
        local rest = table.move(comps, i + 1, #comps, 1, {})
        for _, t in ipairs(targets) do
          ctx.budget = ctx.budget - 1
          if ctx.budget < 0 then return false, "too many symlinks to resolve the target" end
          local ok, why = follow(ctx, table.move(stack, 1, #stack, 1, {}), t, rest)
          if not ok then return false, why end
        end
        if not plain then return true end
      end
      stack[#stack + 1] = rel
    end
  end
  return true
end

-- True when the symlink at rel with `target` resolves inside the workspace in every view.
local function symlink_inside(ctx, rel, target)
  if target == "" then return false, "empty symlink target" end
  ctx.budget = RESOLVE_BUDGET
  local stack, at = {}, 1
  while true do
    local slash = rel:find("/", at, true)
    if not slash then break end
    stack[#stack + 1] = rel:sub(1, slash - 1)
    at = slash + 1
  end
  return follow(ctx, stack, target, {})
end

-- ---- the passes ----

-- The member name of rel as the archive has it.
local function name_of(tree, rel)
  local e = tree:get(rel)
  return e and e.name or rel
end

-- Refuse the entry at rel (its place in the archive is its ino) for `why`.
local function refuse(ctx, rel, at, why)
  ctx.refused[#ctx.refused + 1] = { name = name_of(ctx.tree, rel), reason = why, at = at }
end

-- Refuse every entry strictly below rel, for `why`.
local function refuse_below(ctx, rel, why)
  local prefix = rel .. "/"
  for p, at in ctx.tree:iter(prefix, "ino") do
    if p:sub(1, #prefix) ~= prefix then break end
    ctx.steps = ctx.steps + 1
    if at > 0 then refuse(ctx, p, at, why) end -- (an implied directory is no entry)
  end
end

-- The directories: a parent the archive does not list, or that is a symlink on disk, refuses everything
-- below it (the highest such directory is named). Returns the set of those directories.
local function check_dirs(ctx)
  local bad, last = {}, nil
  for rel, implied in ctx.tree:iter(nil, "implied", "dir") do
    if not (last and rel:sub(1, #last + 1) == last .. "/") then
      ctx.steps = ctx.steps + 1
      local why
      if disk(ctx, rel) == "symlink" then
        why = "parent " .. rel .. " is a symlink in the workspace"
      elseif implied then
        why = "parent " .. rel .. " is not in the archive"
      end
      if why then
        bad[rel], last = true, rel
        refuse_below(ctx, rel, why)
      end
    end
  end
  return bad
end

local function unchanged_symlink(baseline, rel, target)
  local b = baseline and baseline:get(rel)
  return b ~= nil and b.kind == "symlink" and b.target == target
end

--- Check an archive scanned by core.tar_scan_tree (with M.scan_options) before anything is written.
---@param tree table  the scan's tree
---@param info table  the scan's info (its refusals come first in the result)
---@param opts table  workspace (absolute path, for the on-disk checks), baseline (a tree: its own symlinks
---                   pass), allow_outside_symlinks
---@return table result  {refused = {{name, reason}...}: what the names, limits and kinds refuse, then what
---                       the parents and symlink targets do, each in archive order; steps (the work done:
---                       linear in the archive's size)}
function M.check(tree, info, opts)
  local ctx = { tree = tree, workspace = opts.workspace, refused = {}, disk = {}, targets = {}, steps = 0,
    max_steps = 64 * tree:bytes() + 100000 }
  local first = {}
  for _, r in ipairs(info.refused) do
    local list = r.reason:find("^parent ") and ctx.refused or first
    list[#list + 1] = r
  end
  local bad = check_dirs(ctx)
  if not opts.allow_outside_symlinks then
    for rel, target, at in tree:iter(nil, "target ino", "symlink") do
      local p, below_bad = parent_of(rel), false
      while p ~= "" and not below_bad do
        below_bad = bad[p] == true
        p = parent_of(p)
        ctx.steps = ctx.steps + 1
      end
      if not below_bad and not unchanged_symlink(opts.baseline, rel, target) then
        local ok, reason = symlink_inside(ctx, rel, target or "")
        if not ok then refuse(ctx, rel, at, "symlink to " .. string.format("%q", target or "") .. ": " .. reason) end
      end
    end
  end
  table.sort(ctx.refused, function(a, b) return a.at < b.at end)
  for _, r in ipairs(ctx.refused) do first[#first + 1] = { name = r.name, reason = r.reason } end
  for _, r in ipairs(first) do r.at = nil end
  return { refused = first, steps = ctx.steps }
end

return M
