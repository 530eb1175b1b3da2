--- Workspaces for the runtime specs: awkward names, binary files, symlinks, empty dirs; full snapshots to
-- compare trees before and after.
local core = require "ferry.core"
local snapshot = require "ferry.snapshot"

local M = {}

--- File names that break naive shell code and tar invocations.
M.NAMES = {
  "plain.txt", "with space", "it's \"quoted\"", "new\nline", "-leading-dash", "ünïcödé ✓", "back\\slash",
  "$(touch pwned) `x` *?[a]",
}

local ALL_BYTES
do
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  ALL_BYTES = table.concat(t)
end
M.ALL_BYTES = ALL_BYTES

local function ensure_root(root)
  if not core.fs_stat(root) then assert(os.execute("mkdir -p " .. core.sh_quote(root))) end
end

--- Write a file (creating the root and the parent dirs); mode optional.
function M.write(root, rel, data, mode)
  ensure_root(root)
  local dir = rel:match("^(.*)/[^/]*$")
  if dir then assert(core.fs_safe_mkdir(root, dir, 493)) end
  assert(core.fs_safe_write(root, rel, data, mode or 420))
end

function M.read(root, rel)
  local f = io.open(root .. "/" .. rel, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

function M.symlink(root, rel, target)
  ensure_root(root)
  assert(core.fs_safe_symlink(root, rel, target))
end

function M.mkdir(root, rel)
  ensure_root(root)
  assert(core.fs_safe_mkdir(root, rel, 493))
end

--- Fill `root` with the awkward fixture: every name at the top and in a subdir, a binary file, an
--- executable, symlinks (file, dir, dangling), empty dirs, and content the default excludes keep home.
function M.fill(root)
  for i, name in ipairs(M.NAMES) do
    M.write(root, name, "top " .. i .. " " .. name .. "\n")
    M.write(root, "dir with space/" .. name, "sub " .. i .. "\n")
  end
  M.write(root, "binary.bin", ALL_BYTES:rep(64) .. "\0\r\n\0")
  M.write(root, "run.sh", "#!/bin/sh\necho hi\n", 493)
  M.symlink(root, "link to plain", "plain.txt")
  M.symlink(root, "dir link", "dir with space")
  M.symlink(root, "dangling", "not/there")
  M.mkdir(root, "empty")
  M.mkdir(root, "dir with space/empty too")
  M.write(root, "node_modules/pkg/index.js", "module.exports = 1\n")
  M.write(root, "._apple", "resource fork\n")
  M.write(root, "src/build/out.o", "object\n")
end

--- Snapshot of everything under root (nothing excluded) plus its leftover temp files (any run's).
function M.full(root)
  local snap, _, info = assert(snapshot.take(root, { temp_tokens = true }))
  return snap, info.temps
end

--- Snapshot as the runtime moves it: default excludes, and the runtime dir left out.
function M.moved(root)
  local excludes = require "ferry.excludes"
  return assert(snapshot.take(root, { matcher = excludes.compile(excludes.DEFAULT) }))
end

--- Paths that differ between two snapshots.
M.diff = snapshot.diff

--- Number of entries of a table.
function M.count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

return M
