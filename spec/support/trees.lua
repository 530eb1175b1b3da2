--- Small helpers for the specs and the bench of the compact tree (core.tree_*).
local core = require "ferry.core"

local M = {}

--- The paths of a tree, in its order, from path `from` on.
function M.paths(t, from)
  local out = {}
  for rel in t:iter(from, "") do out[#out + 1] = rel end
  return out
end

--- Every key of the tables in `list`, once, sorted by `less` (default: the tree's path order).
function M.union_sorted(list, less)
  local seen, all = {}, {}
  for _, s in ipairs(list) do
    for rel in pairs(s) do
      if not seen[rel] then
        seen[rel] = true
        all[#all + 1] = rel
      end
    end
  end
  table.sort(all, less or core.tree_path_less)
  return all
end

--- This process's peak resident memory (VmHWM), KiB.
function M.peak_rss_kib()
  for l in io.lines("/proc/self/status") do
    local kib = l:match("^VmHWM:%s*(%d+)")
    if kib then return tonumber(kib) end
  end
end

return M
