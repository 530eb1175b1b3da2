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
-- The cost is linear in the archive's size: the paths are a tree of components (each entry's name is split
-- once), each node's verdict and disk state are found once, and resolving symlinks has a budget that grows
-- with the archive.
local core = require "ferry.core"

local M = {}

local MODE_MASK = 511 -- 0777
local RESOLVE_BUDGET = 256 -- symlink hops one target may take, over all views

--- The limits on a restored path: a component's bytes, the components of a path, and the room kept under
--- PATH_MAX (4096 with its NUL) for the workspace's own path, a '/', and ferry's longest additions to a
--- name (a temp name beside it, a ".ferry-remote-N" copy): every path written can be walked again later.
M.MAX_COMPONENT = 255
M.MAX_DEPTH = 256
local PATH_MAX = 4095
local ROOM = 64

local SPECIAL = {
  hardlink = "hard link", char = "device", block = "device", fifo = "fifo", socket = "socket",
  other = "unsupported entry type",
}

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

-- Why a normalised path is too long or too deep to write, or nil.
local function over_limits(rel, limit, depth, longest)
  if #rel > limit then return string.format("path longer than %d bytes", limit) end
  if longest > M.MAX_COMPONENT then return string.format("path component longer than %d bytes", M.MAX_COMPONENT) end
  if depth > M.MAX_DEPTH then return string.format("path deeper than %d components", M.MAX_DEPTH) end
  return nil
end

