--- ferry.git_remote: the sandbox side of git-aware sync, as shell run with the sandbox's own git (so the
-- repository and index formats are always the sandbox git's), and the host calls that run it.
--
-- Inbound (M.inbound_lines): from the inputs of ferry.git_pack, extracted to INPUTS (relative to the remote
-- dir), and the working tree ferry already extracted, build REMOTE_DIR/.git: a fresh repository (mode
-- "full", "unborn") or the existing one brought forward ("thin", "same"); the branch at HEAD (no checkout:
-- the files came in the tar stream); the index rebuilt as the host's (read-tree HEAD, the staged patch
-- applied with `apply --cached`, intent-to-add entries, skip-worktree for tracked files ferry keeps home,
-- then `update-index --refresh`); user.name/user.email. It prints one line on stderr and exits:
--   0  "ferry-git: ok <head>"          the repository is built
--   5  "ferry-git: no-git"             no git in the sandbox: the caller keeps the plain files, with a warning
--   6  "ferry-git: need-full <why>"    a delta could not be applied (no repository, the commit it builds on is
--                                      missing, the bundle's prerequisites are missing): send mode "full"
--   1  "ferry-git: failed: <step>"     with git's own message before it
-- Outbound (M.outbound_lines): on stdout, NUL-terminated fields "status=ok|no-git|no-repo|no-ref", "on=<what
-- HEAD points to>", "head=<the ref's commit>", "count=<commits after base>", "kind=thin|full|none",
-- "bytes=<bundle size>", then "dirty" and one `git status --porcelain -z` record per dirty path, then "end",
-- then the bundle's bytes (`git bundle create <ref> ^<base>`, or the whole ref with kind=full: when asked,
-- or when base is missing in the sandbox). Exit 0, or 1 with "ferry-git: failed: <step>" on stderr.
local core = require "ferry.core"
local git_pack = require "ferry.git_pack"
local remote = require "ferry.remote"
local tar_members = require "ferry.tar_members"
local util = require "ferry.util"

local M = {}

--- Where the inputs and the outbound bundle live, relative to the remote dir (inside ferry's runtime dir:
--- never cleared by a sync, never restored).
M.INPUTS = remote.RUNTIME_DIR .. "/git/in"
M.OUTBOUND = remote.RUNTIME_DIR .. "/git/out.bundle"

--- What the outbound lines leave for restore's tar stream when they run inside restore's command
--- (M.folded_lines): the report fields, their stderr, the bundle (relative to the remote dir).
M.FOLDED = { fields = remote.RUNTIME_DIR .. "/git/out.fields", stderr = remote.RUNTIME_DIR .. "/git/out.stderr",
  bundle = M.OUTBOUND }

--- Exit codes of the inbound lines.
M.NO_GIT, M.NEED_FULL = 5, 6

--- Fallback identity for commits made in the sandbox when the host has no user.name / user.email.
M.FALLBACK_NAME, M.FALLBACK_EMAIL = "ferry sandbox", "ferry@sandbox.invalid"

local q = core.sh_quote
local NAMES = git_pack.NAMES
local MAX_REPORT = 8 * 1024 * 1024

-- The sandbox's environment must not point git elsewhere.
local PRELUDE = table.concat({
  "unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES"
    .. " GIT_COMMON_DIR GIT_NAMESPACE GIT_GRAFT_FILE GIT_SHALLOW_FILE GIT_REPLACE_REF_BASE GIT_PREFIX",
  "export GIT_NO_REPLACE_OBJECTS=1 GIT_TERMINAL_PROMPT=0 LC_ALL=C",
}, "\n")

local function quote_all(list)
  local out = {}
  for i, s in ipairs(list) do out[i] = q(s) end
  return out
end

local function need_git(no_git)
  return "if ! command -v git >/dev/null 2>&1; then " .. no_git .. "; fi"
end

