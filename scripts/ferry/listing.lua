--- ferry.listing: the sandbox's listing of the remote tree, and the marker a sync leaves: the listing command
-- of a delta, the lines a sync command ends with (leave the marker, list), and the reading of what they print
-- (NUL-separated records, core.tree_listing_reader).
--
-- The marker, `.ferry-runtime/sync.mark`, holds the id of the sync that left it (a random id the state
-- records). A listing marks each entry whose status changed after the marker's mtime (find -cnewer: a write,
-- a chmod, a rename, a utime all set the ctime to the clock, which nothing but the clock sets), and when the
-- marker is the one the state recorded it lists only those entries and every entry of the directories among
-- them (a creation, removal or rename in a directory changes the directory too): the rest of the tree is as
-- the state recorded it (README "Delta re-sync", ferry.delta.current). Otherwise it lists everything.
--
-- The listing needs GNU find (-printf), which the sync command checks before it lists (a sandbox without it
-- gets full syncs); its finds run in the byte locale, where names are bytes as ferry's matcher reads them.
local core = require "ferry.core"
local remote = require "ferry.remote"

local M = {}

local MARK_FILE = remote.RUNTIME_DIR .. "/sync.mark"
-- kind, mode, size, mtime, inode, device, ./path, link target; after "c" (changed since the marker) or "u"
local LIST_FORMAT = "%y\\0%m\\0%s\\0%T@\\0%i\\0%D\\0%p\\0%l\\0"
local HAS_GNU_FIND = "find . -maxdepth 0 -printf '' >/dev/null 2>&1"
-- prints "<path>\0<sha256sum output>\0" for each argument; an unreadable file gets an empty hash
local HASH_LOOP = 'for f do printf "%s\\0" "$f"; h=$(sha256sum < "$f" 2>/dev/null) || h=; printf "%s\\0" "$h"; done'
local q = core.sh_quote
local top_entries = remote.top_entries

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
    "ferry_m=" .. q(MARK_FILE) .. " ferry_l=" .. q(remote.RUNTIME_DIR .. "/listing.") .. "$$",
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
  local cond = listing_prune(remote.excludes(patterns))
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

--- Shell lines ending a sync command (ferry.remote.sync_script's `tail`): leave the marker with the id `id` (in
--- a new file renamed over the old one), list the tree (only what changed after the earlier marker when it
--- held `since`; everything else), wait for the clock to pass the marker; base64 for a channel that is not
--- 8-bit clean. A failure here only leaves the listing out (the next prepare is a full sync), never the sync.
---@param keep string[]  the preserved names
---@param patterns string[]  the excludes
---@param binary boolean
---@param id string
---@param since string|nil
---@return string
function M.record_lines(keep, patterns, binary, id, since)
  local cond = listing_prune(remote.excludes(patterns))
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
function M.reader(b64)
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

return M