-- ---- the tree of paths ----
-- A node: {name (its component), parent, children = {}, entry (the archive's, or nil), rel (its path, set for
-- entries, else made on demand), ignored, disk ("dir" | "symlink" | "other" | false, found on demand), target
-- (the disk symlink's), verdict (the problem of an entry below it, false for none)}.

local function new_node(parent, name)
  local node = { name = name, parent = parent, children = {} }
  parent.children[name] = node
  return node
end

local function child(node, name)
  return node.children[name] or new_node(node, name)
end

local function rel_of(node)
  if node.rel then return node.rel end
  local names, n = {}, node
  while n.parent do
    names[#names + 1] = n.name
    n = n.parent
  end
  for i = 1, #names // 2 do names[i], names[#names + 1 - i] = names[#names + 1 - i], names[i] end
  node.rel = table.concat(names, "/")
  return node.rel
end

-- What is on disk at the node: "dir", "symlink" (and node.target), "other", or false (absent, or below
-- something that is not a directory on disk). One lstat per node, and only below real directories.
local function disk(ctx, node)
  if node.disk == nil then
    if not node.parent then
      node.disk = "dir"
    elseif disk(ctx, node.parent) ~= "dir" then
      node.disk = false
    else
      ctx.steps = ctx.steps + 1
      local path = ctx.workspace .. "/" .. rel_of(node)
      local st = core.fs_lstat(path)
      node.disk = st and (st.kind == "dir" and "dir" or st.kind == "symlink" and "symlink" or "other") or false
      if node.disk == "symlink" then node.target = core.fs_readlink(path) or "" end
    end
  end
  return node.disk
end

-- The problem of an entry directly below `node`, or false: the highest ancestor (or node) that is not a
-- directory entry of the archive, or is a symlink on disk. Found once per node, top down.
local function verdict(ctx, node)
  local pending = {}
  local n = node
  while n.parent and n.verdict == nil do
    pending[#pending + 1] = n
    n = n.parent
  end
  local above = n.verdict or false
  for i = #pending, 1, -1 do
    local q = pending[i]
    ctx.steps = ctx.steps + 1
    local e, why = q.entry, nil
    if above then
      why = above
    elseif e and e.kind == "symlink" then
      why = "parent " .. rel_of(q) .. " is a symlink in the archive"
    elseif e and e.kind ~= "dir" then
      why = "parent " .. rel_of(q) .. " is not a directory in the archive"
    elseif disk(ctx, q) == "symlink" then
      why = "parent " .. rel_of(q) .. " is a symlink in the workspace"
    elseif not e then
      why = "parent " .. rel_of(q) .. " is not in the archive"
    end
    q.verdict = why or false
    above = q.verdict
  end
  return above
end

-- ---- symlink targets ----

-- The symlink targets at node over every view (archive, disk), and whether some view has no symlink there.
local function views(ctx, node)
  local targets, plain = {}, false
  local e = node.entry
  if e then
    if e.kind == "symlink" then targets[#targets + 1] = e.linkname or "" else plain = true end
  end
  if disk(ctx, node) == "symlink" then
    if node.target ~= targets[1] then targets[#targets + 1] = node.target end
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

-- Resolve comps from the directory `stack` (the nodes below the root); false when it leaves the root.
walk = function(ctx, stack, comps)
  for i, c in ipairs(comps) do
    ctx.steps = ctx.steps + 1
    if ctx.steps > ctx.max_steps then return false, "too many symlinks to resolve the target" end
    if c == ".." then
      if #stack == 0 then return false, "target resolves outside the workspace" end
      stack[#stack] = nil
    elseif c ~= "." then
      local node = child(stack[#stack] or ctx.root, c)
      local targets, plain = views(ctx, node)
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
      stack[#stack + 1] = node
    end
  end
  return true
end

--- True when the symlink at node with `target` resolves inside the workspace in every view.
local function symlink_inside(ctx, node, target)
  if target == "" then return false, "empty symlink target" end
  ctx.budget = RESOLVE_BUDGET
  local up, n = {}, node.parent
  while n.parent do
    up[#up + 1] = n
    n = n.parent
  end
  local stack = {}
  for i = #up, 1, -1 do stack[#stack + 1] = up[i] end
  return follow(ctx, stack, target, {})
end

-- ---- the passes ----

local function ignored(opts, rel, kind)
  local top = rel:match("^[^/]+")
  if opts.skip_top and opts.skip_top[top] then return true end
  return opts.matcher ~= nil and opts.matcher(rel, kind == "dir")
end

-- The node of rel, made with its ancestors as needed: one step from the parent's node when the parent came
-- first (a tar stream lists a directory before its contents), else one step per component.
local function insert(ctx, rel)
  ctx.steps = ctx.steps + 1
  local parent, leaf = rel:match("^(.*)/([^/]*)$")
  local node = ctx.nodes[parent or ""]
  if node then
    node = child(node, leaf or rel)
  else
    node = ctx.root
    for c in rel:gmatch("[^/]+") do
      ctx.steps = ctx.steps + 1
      node = child(node, c)
    end
  end
  node.rel = rel
  ctx.nodes[rel] = node
  return node
end

-- The entry's rel, or nil and why it is refused ("" for the self entry); then its depth and longest component.
local function accepted(e, limit)
  if #e.name > limit + 16 then return nil, string.format("path longer than %d bytes", limit), 0, 0 end
  local rel, why, depth, longest = M.normalise(e.name)
  if rel == "" and e.kind ~= "dir" then return nil, "self entry that is not a directory", 0, 0 end
  return rel, why, depth, longest
end

-- First pass: names, limits, kinds, duplicates, ignores; the tree of the entries.
local function first_pass(entries, opts, result, ctx)
  for _, e in ipairs(entries) do
    local rel, why, depth, longest = accepted(e, ctx.limit)
    if rel == "" then
      result.ignored[#result.ignored + 1] = e.name
    elseif why then
      result.refused[#result.refused + 1] = { name = e.name, reason = why }
    elseif ignored(opts, rel, e.kind) then
      result.ignored[#result.ignored + 1] = e.name
      insert(ctx, rel).ignored = true
    else
      why = over_limits(rel, ctx.limit, depth, longest) or SPECIAL[e.kind]
        or not (e.kind == "file" or e.kind == "dir" or e.kind == "symlink") and "unsupported entry type" or nil
      local node = not why and insert(ctx, rel)
      if node and node.entry then why = "duplicate entry" end
      if why then
        result.refused[#result.refused + 1] = { name = e.name, reason = why }
      else
        node.entry = e
        ctx.order[#ctx.order + 1] = node
      end
    end
  end
end

-- True when an ancestor of node is ignored (everything below an excluded directory is), found once per node.
local function below_ignored(ctx, node)
  local pending, n = {}, node.parent
  while n and n.hidden == nil do
    pending[#pending + 1] = n
    n = n.parent
  end
  local hidden = n ~= nil and n.hidden
  for i = #pending, 1, -1 do
    ctx.steps = ctx.steps + 1
    hidden = hidden or pending[i].ignored == true
    pending[i].hidden = hidden
  end
  return hidden
end

local function unchanged_symlink(baseline, rel, e)
  local b = baseline and baseline[rel]
  return b ~= nil and b.kind == "symlink" and b.target == e.linkname
end

local function total_bytes(entries)
  local n = 0
  for _, e in ipairs(entries) do n = n + #e.name + #(e.linkname or "") end
  return n
end

--- Check every entry of a scanned archive (core.tar_scan's list).
---@param entries table[]  {name, kind, mode, size, linkname, sha256}
---@param opts table  workspace (absolute path, for the on-disk checks and the path limit), matcher
---                   (excludes), skip_top (set of top-level names never restored), baseline (snapshot),
---                   allow_outside_symlinks
---@return table result  {entries = rel -> archive entry, order = {rel...}, refused = {{name, reason}...},
---                       ignored = {name...}, steps (the work done: linear in the archive's size)}
function M.check(entries, opts)
  local result = { refused = {}, ignored = {}, entries = {}, order = {} }
  local root = { children = {} }
  local ctx = { root = root, nodes = { [""] = root }, order = {}, workspace = opts.workspace,
    limit = M.path_limit(opts.workspace), steps = 0 }
  ctx.max_steps = 64 * total_bytes(entries) + 100000
  first_pass(entries, opts, result, ctx)
  for _, node in ipairs(ctx.order) do
    local e, rel = node.entry, node.rel
    if below_ignored(ctx, node) then
      result.ignored[#result.ignored + 1] = e.name
    else
      local why = verdict(ctx, node.parent)
      if not why and e.kind == "symlink" and not opts.allow_outside_symlinks
          and not unchanged_symlink(opts.baseline, rel, e) then
        local ok, reason = symlink_inside(ctx, node, e.linkname or "")
        if not ok then why = "symlink to " .. string.format("%q", e.linkname or "") .. ": " .. reason end
      end
      if why then result.refused[#result.refused + 1] = { name = e.name, reason = why } end
      result.entries[rel] = e
      result.order[#result.order + 1] = rel
    end
  end
  result.steps = ctx.steps
  return result
end

--- The merge snapshot of the checked entries: rel -> {kind, mode (& 0777), size, sha256, target}. Every
--- entry's parent is a directory entry of the archive (M.check refuses the others).
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
  end
  return snap
end

return M
