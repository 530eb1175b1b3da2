--- Small statistics for the benches, and the monorepo-like workspace the 100,000-file benches share.
local M = {}

--- Median of a list of numbers.
function M.median(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  local n = #s
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

--- Make DIR/ws: `files` small files (0..399 bytes), `per_dir` to a dir, dirs pkgN/modNNN, all an hour old (so
--- that a warm walk may trust their quick keys). Returns the ms it took.
---@param dir string
---@param files integer
---@param per_dir integer
---@return number
function M.make_workspace(dir, files, per_dir)
  local core = require "ferry.core"
  local t0 = core.time_ms()
  local cmd = "python3 -c \"import os, time\nold = time.time() - 3600\nfor d in range(" .. files // per_dir .. "):\n"
    .. "  p = '" .. dir .. "/ws/pkg%d/mod%03d' % (d % 10, d)\n  os.makedirs(p)\n"
    .. "  for f in range(" .. per_dir .. "):\n    q = '%s/file%03d.txt' % (p, f)\n"
    .. "    open(q, 'w').write('x' * ((d * 7 + f) % 400) + '\\n')\n    os.utime(q, (old, old))\n\""
  assert(os.execute(cmd), "command failed: " .. cmd)
  return core.time_ms() - t0
end

return M
