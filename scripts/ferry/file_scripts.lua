--- ferry.file_scripts: the shell scripts behind the client's file operations (sb:write, sb:read, sb:ls), the
-- exit codes they use to say what is wrong before any data moved, and the parsing of what ls prints.
local transfer = require "ferry.transfer"
local util = require "ferry.util"

local M = {}

--- Exit codes of the scripts: no such file or dir, is a directory, a short write, over the size limit, not
--- a directory.
M.ENOENT, M.EISDIR, M.ESHORT, M.EFBIG, M.ENOTDIR = 200, 201, 202, 203, 204

local word = transfer.word

--- Write stdin to `tmp`, beside `path`: its missing parent dirs made first (mkdir -p; M.ENOTDIR with the
--- nearest existing ancestor on stderr when that is no directory), checked to be `size` bytes long (when
--- known), given `mode` (when given), renamed to `path` (when the size is known; else the caller renames).
---@param path string
---@param tmp string
---@param size integer|nil
---@param mode integer|nil
---@return string
function M.write(path, tmp, size, mode)
  local dir = util.split_path(path)
  local lines = {
    "ferry_f=" .. word(path) .. " ferry_t=" .. word(tmp),
    "ferry_d=" .. word(dir),
    'if [ ! -d "$ferry_d" ]; then',
    '  ferry_p=$ferry_d',
    '  while [ -n "$ferry_p" ] && [ ! -e "$ferry_p" ] && [ ! -L "$ferry_p" ]; do ferry_p=${ferry_p%/*}; done',
    '  if [ -n "$ferry_p" ] && [ ! -d "$ferry_p" ]; then printf \'%s\\n\' "$ferry_p" >&2; exit ' .. M.ENOTDIR .. "; fi",
    '  mkdir -p "$ferry_d" || exit 1',
    "fi",
    '[ -d "$ferry_f" ] && exit ' .. M.EISDIR,
    'cat > "$ferry_t" || { rm -f "$ferry_t"; exit 1; }',
  }
  if size then
    lines[#lines + 1] = 'ferry_n=$(($(stat -c %s "$ferry_t" 2>/dev/null || wc -c < "$ferry_t")))'
    lines[#lines + 1] = '[ "$ferry_n" -eq ' .. size .. ' ] || { rm -f "$ferry_t"; echo "$ferry_n" >&2; exit '
      .. M.ESHORT .. "; }"
  end
  if mode then lines[#lines + 1] = string.format('chmod %o "$ferry_t" || { rm -f "$ferry_t"; exit 1; }', mode) end
  if size then lines[#lines + 1] = 'mv -f "$ferry_t" "$ferry_f" || { rm -f "$ferry_t"; exit 1; }' end
  return table.concat(lines, "\n")
end

--- Print the file at `path`, refused (M.EFBIG, its size on stderr) when it is over `max_bytes`.
---@param path string
---@param max_bytes integer|nil
---@return string
function M.read(path, max_bytes)
  local lines = {
    "ferry_f=" .. word(path),
    '[ -e "$ferry_f" ] || exit ' .. M.ENOENT,
    '[ -d "$ferry_f" ] && exit ' .. M.EISDIR,
  }
  if max_bytes then
    lines[#lines + 1] = 'ferry_n=$(stat -L -c %s "$ferry_f" 2>/dev/null || wc -c < "$ferry_f") || exit 1'
    lines[#lines + 1] = string.format('[ "$((ferry_n))" -gt %d ] && { echo "$((ferry_n))" >&2; exit %d; }',
      max_bytes, M.EFBIG)
  end
  lines[#lines + 1] = 'exec cat "$ferry_f"'
  return table.concat(lines, "\n")
end

local KIND_LETTER = { f = "file", d = "dir", l = "symlink", p = "fifo", s = "socket", c = "char", b = "block" }
local KIND_BITS = { [0x8] = "file", [0x4] = "dir", [0xA] = "symlink", [0x1] = "fifo", [0xC] = "socket",
  [0x2] = "char", [0x6] = "block" }

--- Print one NUL-terminated record per entry of `dir` (M.parse_ls_entry reads them): GNU find's
--- "<kind letter> <octal mode> <size> <name>", else stat's "@<hex mode> <size> <name>".
---@param dir string
---@return string
function M.ls(dir)
  return table.concat({
    "ferry_d=" .. word(dir),
    '[ -d "$ferry_d" ] || { [ -e "$ferry_d" ] && exit ' .. M.ENOTDIR .. "; exit " .. M.ENOENT .. "; }",
    "if find \"$ferry_d\" -maxdepth 0 -printf '' 2>/dev/null; then",
    "  exec find \"$ferry_d\" -mindepth 1 -maxdepth 1 -printf '%y %m %s %f\\0'",
    "fi",
    'for ferry_e in "$ferry_d"/* "$ferry_d"/.[!.]* "$ferry_d"/..?*; do',
    '  [ -e "$ferry_e" ] || [ -L "$ferry_e" ] || continue',
    "  ferry_s=$(stat -c '%f %s' \"$ferry_e\") || exit 1",
    "  printf '@%s %s\\000' \"$ferry_s\" \"${ferry_e##*/}\"",
    "done",
  }, "\n")
end

--- One record of M.ls as {name, kind, mode, size}, or nil when it is malformed.
---@param rec string
---@return table|nil
function M.parse_ls_entry(rec)
  local letter, mode, size, name = rec:match("^(%a) (%d+) (%d+) (.*)$")
  if letter then
    return { name = name, kind = KIND_LETTER[letter] or "other", mode = tonumber(mode, 8), size = tonumber(size) }
  end
  local raw, size2, name2 = rec:match("^@(%x+) (%d+) (.*)$")
  if not raw then return nil end
  raw = tonumber(raw, 16)
  return { name = name2, kind = KIND_BITS[raw >> 12] or "other", mode = raw & 4095, size = tonumber(size2) }
end

return M
