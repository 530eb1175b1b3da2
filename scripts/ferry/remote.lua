--- ferry.remote: the shell that prepare and restore run in the sandbox on the remote dir, and what it prints:
-- clearing the remote dir but the preserved names, deleting paths, the sync command (clear or delete,
-- extract, then ferry.listing's lines: the marker and the listing), the tar stream restore receives (and the
-- reports of its tar), and the exclude patterns the sandbox can apply itself (as `case` and find -name
-- patterns).
--
-- Every snippet works on "$ferry_r", the remote dir, and needs only a POSIX shell and tar.
local core = require "ferry.core"
local util = require "ferry.util"

local M = {}

--- The dir at the top of the remote dir that ferry keeps for itself (assets, the install marker and lock,
--- the sync marker); prepare never clears it and restore never brings it back.
M.RUNTIME_DIR = ".ferry-runtime"

local RESTORE_MISSING = "ferry-restore: missing"
local q = core.sh_quote

--- The message of a sandbox command that failed: "<what>: timed out" or "<what>: exit code N[: <tail>]",
--- the tail being the last 3 non-blank lines of its stderr (at most 480 characters).
---@param what string
---@param res table  the command's result
---@return string
function M.failure(what, res)
  if res.timed_out then return what .. ": timed out" end
  local why = M.tail(res.stderr)
  return string.format("%s: exit code %s%s", what, tostring(res.code or res.signal), why ~= "" and (": " .. why) or "")
end

--- The last 3 non-blank lines of a sandbox command's output joined by " | ", cut to 480 characters, without
--- the lines ferry's own scripts print ("ferry-install: ...").
---@param text string|nil
---@return string
function M.tail(text)
  return util.tail(text, { sep = " | ", max = 480, cut = "start", skip = "^ferry%-install: " })
end

-- ---- excludes the sandbox applies ----

local SIMPLE_NAME = "^[%w%._%-%*%?%+@,=:~ ]+$" -- one component, read alike by `case`, find -name and us

-- A one-component exclude pattern as a shell `case` pattern: literal runs quoted, '*' and '?' bare.
local function case_pattern(p)
  return (p:gsub("[^%*%?]+", function(lit) return q(lit) end))
end

