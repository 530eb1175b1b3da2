--- ferry.remote: the shell that prepare and restore run in the sandbox on the remote dir, and what it prints:
-- clearing the remote dir but the preserved names, deleting paths, the sync command (clear or delete,
-- extract, then the marker and the listing), the listing of the remote tree (NUL-separated records read by
-- core.tree_parse_listing, with the SHA-256 of the files changed since the marker), the tar stream restore
-- receives, and the exclude patterns the sandbox can apply itself (as `case` and find -name patterns).
--
-- The marker, `.ferry-runtime/sync.mark`, holds the id of the sync that left it (a random id the state
-- records). A listing marks each entry whose status changed after the marker's mtime (find -cnewer: a write,
-- a chmod, a rename, a utime all set the ctime to the clock, which nothing but the clock sets), and when the
-- marker is the one the state recorded it lists only those entries and the children of the directories
-- among them (a creation, removal or rename in a directory changes the directory too): the rest of the tree
-- is as the state recorded it (README "Delta re-sync"). Otherwise it lists everything.
--
-- Every snippet works on "$ferry_r", the remote dir, and needs only a POSIX shell and tar; the listing needs
-- GNU find (-printf), which the sync command checks before it lists (a sandbox without it gets full syncs).
local core = require "ferry.core"
local util = require "ferry.util"

local M = {}

--- The dir at the top of the remote dir that ferry keeps for itself (assets, the install marker and lock,
--- the sync marker); prepare never clears it and restore never brings it back.
M.RUNTIME_DIR = ".ferry-runtime"

local MARK_FILE = M.RUNTIME_DIR .. "/sync.mark"
-- kind, mode, size, mtime, inode, device, ./path, link target; after "c" (changed since the marker) or "u"
local LIST_FORMAT = "%y\\0%m\\0%s\\0%T@\\0%i\\0%D\\0%p\\0%l\\0"
local HAS_GNU_FIND = "find . -maxdepth 0 -printf '' >/dev/null 2>&1"
-- prints "<path>\0<sha256sum output>\0" for each argument; an unreadable file gets an empty hash
local HASH_LOOP = 'for f do printf "%s\\0" "$f"; h=$(sha256sum < "$f" 2>/dev/null) || h=; printf "%s\\0" "$h"; done'
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

local REGEX = { ["."] = "\\.", ["+"] = "\\+", ["*"] = "[^/]*", ["?"] = "[^/]" }

