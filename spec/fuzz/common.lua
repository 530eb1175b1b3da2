--- What the fuzz drivers share: reading control bytes off the front of an input, a scratch dir, and
-- raising a finding with enough context to read it in a crash report.
local core = require "ferry.core"

local M = {}

--- Raise a finding: the message formatted, with `%q` used for data (control bytes become escapes).
function M.fail(fmt, ...)
  error("FINDING: " .. string.format(fmt, ...), 2)
end

--- A cursor over the input: take(n) returns the next n bytes (fewer at the end), byte() the next byte or 0.
---@param data string
function M.cursor(data)
  local pos = 1
  local c = {}
  function c.byte()
    local b = data:byte(pos) or 0
    pos = pos + 1
    return b
  end
  function c.take(n)
    local s = data:sub(pos, pos + n - 1)
    pos = pos + n
    return s
  end
  function c.rest()
    local s = data:sub(pos)
    pos = #data + 1
    return s
  end
  return c
end

--- Split `s` in pieces whose sizes come from `seed` (a byte): 0 one piece, else pieces of 1..seed bytes in a
--- fixed pseudo-random sequence. Returns the list (never empty; {""} for "").
---@param s string
---@param seed integer
---@return string[]
function M.pieces(s, seed)
  if seed == 0 or #s == 0 then return { s } end
  local out, pos, x = {}, 1, seed
  while pos <= #s do
    x = (x * 1103515245 + 12345) % 2147483648
    local n = 1 + (x >> 8) % seed
    out[#out + 1] = s:sub(pos, pos + n - 1)
    pos = pos + n
  end
  return out
end

--- A new scratch dir for one fuzz process: in FERRY_FUZZ_SCRATCH when the runner sets it (it removes what a
--- crashed process left), else in $TMPDIR. Returns the dir and a function removing it.
---@return string dir, function remove
function M.scratch()
  local base = os.getenv("FERRY_FUZZ_SCRATCH")
  local prefix = "ferry-fuzz-"
  if base and base ~= "" then
    assert(os.execute("mkdir -p " .. core.sh_quote(base)))
    prefix = base .. "/run-"
  end
  local dir = assert(core.fs_mkdtemp(prefix))
  return dir, function() core.fs_remove_tree(dir) end
end

--- Whether `rel` is a workspace-relative path the restore may write: not empty, no leading '/', no empty,
--- '.' or '..' component.
---@param rel string
---@return boolean
function M.safe_rel(rel)
  if rel == "" or rel:sub(1, 1) == "/" then return false end
  for comp in (rel .. "/"):gmatch("([^/]*)/") do
    if comp == "" or comp == "." or comp == ".." then return false end
  end
  return true
end

return M
