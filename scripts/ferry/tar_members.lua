--- ferry.tar_members: a few plain files as ustar members made in Lua, without the end-of-archive blocks, to go
-- in front of a core.tar_writer stream so that one archive (one `tar -x` in the sandbox) carries both: the
-- workspace, and ferry's own inputs for the runtime dir (the git history of git-aware sync). core.tar_writer
-- takes one root; these files live elsewhere (a temp dir). Names are short ASCII paths, sizes under 8 GiB.
local core = require "ferry.core"

local M = {}

local BLOCK = 512
local CHUNK = 64 * 1024
local MAX_SIZE = 8 ^ 11 - 1 -- what 11 octal digits hold

-- A field of `width` bytes: `s`, NUL-padded.
local function field(s, width)
  return s .. ("\0"):rep(width - #s)
end

local function octal(n, width)
  return string.format("%0" .. (width - 1) .. "o", n) .. "\0"
end

--- The 512-byte ustar header of a regular file.
---@param name string  at most 100 bytes
---@param size integer
---@param mode integer
---@param mtime integer
---@return string
function M.header(name, size, mode, mtime)
  if #name > 100 then error("tar_members: name longer than 100 bytes: " .. name, 2) end
  local head = field(name, 100) .. octal(mode, 8) .. octal(0, 8) .. octal(0, 8) .. octal(size, 12)
    .. octal(mtime, 12)
  local tail = "0" .. field("", 100) .. "ustar\0" .. "00" .. field("", 32) .. field("", 32) .. octal(0, 8)
    .. octal(0, 8) .. field("", 155) .. field("", 12)
  local sum = 0
  for _, part in ipairs { head, "        ", tail } do
    for i = 1, #part do sum = sum + part:byte(i) end
  end
  return head .. string.format("%06o", sum) .. "\0 " .. tail
end

--- A reader of the members `names` (files in `dir`), archived as `prefix .. name`, then of `after()`'s chunks
--- (another archive's stream, with its end blocks; nil for none: the end blocks then follow the members).
--- Each file is read as it is archived; one that shrank meanwhile fails the reader ("<path> changed while it
--- was sent"). Returns read() -> chunk | nil at the end, and bytes() -> the bytes read so far (members and
--- end blocks, not after's).
---@param dir string
---@param names string[]
---@param prefix string
---@param after function|nil
---@return function read, function bytes
function M.reader(dir, names, prefix, after)
  local i, f, left, pad, sent = 0, nil, 0, 0, 0
  local mtime = os.time()
  local function next_member()
    i = i + 1
    local name = names[i]
    if not name then return nil end
    local path = dir .. "/" .. name
    local st = core.fs_stat(path)
    if not st or st.kind ~= "file" or st.size > MAX_SIZE then error("tar_members: cannot archive " .. path, 0) end
    f = assert(io.open(path, "rb"))
    left, pad = st.size, (BLOCK - st.size % BLOCK) % BLOCK
    return M.header(prefix .. name, st.size, 384, mtime)
  end
  local function member_chunk()
    if f then
      if left > 0 then
        local chunk = f:read(math.min(CHUNK, left))
        if not chunk then error("tar_members: " .. dir .. "/" .. names[i] .. " changed while it was sent", 0) end
        left = left - #chunk
        return chunk
      end
      f:close()
      f = nil
      if pad > 0 then return ("\0"):rep(pad) end
    end
    return next_member()
  end
  local ended = false
  return function()
    local chunk = member_chunk()
    if not chunk and not after and not ended then -- the members are the whole archive: its end blocks
      ended, chunk = true, ("\0"):rep(2 * BLOCK)
    end
    if chunk then
      sent = sent + #chunk
      return chunk
    end
    return after and after() or nil
  end, function() return sent end
end

return M