-- GNU find's test for the excluded names of M.excludes in a listing: one regular expression for all of them
-- (a -name per pattern costs a match per pattern and entry: a third of a listing's time for the defaults).
-- A directory-only name is tested on files too: the listing only leaves out of its hashes a file it prunes.
-- Follows "-regextype posix-extended" right after the start points. Nil when there is no name.
local function listing_prune(x)
  if #x.names == 0 then return nil end
  local alts = {}
  for i, n in ipairs(x.names) do alts[i] = n:gsub("[%.%+%*%?]", REGEX) end
  return "-regex " .. q(".*/(" .. table.concat(alts, "|") .. ")")
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

-- find's expression printing an entry as a record: "c" when `test` (a change after the marker) holds, else "u".
local function print_expr(test)
  return "\\( " .. test .. " -printf " .. q("c\\0" .. LIST_FORMAT) .. " -o -printf " .. q("u\\0" .. LIST_FORMAT)
    .. " \\)"
end

-- Shell lines (in "$ferry_r", "$@" the top-level entries) setting $ferry_m to the marker, $ferry_new to the
-- find test of a change after it (-false when there is none), and $ferry_l to a scratch file prefix.
local function listing_setup()
  return table.concat({
    -- names are bytes (as ferry's matcher reads them), and the byte locale's matching is the faster
    "LC_ALL=C; export LC_ALL",
    "ferry_m=" .. q(MARK_FILE) .. " ferry_l=" .. q(M.RUNTIME_DIR .. "/listing.") .. "$$",
    'if [ -f "$ferry_m" ]; then ferry_new="-cnewer $ferry_m"; else ferry_new=-false; fi',
  }, "\n")
end

-- The sha256sum lines for the files named NUL-separated in "$ferry_l.f": "H", then path and digest pairs.
local function hash_lines()
  return table.concat({
    "printf 'H\\0'",
    'if [ -s "$ferry_l.f" ] && command -v sha256sum >/dev/null 2>&1; then',
    "  xargs -0 sh -c " .. q(HASH_LOOP) .. ' sh < "$ferry_l.f" || exit 1',
    "fi",
  }, "\n")
end

-- Every entry under "$ferry_r" but the kept names ("F"; an excluded name the sandbox can match is listed,
-- not entered), each marked changed after the marker or not; with `hashes` "H" and the SHA-256 of each file
-- changed after the marker (of every file when `hashes` is "all").
local function full_lines(cond, hashes)
  local parts = {}
  if cond then parts[#parts + 1] = cond .. " -prune" end
  if hashes then
    parts[#parts + 1] = (hashes == "all" and "-type f" or "-type f $ferry_new") .. ' -fprint0 "$ferry_l.f"'
  end
  local select = #parts > 0 and " \\( " .. table.concat(parts, " -o ") .. " -o -true \\)" or ""
  local lines = {
    ': > "$ferry_l.f" || exit 1',
    "printf 'F\\0'",
    'if [ $# -gt 0 ]; then find "$@" -regextype posix-extended ' .. print_expr("$ferry_new") .. select
      .. " || exit 1; fi",
  }
  if hashes then lines[#lines + 1] = hash_lines() end
  return table.concat(lines, "\n")
end

-- Only what changed after the marker "$ferry_m" ("I"): "R" and the top-level entries when the remote dir
-- itself did, each changed entry, every entry of each changed directory (not of a pruned one), then "H" and
-- the SHA-256 of each changed file.
local function incremental_lines(cond)
  local changed = '-cnewer "$ferry_m"'
  local children = 'c=$1 u=$2; shift 2; find "$@" -mindepth 1 -maxdepth 1 \\( -cnewer "$0" -printf "$c" -o '
    .. '-printf "$u" \\)'
  return table.concat({
    ': > "$ferry_l.d" && : > "$ferry_l.f" || exit 1',
    "printf 'I\\0'",
    -- (one find each: when the remote dir changed, "R" and then its top-level entries)
    'if [ $# -gt 0 ]; then find . -maxdepth 0 ' .. changed .. " -printf 'R\\0' -exec find \"$@\" -maxdepth 0 "
      .. print_expr(changed) .. " \\; || exit 1",
    "else find . -maxdepth 0 " .. changed .. " -printf 'R\\0' || exit 1; fi",
    'if [ $# -gt 0 ]; then',
    '  find "$@" -regextype posix-extended \\( ' .. changed .. " -printf " .. q("c\\0" .. LIST_FORMAT)
      .. " -o -true \\) \\( "
      .. (cond and cond .. " -prune -o " or "") .. changed .. ' \\( -type d -fprint0 "$ferry_l.d" -o -type f -fprint0 '
      .. '"$ferry_l.f" \\) -o -true \\) || exit 1',
    "fi",
    'if [ -s "$ferry_l.d" ]; then',
    "  xargs -0 sh -c " .. q(children) .. ' "$ferry_m" ' .. q("c\\0" .. LIST_FORMAT) .. " "
      .. q("u\\0" .. LIST_FORMAT) .. ' < "$ferry_l.d" || exit 1',
    "fi",
    hash_lines(),
  }, "\n")
end

-- Shell lines printing the listing (cwd anywhere, "$ferry_r" set): with `since` (the id the marker must
-- hold) only what changed after the marker when it holds it, else everything; `hashes` as full_lines'.
-- Then "E". Needs GNU find; exits 1 when find fails.
local function list_lines(keep, patterns, hashes, since)
  local cond = listing_prune(M.excludes(patterns))
  local lines = {
    'cd "$ferry_r" || exit 1',
    top_entries(keep),
    listing_setup(),
  }
  if since then
    lines[#lines + 1] = 'ferry_id=; if [ -f "$ferry_m" ]; then { IFS= read -r ferry_id || :; } < "$ferry_m"; fi'
    lines[#lines + 1] = 'if [ "$ferry_id" = ' .. q(since) .. " ]; then"
    lines[#lines + 1] = incremental_lines(cond)
    lines[#lines + 1] = "else"
    lines[#lines + 1] = full_lines(cond, hashes)
    lines[#lines + 1] = "fi"
  else
    lines[#lines + 1] = full_lines(cond, hashes)
  end
  lines[#lines + 1] = 'rm -f "$ferry_l.d" "$ferry_l.f"'
  lines[#lines + 1] = "printf 'E\\0'"
  return table.concat(lines, "\n")
end

-- Shell lines (in "$ferry_r") that wait, at most ~2 s, until the sandbox's clock has moved past the marker's
-- mtime, so that nothing changed after this command can carry the marker's time (and go unseen).
local function tick_lines()
  return table.concat({
    "ferry_i=0",
    "while [ $ferry_i -lt 200 ]; do",
    '  : > "$ferry_l.t" || break',
    '  [ -n "$(find "$ferry_l.t" -newer "$ferry_m" 2>/dev/null)" ] && break',
    "  ferry_i=$((ferry_i + 1)); sleep 0.01 2>/dev/null || sleep 1",
    "done",
    'rm -f "$ferry_l.t"',
  }, "\n")
end

-- Shell lines ending a sync: leave the marker with the id `id` (in a new file renamed over the old one), list
-- the tree (only what changed after the earlier marker when it held `since`; everything else), wait for the
-- clock to pass the marker; base64 for a channel that is not 8-bit clean. A failure here only leaves the
-- listing out (the next prepare is a full sync), never the sync.
local function record_lines(keep, patterns, binary, id, since)
  local cond = listing_prune(M.excludes(patterns))
  local body = {
    'cd "$ferry_r" || exit 1',
    top_entries(keep),
    listing_setup(),
    'ferry_old=; if [ -f "$ferry_m" ]; then { IFS= read -r ferry_old || :; } < "$ferry_m"; fi',
    'if [ -f "$ferry_m" ]; then mv -f "$ferry_m" "$ferry_m.prev" || exit 1; fi',
    "printf '%s' " .. q(id) .. ' > "$ferry_m.new" && mv -f "$ferry_m.new" "$ferry_m" || exit 1',
  }
  if since then
    body[#body + 1] = 'if [ "$ferry_old" = ' .. q(since) .. ' ] && [ -f "$ferry_m.prev" ]; then'
    body[#body + 1] = 'ferry_m="$ferry_m.prev"'
    body[#body + 1] = incremental_lines(cond)
    body[#body + 1] = "ferry_m=" .. q(MARK_FILE)
    body[#body + 1] = "else"
    body[#body + 1] = full_lines(cond, false)
    body[#body + 1] = "fi"
  else
    body[#body + 1] = full_lines(cond, false)
  end
  for _, line in ipairs { 'rm -f "$ferry_m.prev" "$ferry_l.d" "$ferry_l.f"', "printf 'E\\0'", tick_lines() } do
    body[#body + 1] = line
  end
  return "if " .. HAS_GNU_FIND .. "; then\n(\n" .. table.concat(body, "\n") .. "\n)" .. (binary and "" or " | base64")
    .. "\nfi\nexit 0"
end

--- The sync command: `first` (a line to run before anything, e.g. the install check, or nil), create the
--- remote dir and its runtime dir, `head` (clear_lines or delete_lines), extract the tar stream on stdin
--- (when `extract`), run `after` (lines run in a subshell, or nil), then leave the marker with the id `id`
--- and print the listing on stdout (base64 unless `binary`): what changed since the marker that held `since`
--- when it still held it (a delta), else everything.
---@param remote_dir string
---@param opts table  first, head, extract, after, keep (preserved names), patterns (excludes), binary, id, since
---@return string
function M.sync_script(remote_dir, opts)
  return (opts.first and opts.first .. "\n" or "")
    .. "ferry_r=" .. q(remote_dir) .. "\nmkdir -p \"$ferry_r/" .. M.RUNTIME_DIR .. "\" || exit 1\n"
    .. opts.head .. "\n" .. (opts.extract and 'tar -x -f - -C "$ferry_r" || exit $?\n' or "")
    .. (opts.after and "(\n" .. opts.after .. "\n)\n" or "")
    .. record_lines(opts.keep, opts.patterns, opts.binary, opts.id, opts.since)
end

--- The listing command of a delta: the tree under the remote dir but the `keep` names, with the SHA-256 of
--- each file changed after the last sync's marker; only what changed after it when the marker holds
--- opts.since (the id the state recorded). Exits 3 when the remote dir is missing, 4 without GNU find.
--- opts (for an adopted workspace): all (hash every file), before (lines run first once the checks passed,
--- with "$ferry_r" set), first (a line run before anything, e.g. the install check).
---@param remote_dir string
---@param keep string[]
---@param patterns string[]
---@param opts table|nil
---@return string
function M.list_script(remote_dir, keep, patterns, opts)
  opts = opts or {}
  return (opts.first and opts.first .. "\n" or "") .. "ferry_r=" .. q(remote_dir) .. "\n"
    .. 'if [ ! -d "$ferry_r" ]; then echo "ferry-delta: $ferry_r is missing" >&2; exit 3; fi\n'
    .. "if ! " .. HAS_GNU_FIND .. '; then echo "ferry-delta: find cannot -printf" >&2; exit 4; fi\n'
    .. (opts.before and opts.before .. "\n" or "")
    .. list_lines(keep, patterns, opts.all and "all" or true, opts.since)
end

--- A consumer of a command's stdout that reads the listing in it as it arrives (core.tree_listing_reader,
--- through a base64 decoder when `b64`): on_stdout(chunk), and finish() -> the listing's tree and info, or
--- nil and why.
---@param b64 boolean
---@return function on_stdout, function finish
function M.listing_reader(b64)
  local reader, decoder, failure = core.tree_listing_reader(), b64 and core.b64_decoder(), nil
  local function on_stdout(chunk)
    if failure then return end
    local bytes, err = chunk, nil
    if decoder then bytes, err = decoder:update(chunk) end
    if bytes then bytes, err = reader:feed(bytes) end
    if not bytes then failure = err end
  end
  local function finish()
    if failure then return nil, failure end
    if decoder then
      local ok, err = pcall(decoder.finish, decoder)
      if not ok then return nil, tostring(err) end
    end
    return reader:finish()
  end
  return on_stdout, finish
end

--- The marker file's path relative to the remote dir.
M.MARK_FILE = MARK_FILE

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