-- Lines that make .git anew: an empty repository on the branch, the shallow boundary, the bundle fetched.
local function fresh_lines(pack)
  local lines = {
    "rm -rf .git && git init -q --template= . >/dev/null || ferry_fail 'git init'",
  }
  if pack.branch then
    lines[#lines + 1] = "git symbolic-ref HEAD " .. q("refs/heads/" .. pack.branch)
      .. " || ferry_fail 'git symbolic-ref'"
  end
  if pack.mode == "full" then
    lines[#lines + 1] = 'if [ -f "$ferry_in/' .. NAMES.shallow .. '" ]; then cp "$ferry_in/' .. NAMES.shallow
      .. '" .git/shallow || ferry_fail "writing .git/shallow"; fi'
  end
  return lines
end

-- Lines that check the existing repository can take a delta (else exit 6).
local function delta_check_lines(pack)
  local lines = {
    '[ -d .git ] || ferry_need_full "no repository"',
    "git cat-file -e " .. q(pack.have .. "^{commit}") .. ' 2>/dev/null || ferry_need_full "'
      .. pack.have .. ' is missing"',
  }
  if pack.mode == "thin" then
    lines[#lines + 1] = 'git bundle verify -q "$ferry_in/' .. NAMES.bundle
      .. '" >/dev/null 2>&1 || ferry_need_full "the bundle\'s prerequisites are missing"'
  end
  return lines
end

local function branch_lines(pack)
  local lines = {}
  if pack.mode == "full" or pack.mode == "thin" then
    lines[#lines + 1] = 'git fetch -q --no-tags "$ferry_in/' .. NAMES.bundle .. '" ' .. q(pack.bundle_ref)
      .. " || ferry_fail 'git fetch of the bundle'"
    lines[#lines + 1] = "rm -f .git/FETCH_HEAD"
  end
  if pack.mode == "unborn" then return lines end
  lines[#lines + 1] = "git cat-file -e " .. q(pack.head .. "^{commit}") .. " || ferry_fail 'the bundle lacks "
    .. pack.head .. "'"
  if pack.branch then
    local ref = q("refs/heads/" .. pack.branch)
    lines[#lines + 1] = "git update-ref " .. ref .. " " .. pack.head .. " && git symbolic-ref HEAD " .. ref
      .. " || ferry_fail 'git update-ref'"
  else
    lines[#lines + 1] = "git update-ref --no-deref HEAD " .. pack.head .. " || ferry_fail 'git update-ref HEAD'"
  end
  return lines
end

local function index_lines(pack)
  local lines = { "rm -f .git/index" }
  if pack.mode ~= "unborn" then lines[#lines + 1] = "git read-tree HEAD || ferry_fail 'git read-tree HEAD'" end
  for _, l in ipairs {
    'if [ -f "$ferry_in/' .. NAMES.patch .. '" ]; then git apply --cached --whitespace=nowarn "$ferry_in/'
      .. NAMES.patch .. '" || ferry_fail "git apply --cached (the staged changes)"; fi',
    'if [ -f "$ferry_in/' .. NAMES.intent .. '" ]; then GIT_LITERAL_PATHSPECS=1 xargs -0 git add -N -- < "$ferry_in/'
      .. NAMES.intent .. '" || ferry_fail "git add -N"; fi',
    'if [ -f "$ferry_in/' .. NAMES.skip .. '" ]; then git update-index --skip-worktree -z --stdin < "$ferry_in/'
      .. NAMES.skip .. '" || ferry_fail "git update-index --skip-worktree"; fi',
    "git update-index -q --refresh >/dev/null 2>&1",
  } do
    lines[#lines + 1] = l
  end
  return lines
end

-- .git/info/exclude: the runtime dir (and the names in pack.keep_out) are no part of the work tree, so the
-- agent's `git add -A` never commits them (assets may hold credentials).
local function exclude_lines(pack)
  local patterns = { "/" .. remote.RUNTIME_DIR .. "/" }
  for _, name in ipairs(pack.keep_out or {}) do patterns[#patterns + 1] = "/" .. name end
  return { "mkdir -p .git/info && printf '%s\\n' " .. table.concat(quote_all(patterns), " ")
    .. " > .git/info/exclude || ferry_fail 'writing .git/info/exclude'" }
end

local function identity_lines(pack)
  local id = pack.identity or {}
  return {
    "git config user.name " .. q(id.name or M.FALLBACK_NAME) .. " || ferry_fail 'git config user.name'",
    "git config user.email " .. q(id.email or M.FALLBACK_EMAIL) .. " || ferry_fail 'git config user.email'",
  }
end

--- The inbound lines (see the top of this file) for `pack` (ferry.git_pack's, or a table with its fields:
--- mode, head, branch, bundle_ref, have, identity; plus keep_out: names at the top of the remote dir that are
--- no part of the work tree, such as the adapter's preserved names, for .git/info/exclude besides the
--- runtime dir), the inputs being in REMOTE_DIR/M.INPUTS. They end with
--- `exit`: run them as a script, or in a subshell `( ... )` inside another one.
---@param remote_dir string
---@param pack table
---@return string
function M.inbound_lines(remote_dir, pack)
  local lines = {
    PRELUDE,
    "ferry_r=" .. q(remote_dir) .. ' ferry_in="$ferry_r/' .. M.INPUTS .. '"',
    "ferry_fail() { echo \"ferry-git: failed: $1\" >&2; exit 1; }",
    "ferry_need_full() { echo \"ferry-git: need-full $1\" >&2; exit " .. M.NEED_FULL .. "; }",
    need_git("echo 'ferry-git: no-git' >&2; exit " .. M.NO_GIT),
    'cd "$ferry_r" || ferry_fail "cd $ferry_r"',
  }
  local delta = pack.mode == "thin" or pack.mode == "same"
  local parts = { delta and delta_check_lines(pack) or fresh_lines(pack), exclude_lines(pack), branch_lines(pack),
    index_lines(pack), identity_lines(pack) }
  for _, part in ipairs(parts) do table.move(part, 1, #part, #lines + 1, lines) end
  lines[#lines + 1] = 'rm -rf "$ferry_in"'
  lines[#lines + 1] = 'echo "ferry-git: ok $(git rev-parse -q --verify HEAD)" >&2'
  lines[#lines + 1] = "exit 0"
  return table.concat(lines, "\n")
end

--- What the inbound lines reported on stderr: {status = "ok"|"no-git"|"need-full"|"failed", head (ok),
--- why (need-full, failed: with the lines git printed before)}; status "failed" when no line is found.
---@param stderr string|nil
---@return table
function M.inbound_report(stderr)
  stderr = stderr or ""
  local head = stderr:match("ferry%-git: ok (%x*)")
  if head then return { status = "ok", head = head ~= "" and head or nil } end
  if stderr:find("ferry-git: no-git", 1, true) then return { status = "no-git" } end
  local why = stderr:match("ferry%-git: need%-full ([^\n]*)")
  if why then return { status = "need-full", why = why } end
  return { status = "failed", why = util.tail(stderr, { sep = "; ", max = 480 }) }
end

--- `pack`'s inputs as members of the sync command's tar stream (extracted at the remote dir: they land in
--- M.INPUTS), in front of `after`'s chunks (the workspace's stream). Returns read() and bytes() (the inputs'
--- bytes read so far), as ferry.tar_members.reader.
---@param pack table
---@param after function|nil
---@return function read, function bytes
function M.input_reader(pack, after)
  return tar_members.reader(pack.dir, pack.names, "./" .. M.INPUTS .. "/", after)
end

--- Shell lines for the sync command, run before it extracts (with "$ferry_r" the remote dir): an empty
--- inputs dir, so that inputs of an earlier run that did not finish never mix with these.
---@return string
function M.inputs_head_lines()
  return 'rm -rf "$ferry_r/' .. M.INPUTS .. '" && mkdir -p "$ferry_r/' .. M.INPUTS .. '" || exit 1'
end

--- Send `pack`'s inputs and build the sandbox's repository, in one command: the inputs go as one tar stream
--- into REMOTE_DIR/M.INPUTS, then the inbound lines run (the working tree must already be there). Returns
--- M.inbound_report's table (status "no-git" and "need-full" are outcomes, not errors), or nil, message, code
--- when the command fails ("git in the sandbox: <why>", EIO).
---@param sb table  a sandbox (ferry.open)
---@param remote_dir string
---@param pack table  ferry.git_pack's
---@return table|nil report, string|nil err, string|nil code
function M.inbound(sb, remote_dir, pack)
  local writer, werr, wcode
  if #pack.names > 0 then
    writer, werr, wcode = core.tar_writer(pack.dir, pack.names, {})
    if not writer then return nil, "git inputs: " .. werr, wcode end
  end
  local script = "ferry_in=" .. q(remote_dir .. "/" .. M.INPUTS)
    .. '\nrm -rf "$ferry_in" && mkdir -p "$ferry_in" || exit 1\n'
    .. (writer and 'tar -x -f - -C "$ferry_in" || exit 1\n' or "")
    .. "(\n" .. M.inbound_lines(remote_dir, pack) .. "\n)"
  local res, err, code = sb:pipe_in(script, writer and function() return writer:read() end or "",
    { what = "git history to " .. remote_dir })
  if writer then writer:close() end
  if not res then return nil, err, code end
  local report = M.inbound_report(res.stderr)
  if res.code == 0 or res.code == M.NO_GIT or res.code == M.NEED_FULL then return report end
  return nil, "git in the sandbox: " .. (report.why ~= "" and report.why or remote.failure("inbound", res)), "EIO"
end

-- ---- outbound ----

--- The outbound lines (see the top of this file). params: ref ("refs/heads/<branch>" or "HEAD"), base (the
--- commit shipped; nil when the host's branch was unborn), full (bundle the whole ref). With `keep`, the
--- bundle stays at REMOTE_DIR/M.OUTBOUND instead of following the fields on stdout.
---@param remote_dir string
---@param params table
---@param keep boolean|nil
---@return string
function M.outbound_lines(remote_dir, params, keep)
  local ref, base = q(params.ref), params.base and q(params.base) or "''"
  local thin = params.base and not params.full
  return table.concat({
    PRELUDE,
    "ferry_r=" .. q(remote_dir) .. ' ferry_out="$ferry_r/' .. M.OUTBOUND .. '"',
    "ferry_fail() { echo \"ferry-git: failed: $1\" >&2; exit 1; }",
    "ferry_field() { printf '%s\\0' \"$@\"; }",
    need_git("ferry_field status=no-git end; exit 0"),
    'cd "$ferry_r" || ferry_fail "cd $ferry_r"',
    "if [ ! -d .git ]; then ferry_field status=no-repo end; exit 0; fi",
    'ferry_field "on=$(git symbolic-ref -q HEAD || echo HEAD)"',
    "ferry_head=$(git rev-parse -q --verify " .. q(params.ref .. "^{commit}") .. ") || ferry_head=",
    "ferry_kind=none; ferry_count=0",
    'rm -f "$ferry_out"',
    'if [ -n "$ferry_head" ]; then',
    "  if " .. (thin and "git cat-file -e " .. q(params.base .. "^{commit}") .. " 2>/dev/null" or "false")
      .. "; then",
    "    ferry_count=$(git rev-list --count " .. ref .. " ^" .. base .. ") || ferry_fail 'git rev-list'",
    '    if [ "$ferry_count" -gt 0 ]; then ferry_kind=thin; fi',
    "  else",
    "    ferry_count=$(git rev-list --count " .. ref .. ") || ferry_fail 'git rev-list'",
    "    ferry_kind=full",
    "  fi",
    '  if [ "$ferry_kind" != none ]; then',
    '    mkdir -p "${ferry_out%/*}" || ferry_fail "mkdir"',
    '    if [ "$ferry_kind" = thin ]; then set -- ' .. ref .. " ^" .. base .. "; else set -- " .. ref .. "; fi",
    '    git bundle create -q "$ferry_out" "$@" || ferry_fail "git bundle create"',
    "  fi",
    '  ferry_field status=ok "head=$ferry_head"',
    "else",
    "  ferry_field status=no-ref",
    "fi",
    'ferry_bytes=0; if [ -f "$ferry_out" ]; then ferry_bytes=$(wc -c < "$ferry_out" | tr -d " "); fi',
    'ferry_field "count=$ferry_count" "kind=$ferry_kind" "bytes=$ferry_bytes" dirty',
    "git status --porcelain=v1 -z --untracked-files=normal --no-renames || ferry_fail 'git status'",
    "ferry_field end",
    keep and ":"
      or 'if [ -f "$ferry_out" ]; then cat "$ferry_out" && rm -f "$ferry_out" || ferry_fail "sending the bundle"; fi',
    "exit 0",
  }, "\n")
end

-- Parse the report fields (up to "end"): {status, on, head, count, kind, bytes, dirty = {{xy, path}}}.
local function parse_outbound(fields)
  local r = { dirty = {} }
  local in_dirty = false
  for _, f in ipairs(fields) do
    if in_dirty then
      local xy, path = f:match("^(..) (.+)$")
      if not xy then return nil, "malformed status record " .. string.format("%q", f:sub(1, 80)) end
      r.dirty[#r.dirty + 1] = { xy = xy, path = path }
    elseif f == "dirty" then
      in_dirty = true
    else
      local k, v = f:match("^(%a+)=(.*)$")
      if not k then return nil, "malformed field " .. string.format("%q", f:sub(1, 80)) end
      r[k] = v
    end
  end
  r.count, r.bytes = tonumber(r.count), tonumber(r.bytes)
  if r.head == "" then r.head = nil end
  return r
end

-- A receiver for the outbound stream: the report (up to the field "end"), then the bundle into `dest`,
-- at most max_bytes of it (more is counted, not kept).
local function receiver(dest, max_bytes)
  local rx = { buf = "", bundle = 0 }
  function rx.push(chunk)
    if rx.fields then
      rx.bundle = rx.bundle + #chunk
      if rx.bundle <= max_bytes and not rx.failed then
        rx.file = rx.file or io.open(dest, "wb")
        if not (rx.file and rx.file:write(chunk)) then rx.failed = "cannot write " .. dest end
      end
      return
    end
    rx.buf = rx.buf .. chunk
    local stop = rx.buf:sub(1, 4) == "end\0" and 1 or rx.buf:find("\0end\0", 1, true)
    if not stop then
      if #rx.buf > MAX_REPORT then rx.failed = "the report is over " .. MAX_REPORT .. " bytes" end
      return
    end
    local head_len = stop == 1 and 0 or stop
    local fields = {}
    for f in rx.buf:sub(1, head_len):gmatch("([^%z]*)%z") do fields[#fields + 1] = f end
    rx.fields = fields
    local rest = rx.buf:sub(head_len + 5)
    rx.buf = nil
    if #rest > 0 then rx.push(rest) end
  end
  return rx
end

--- Run the outbound lines and receive their output: the report, and the bundle written to `dest` (a host
--- path). params as M.outbound_lines; opts: max_bytes (the bundle's limit, default 256 MiB: over it, the
--- bundle is not kept and the result says so), timeout_ms. Returns {status ("ok" | "no-git" | "no-repo" |
--- "no-ref"), on, head, count, kind ("thin" | "full" | "none"), bytes, bundle (dest when one came), dirty =
--- {{xy, path}}} or nil, message, code ("git bundle from the sandbox: ...": EIO, EFBIG over max_bytes).
---@param sb table
---@param remote_dir string
---@param params table
---@param dest string
---@param opts table|nil
---@return table|nil report, string|nil err, string|nil code
function M.outbound(sb, remote_dir, params, dest, opts)
  opts = opts or {}
  local max_bytes = opts.max_bytes or 256 * 1024 * 1024
  local rx = receiver(dest, max_bytes)
  local what = "git bundle from the sandbox"
  local res, err, code = sb:pipe_out(M.outbound_lines(remote_dir, params), rx.push,
    { what = what, timeout_ms = opts.timeout_ms })
  if rx.file then rx.file:close() end
  local function fail(msg, c)
    os.remove(dest)
    return nil, what .. ": " .. msg, c or "EIO"
  end
  if not res then return fail(err, code) end
  if res.code ~= 0 or res.timed_out then return fail(remote.failure("exit", res)) end
  if rx.failed then return fail(rx.failed) end
  if not rx.fields then return fail("the report was cut short") end
  local report, perr = parse_outbound(rx.fields)
  if not report then return fail(perr) end
  if rx.bundle > max_bytes then return fail("the bundle is over the " .. max_bytes .. " byte limit", "EFBIG") end
  if (report.bytes or 0) ~= rx.bundle then
    return fail("the report announced " .. tostring(report.bytes) .. " bundle bytes, " .. rx.bundle .. " came")
  end
  if rx.bundle > 0 then report.bundle = dest end
  return report
end


--- The outbound lines folded into restore's command (ferry.remote.restore_script's `before`): they write the
--- report fields, their stderr and the bundle as the files M.FOLDED, which the restore's tar stream carries
--- first (its `members`); nothing on stdout or stderr. The runtime dir is never written to the workspace.
---@param remote_dir string
---@param params table  as M.outbound_lines
---@return string
function M.folded_lines(remote_dir, params)
  local dir = q(remote_dir .. "/" .. remote.RUNTIME_DIR .. "/git")
  return table.concat({
    "ferry_g=" .. dir,
    'rm -f "$ferry_g/out.fields" "$ferry_g/out.stderr" "$ferry_g/out.bundle" 2>/dev/null',
    'if mkdir -p "$ferry_g" 2>/dev/null; then (',
    M.outbound_lines(remote_dir, params, true),
    ') >"$ferry_g/out.fields" 2>"$ferry_g/out.stderr"; fi',
  }, "\n")
end

--- The report of the folded outbound lines, from the files restore received: `fields` (the text of
--- M.FOLDED.fields, nil when it did not come), `stderr` (its text), `bundle` (the received bundle's path, nil
--- when none came) and its size. Returns M.outbound's table or nil, message, "EIO".
---@param fields string|nil
---@param stderr string|nil
---@param bundle string|nil
---@param size integer
---@return table|nil report, string|nil err, string|nil code
function M.folded_report(fields, stderr, bundle, size)
  local what = "git bundle from the sandbox: "
  local stop = fields and (fields:sub(1, 4) == "end\0" and 1 or fields:find("\0end\0", 1, true))
  if not stop then
    local why = util.tail(stderr, { sep = "; ", max = 480 })
    return nil, what .. (why ~= "" and why or "the report was cut short"), "EIO"
  end
  local list = {}
  for f in fields:sub(1, stop == 1 and 0 or stop):gmatch("([^%z]*)%z") do list[#list + 1] = f end
  local report, perr = parse_outbound(list)
  if not report then return nil, what .. perr, "EIO" end
  if (report.bytes or 0) ~= size then
    return nil, what .. "the report announced " .. tostring(report.bytes) .. " bundle bytes, " .. size .. " came", "EIO"
  end
  if bundle and size > 0 then report.bundle = bundle end
  return report
end


--- Lines for an adopted workspace (prepare's inbound "adopt"; with "$ferry_r" the remote dir): when the
--- sandbox has git and REMOTE_DIR/.git, they add the runtime dir and `keep_out` names to .git/info/exclude
--- (once) and print on stderr "ferry-git: adopted <what HEAD points to> <HEAD's commit, or nothing when
--- unborn>"; else "ferry-git: no-git" or "ferry-git: no-repo". They never fail the command.
---@param keep_out string[]|nil
---@return string
function M.adopt_lines(keep_out)
  local patterns = { "/" .. remote.RUNTIME_DIR .. "/" }
  for _, name in ipairs(keep_out or {}) do patterns[#patterns + 1] = "/" .. name end
  return table.concat({
    "(",
    PRELUDE,
    need_git("echo 'ferry-git: no-git' >&2; exit 0"),
    'cd "$ferry_r" 2>/dev/null && [ -d .git ] || { echo "ferry-git: no-repo" >&2; exit 0; }',
    "mkdir -p .git/info 2>/dev/null",
    "for p in " .. table.concat(quote_all(patterns), " ") .. "; do",
    '  grep -qxF -- "$p" .git/info/exclude 2>/dev/null || printf \'%s\\n\' "$p" >> .git/info/exclude',
    "done",
    'echo "ferry-git: adopted $(git symbolic-ref -q HEAD || echo HEAD) '
      .. '$(git rev-parse -q --verify \'HEAD^{commit}\')" >&2',
    ")",
  }, "\n")
end

--- What M.adopt_lines reported: {status = "adopted"|"no-git"|"no-repo", ref, head (nil when unborn), branch}.
---@param stderr string|nil
---@return table
function M.adopt_report(stderr)
  stderr = stderr or ""
  local ref, head = stderr:match("ferry%-git: adopted (%S+) ?(%x*)")
  if ref then
    return { status = "adopted", ref = ref, head = head ~= "" and head or nil,
      branch = ref:match("^refs/heads/(.+)$") }
  end
  if stderr:find("ferry-git: no-git", 1, true) then return { status = "no-git" } end
  return { status = "no-repo" }
end

return M
