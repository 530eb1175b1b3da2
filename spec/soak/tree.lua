--- The soak's view of a directory tree: read it whole, compare two, and make random edits the way a user or an
-- agent does (plain writes, deletes, renames; no ferry helper, so no ferry temp name is ever involved).
-- A tree maps a relative path to {kind = "file", data, mode} | {kind = "dir"} | {kind = "symlink", target}.
local core = require "ferry.core"

local M = {}

local SKIP_TOP = { [".ferry-runtime"] = true }

--- The tree under `root` (the runtime dir left out).
---@param root string
---@return table
function M.read(root)
  local tree = {}
  local function walk(rel)
    local names = core.fs_readdir(rel == "" and root or root .. "/" .. rel) or {}
    for _, name in ipairs(names) do
      local child = rel == "" and name or rel .. "/" .. name
      if not (rel == "" and SKIP_TOP[name]) then
        local path = root .. "/" .. child
        local st = core.fs_lstat(path)
        if st and st.kind == "dir" then
          tree[child] = { kind = "dir" }
          walk(child)
        elseif st and st.kind == "symlink" then
          tree[child] = { kind = "symlink", target = core.fs_readlink(path) }
        elseif st and st.kind == "file" then
          local f = io.open(path, "rb")
          tree[child] = { kind = "file", data = f and f:read("a") or "", mode = st.mode & 511 }
          if f then f:close() end
        elseif st then
          tree[child] = { kind = st.kind }
        end
      end
    end
  end
  walk("")
  return tree
end

--- Whether two entries are the same version (nil is "absent").
function M.same(a, b)
  if a == nil or b == nil then return a == b end
  if a.kind ~= b.kind then return false end
  if a.kind == "file" then return a.data == b.data and a.mode == b.mode end
  if a.kind == "symlink" then return a.target == b.target end
  return true
end

--- The files (and symlinks) of a tree: dirs left out.
function M.files(tree)
  local out = {}
  for rel, e in pairs(tree) do
    if e.kind ~= "dir" then out[rel] = e end
  end
  return out
end

--- A copy of the tree (entries are never changed in place, so a shallow copy will do).
function M.copy(tree)
  local out = {}
  for rel, e in pairs(tree) do out[rel] = e end
  return out
end

--- A short description of an entry for messages.
function M.describe(e)
  if e == nil then return "absent" end
  if e.kind == "file" then
    return string.format("file of %d bytes, mode %o, %q", #e.data, e.mode, e.data:sub(1, 24))
  end
  if e.kind == "symlink" then return "symlink -> " .. tostring(e.target) end
  return e.kind
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end
M.sorted_keys = sorted_keys

--- Random content: a few lines of text, now and then binary bytes.
---@return string
function M.content()
  if math.random(10) == 1 then
    local bytes = {}
    for i = 1, math.random(0, 600) do bytes[i] = string.char(math.random(0, 255)) end
    return table.concat(bytes)
  end
  local lines = {}
  for i = 1, math.random(0, 12) do lines[i] = string.format("line %d %08x", i, math.random(0, 0x7fffffff)) end
  return table.concat(lines, "\n") .. "\n"
end

local DIRS = { "", "src", "src/lib", "docs", "data/deep/er" }

local counter = 0

--- A new file name no side has used (counter per soak run), in an existing or a new dir; `tag` starts it.
---@return string
function M.new_path(tag)
  counter = counter + 1
  local dir = DIRS[math.random(#DIRS)]
  if math.random(8) == 1 then dir = (dir == "" and "" or dir .. "/") .. "new" .. counter end
  local name = string.format("%s%d.txt", tag, counter)
  return dir == "" and name or dir .. "/" .. name
end

--- Write a file the way an editor does (in place), making its dir.
function M.write(root, rel, data, mode)
  local dir = rel:match("^(.*)/[^/]*$")
  if dir then assert(core.fs_safe_mkdir(root, dir, 493)) end
  local f = assert(io.open(root .. "/" .. rel, "wb"))
  f:write(data)
  f:close()
  assert(core.fs_safe_chmod(root, rel, mode))
end

--- Make `n` random edits to the files under `root`, whose tree is `tree` (updated in place). `tag` names new
--- files (h: host, s: sandbox, r: race). Returns the edits as a list of strings for the log, and counts.
---@return string[] log
function M.edit(root, tree, n, tag)
  local log = {}
  for _ = 1, n do
    local files = {}
    for rel, e in pairs(tree) do
      if e.kind == "file" then files[#files + 1] = rel end
    end
    table.sort(files)
    local op = math.random(10)
    local pick = #files > 0 and files[math.random(#files)]
    if op <= 4 and pick then -- modify (a mode change now and then)
      local mode = tree[pick].mode
      if math.random(6) == 1 then mode = mode == 420 and 493 or 420 end
      local data = math.random(6) == 1 and tree[pick].data or M.content()
      M.write(root, pick, data, mode)
      tree[pick] = { kind = "file", data = data, mode = mode }
      log[#log + 1] = "modify " .. pick
    elseif op <= 6 and pick then -- delete
      assert(os.remove(root .. "/" .. pick))
      tree[pick] = nil
      log[#log + 1] = "delete " .. pick
    elseif op <= 8 and pick then -- rename
      local to = M.new_path(tag)
      local dir = to:match("^(.*)/[^/]*$")
      if dir then assert(core.fs_safe_mkdir(root, dir, 493)) end
      assert(os.rename(root .. "/" .. pick, root .. "/" .. to))
      tree[to], tree[pick] = tree[pick], nil
      log[#log + 1] = "rename " .. pick .. " -> " .. to
    else -- create
      local to = M.new_path(tag)
      local data = M.content()
      M.write(root, to, data, 420)
      tree[to] = { kind = "file", data = data, mode = 420 }
      log[#log + 1] = "create " .. to
    end
    for rel in pairs(tree) do M.add_dirs(tree, rel) end
  end
  return log
end

--- Add the dirs above `rel` to the tree (a new file's path may have made them).
function M.add_dirs(tree, rel)
  local dir = rel:match("^(.*)/[^/]*$")
  while dir and not tree[dir] do
    tree[dir] = { kind = "dir" }
    dir = dir:match("^(.*)/[^/]*$")
  end
end

--- A fresh workspace: files in a few dirs and two symlinks.
function M.populate(root, files)
  local tree = {}
  for i = 1, files do
    local dir = DIRS[(i % #DIRS) + 1]
    local rel = (dir == "" and "" or dir .. "/") .. string.format("f%03d.txt", i)
    local data = M.content()
    M.write(root, rel, data, i % 7 == 0 and 493 or 420)
  end
  assert(core.fs_safe_symlink(root, "link-to-src", "src"))
  assert(core.fs_safe_symlink(root, "src/link-up", "../docs"))
  for rel, e in pairs(M.read(root)) do tree[rel] = e end
  return tree
end

return M