--- The exclude patterns the sandbox can apply itself, by kind: top-level names (`case`, any tar) and names
--- at any depth (find -name, when find and tar can read a NUL-separated list); each for any entry or for
--- directories only. The sandbox may leave out less than the local excludes do, never more (a path missing
--- from the stream reads as deleted remotely), so nothing is left out when a pattern re-includes ('!').
---@param patterns string[]
---@return table  {top, top_dirs (case patterns), any, any_dirs (quoted find -name arguments), names (the
---                names of any and any_dirs as written)}
function M.excludes(patterns)
  local x = { top = {}, top_dirs = {}, any = {}, any_dirs = {}, names = {} }
  for _, p in ipairs(patterns) do
    if p:sub(1, 1) == "!" then return { top = {}, top_dirs = {}, any = {}, any_dirs = {}, names = {} } end
  end
  for _, p in ipairs(patterns) do
    local body, dirs = p:match("^(.-)(/?)$")
    local anchored = body:match("^/(.+)$")
    local name = anchored or body
    if name:match(SIMPLE_NAME) then
      local top = dirs == "/" and x.top_dirs or x.top
      top[#top + 1] = case_pattern(name)
      if not anchored then
        local any = dirs == "/" and x.any_dirs or x.any
        any[#any + 1] = q(name)
        x.names[#x.names + 1] = name
      end
    end
  end
  return x
end

local function find_names(list)
  local parts = {}
  for _, n in ipairs(list) do parts[#parts + 1] = "-name " .. n end
  return table.concat(parts, " -o ")
end

-- find's test for the excluded names the sandbox can apply at any depth (nil when there are none).
local function prune_condition(x)
  local prune = {}
  if #x.any_dirs > 0 then prune[#prune + 1] = "-type d \\( " .. find_names(x.any_dirs) .. " \\)" end
  if #x.any > 0 then prune[#prune + 1] = "\\( " .. find_names(x.any) .. " \\)" end
  if #prune == 0 then return nil end
  return "\\( " .. table.concat(prune, " -o ") .. " \\)"
end

-- find's expression that prunes the excluded names at any depth, then prints the rest NUL-terminated.
local function find_expression(x)
  local cond = prune_condition(x)
  if not cond then return "-print0" end
  return cond .. " -prune -o -print0"
end

-- ---- prepare: clear, delete, sync ----

local function quoted(names)
  local out = {}
  for _, n in ipairs(names) do out[#out + 1] = q(n) end
  return out
end

--- Shell lines that remove everything in "$ferry_r" but the names in `keep`.
---@param keep string[]
---@return string
function M.clear_lines(keep)
  return table.concat({
    'cd "$ferry_r" || exit 1',
    "set --",
    "for f in * .[!.]* ..?*; do",
    "  case $f in " .. table.concat(quoted(keep), "|") .. ") continue ;; esac",
    '  if [ -e "$f" ] || [ -L "$f" ]; then set -- "$@" "$f"; fi',
    "done",
    'if [ $# -gt 0 ]; then rm -rf -- "$@" || exit 1; fi',
    "cd / || exit 1",
  }, "\n")
end

--- Shell lines that remove the relative paths `delete` under "$ferry_r" ("" for none).
---@param delete string[]
---@return string
function M.delete_lines(delete)
  if #delete == 0 then return "" end
  local words = {}
  for i, rel in ipairs(delete) do words[i] = q("./" .. rel) end
  return 'cd "$ferry_r" || exit 1\nrm -rf -- ' .. table.concat(words, " ") .. " || exit 1\ncd / || exit 1"
end

-- Shell lines (cwd "$ferry_r") that set "$@" to "./<name>" for each top-level entry but the `keep` names.
local function top_entries(keep)
  return table.concat({
    "set --",
    "for f in * .[!.]* ..?*; do",
    "  case $f in " .. table.concat(quoted(keep), "|") .. ") continue ;; esac",
    '  if [ -e "$f" ] || [ -L "$f" ]; then set -- "$@" "./$f"; fi',
    "done",
  }, "\n")
end

--- The sync command: `first` (a line to run before anything, e.g. the install check, or nil), create the
--- remote dir and its runtime dir, `head` (clear_lines or delete_lines), extract the tar stream on stdin
--- (when `extract`), run `after` (lines run in a subshell, or nil), then `tail` (ferry.listing's record
--- lines: the marker and the listing; what it prints on stdout is the command's stdout).
---@param remote_dir string
---@param opts table  first, head, extract, after, tail
---@return string
function M.sync_script(remote_dir, opts)
  return (opts.first and opts.first .. "\n" or "")
    .. "ferry_r=" .. q(remote_dir) .. "\nmkdir -p \"$ferry_r/" .. M.RUNTIME_DIR .. "\" || exit 1\n"
    .. opts.head .. "\n" .. (opts.extract and 'tar -x -f - -C "$ferry_r" || exit $?\n' or "")
    .. (opts.after and "(\n" .. opts.after .. "\n)\n" or "")
    .. (opts.tail or "exit 0")
end

--- Shell lines (cwd "$ferry_r") that set "$@" to "./<name>" for each top-level entry but the `keep` names.
---@param keep string[]
---@return string
function M.top_entries(keep)
  return top_entries(keep)
end

-- ---- restore ----

--- The command that writes the remote workspace as a tar stream on stdout: names "./<top>/...", without the
--- runtime dir, the `preserve` names and the `excludes` the sandbox can apply (see M.excludes). Exits 3
--- when the remote dir is missing (see M.restore_dir_missing). opts: before (lines run first in the remote
--- dir, in a subshell), members (paths relative to the remote dir sent first when they are files, whatever
--- the excludes: files `before` left in the runtime dir, which restore never writes to the workspace).
---@param remote_dir string
---@param preserve string[]
---@param excludes string[]
---@param opts table|nil
---@return string
function M.restore_script(remote_dir, preserve, excludes, opts)
  opts = opts or {}
  local extra = {}
  for i, rel in ipairs(opts.members or {}) do extra[i] = q("./" .. rel) end
  local skip = quoted(preserve)
  if #skip == 0 then skip[1] = q(M.RUNTIME_DIR) end
  local x = M.excludes(excludes)
  for _, pat in ipairs(x.top) do skip[#skip + 1] = pat end
  local lines = {
    "ferry_r=" .. q(remote_dir),
    'if [ ! -d "$ferry_r" ]; then echo "' .. RESTORE_MISSING .. '" >&2; exit 3; fi',
    'cd "$ferry_r" || exit 1',
    opts.before and "(\n" .. opts.before .. "\n)" or ":",
    "ferry_m=",
    #extra > 0 and "for f in " .. table.concat(extra, " ") .. '; do [ -f "$f" ] && ferry_m="$ferry_m $f"; done' or ":",
    "set --",
    "for f in * .[!.]* ..?*; do",
    '  [ -e "$f" ] || [ -L "$f" ] || continue',
    "  case $f in " .. table.concat(skip, "|") .. ") continue ;; esac",
  }
  if #x.top_dirs > 0 then
    lines[#lines + 1] = '  if [ -d "$f" ] && [ ! -L "$f" ]; then case $f in ' .. table.concat(x.top_dirs, "|")
      .. ") continue ;; esac; fi"
  end
  for _, line in ipairs {
    '  set -- "$@" "./$f"',
    "done",
    -- the members' names are ferry's own (no space or quote in them): $ferry_m is split on purpose
    '[ $# -gt 0 ] || [ -n "$ferry_m" ] || exit 0',
    "if find . -maxdepth 0 -print0 >/dev/null 2>&1 &&",
    "  tar -c -f - --hard-dereference --null --no-recursion -T /dev/null >/dev/null 2>&1; then",
    -- GNU tar: hard-linked files travel as files (a hard link entry is refused on arrival)
    "  { for f in $ferry_m; do printf '%s\\0' \"$f\"; done",
    '    if [ $# -gt 0 ]; then find "$@" ' .. find_expression(x) .. "; fi",
    "  } | tar -c -f - --hard-dereference --null --no-recursion -T -",
    "  exit $?",
    "fi",
    'exec tar -c -f - -- $ferry_m "$@"',
  } do
    lines[#lines + 1] = line
  end
  return table.concat(lines, "\n")
end

-- GNU tar's warnings about a file read while it changed (exit code 1): the file's bytes in the archive may be
-- a mix of two versions, or zeros where it shrank.
local TORN = { ": file changed as we read it$", ": File shrank by %d+ bytes?; padding with zeros$",
  ": File removed before we read it$" }
local BENIGN = { ": socket ignored$", ": door ignored$" } -- nothing of these travels anyway

local UNESCAPE = { a = "\a", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", v = "\v" }

--- A name as GNU tar's default quoting style ("escape", with ':' quoted) printed it, back to its bytes.
---@param s string
---@return string
function M.tar_unquote(s)
  local out, i = {}, 1
  while true do
    local j = s:find("\\", i, true)
    if not j then break end
    out[#out + 1] = s:sub(i, j - 1)
    local octal = s:match("^[0-7][0-7]?[0-7]?", j + 1)
    if octal then
      out[#out + 1], i = string.char(tonumber(octal, 8) % 256), j + 1 + #octal
    else
      local c = s:sub(j + 1, j + 1)
      out[#out + 1], i = UNESCAPE[c] or c, j + 2
    end
  end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

--- What a restore stream's tar said on stderr: the names (as archived, "./rel") it reported as changed,
--- shrunk or removed while it read them, and the lines that are neither those nor harmless.
---@param stderr string|nil
---@return string[] torn, string[] other
function M.torn_reports(stderr)
  local torn, other = {}, {}
  for line in (stderr or ""):gmatch("[^\n]+") do
    local body
    for _, suffix in ipairs(TORN) do
      local at = line:find(suffix)
      if at then body = line:sub(1, at - 1) end
    end
    local name = body and body:match("^.-: (.+)$")
    if name then
      torn[#torn + 1] = M.tar_unquote(name)
    else
      local benign = false
      for _, suffix in ipairs(BENIGN) do benign = benign or line:find(suffix) ~= nil end
      if not benign and line:find("%S") then other[#other + 1] = line end
    end
  end
  return torn, other
end

--- The command that sends again, as a tar stream like the restore command's, the files `rels` of the remote
--- dir that still exist (GNU tar: only asked after GNU tar reported them torn). Nil when the command would
--- be too long for one argument.
---@param remote_dir string
---@param rels string[]
---@return string|nil
function M.refetch_script(remote_dir, rels)
  local words = {}
  for i, rel in ipairs(rels) do words[i] = q("./" .. rel) end
  local script = table.concat({
    "ferry_r=" .. q(remote_dir),
    'cd "$ferry_r" || exit 1',
    "set --",
    "for f in " .. table.concat(words, " ") .. "; do",
    '  if [ -e "$f" ] || [ -L "$f" ]; then set -- "$@" "$f"; fi',
    "done",
    "[ $# -gt 0 ] || exit 0",
    'exec tar -c -f - --hard-dereference --no-recursion -- "$@"',
  }, "\n")
  if #script > 96 * 1024 then return nil end
  return script
end

--- True when the restore command's result says the remote dir does not exist.
---@param res table
---@return boolean
function M.restore_dir_missing(res)
  return res.code == 3 and (res.stderr or ""):find(RESTORE_MISSING, 1, true) ~= nil
end

return M
