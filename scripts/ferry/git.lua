--- ferry.git: the host side of git-aware sync, part one: the host's git CLI run through ferry.proc (a clean
-- environment, output parsed from -z forms), the detection of a git workspace, and the files the sandbox
-- should get (tracked plus untracked-not-ignored, as `git ls-files` says) as a list and as an exclude
-- matcher. The inbound pack is ferry.git_pack, the outbound import ferry.git_import, the sandbox-side shell
-- ferry.git_remote.
--
-- Submodules, and git repositories nested untracked in the work tree, travel as plain directories: their
-- own tracked and untracked-not-ignored files, never their `.git`. In the sandbox the superproject then
-- sees an unpopulated submodule (git ignores it there); changes made in it come back through the file merge.
local core = require "ferry.core"
local proc = require "ferry.proc"
local util = require "ferry.util"

local M = {}

--- Commits of history shipped by default (ferry.git_pack).
M.DEFAULT_DEPTH = 10

--- The exclude patterns the caller adds in git mode: `.git` at any depth (the work tree's repository, and
--- the `.git` file or dir of every submodule or nested repository), so git data never travels as files.
M.EXCLUDES = { ".git" }

local NESTING_LIMIT = 16 -- submodules inside submodules

-- Variables that would point git at another repository, index or object store than the one asked for,
-- or change what it reads; LC_ALL=C keeps its messages parseable.
local ENV = {
  LC_ALL = "C", LANGUAGE = false, GIT_TERMINAL_PROMPT = "0", GIT_NO_REPLACE_OBJECTS = "1",
  GIT_DIR = false, GIT_WORK_TREE = false, GIT_INDEX_FILE = false, GIT_OBJECT_DIRECTORY = false,
  GIT_ALTERNATE_OBJECT_DIRECTORIES = false, GIT_COMMON_DIR = false, GIT_NAMESPACE = false,
  GIT_GRAFT_FILE = false, GIT_SHALLOW_FILE = false, GIT_REPLACE_REF_BASE = false, GIT_PREFIX = false,
  GIT_QUARANTINE_PATH = false, GIT_LITERAL_PATHSPECS = false, GIT_GLOB_PATHSPECS = false,
  GIT_NOGLOB_PATHSPECS = false, GIT_ICASE_PATHSPECS = false,
  GIT_OPTIONAL_LOCKS = "0", -- reading never rewrites the user's index behind their back
}

--- Bytes of a git command's output kept in memory (listings of big repositories); more is an error.
M.MAX_OUTPUT = 512 * 1024 * 1024

--- Run `git -C dir ARGS...`. opts: stdin, env (merged over ferry's clean git environment), timeout_ms,
--- max_output (default M.MAX_OUTPUT), to_file (a path: stdout goes there instead of into memory). Returns the
--- ferry.proc.run result (whatever the exit code), or nil, "git is not installed or not on PATH", "ENOENT",
--- or the spawn error.
---@param dir string
---@param args string[]
---@param opts table|nil
---@return table|nil result, string|nil err, string|nil code
function M.run(dir, args, opts)
  opts = opts or {}
  local argv = { "git", "-C", dir }
  table.move(args, 1, #args, 4, argv)
  local env = {}
  for k, v in pairs(ENV) do env[k] = v end
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local sink, werr
  if opts.to_file then
    local ferr
    sink, ferr = io.open(opts.to_file, "wb")
    if not sink then return nil, "cannot write " .. opts.to_file .. ": " .. tostring(ferr), "EIO" end
  end
  local res, err, code = proc.run { argv = argv, env = env, stdin = opts.stdin, timeout_ms = opts.timeout_ms,
    max_output = opts.max_output or M.MAX_OUTPUT, on_stdout = sink and function(chunk)
      local ok, e = sink:write(chunk)
      if not ok then werr = werr or e end
    end }
  if sink then
    local ok, e = sink:close()
    werr = werr or (not ok and e) or nil
  end
  if not res and code == "ENOENT" then return nil, "git is not installed or not on PATH", "ENOENT" end
  if res and werr then return nil, "cannot write " .. opts.to_file .. ": " .. tostring(werr), "EIO" end
  return res, err, code
end

--- The message of a git command that failed: "<what>: <the last 3 lines of its stderr>" (or its exit code).
---@param what string
---@param res table
---@return string
function M.failure(what, res)
  if res.timed_out then return what .. ": timed out" end
  local why = util.tail(res.stderr, { sep = "; ", max = 400 })
  return what .. ": " .. (why ~= "" and why or ("git exited with code " .. tostring(res.code)))
end

--- Run git and return its stdout when it exits 0, else nil, "<what>: <stderr tail>", "EGIT".
---@param dir string
---@param args string[]
---@param what string  names the step in the message
---@param opts table|nil  as M.run
---@return string|nil stdout, string|nil err, string|nil code
function M.out(dir, args, what, opts)
  local res, err, code = M.run(dir, args, opts)
  if not res then return nil, what .. ": " .. err, code end
  if res.code ~= 0 or res.timed_out then return nil, M.failure(what, res), "EGIT" end
  if res.truncated then return nil, what .. ": output over " .. (opts and opts.max_output or M.MAX_OUTPUT)
    .. " bytes", "EFBIG" end
  return res.stdout
end

--- The NUL-separated fields of `text` as a list (a trailing NUL ends the last one).
---@param text string
---@return string[]
function M.split_z(text)
  local out = {}
  for field in text:gmatch("([^%z]*)%z") do out[#out + 1] = field end
  return out
end

local MAX_BUNDLE_HEADER = 1 << 20

--- True for an object id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
---@param s any
---@return boolean
function M.is_oid(s)
  return type(s) == "string" and (#s == 40 or #s == 64) and not s:find("[^0-9a-f]")
end

--- The header of a git bundle file: {version (2 or 3), capabilities = {"key=value"}, prerequisites =
--- {{oid, comment}}, refs = {{oid, name}}, bytes (the header's length, up to the pack)}, or nil and why
--- it is not a bundle ferry reads ("not a git bundle", "header cut short", a malformed line).
---@param path string
---@return table|nil header, string|nil why
function M.bundle_header(path)
  local f, ferr = io.open(path, "rb")
  if not f then return nil, tostring(ferr) end
  local data = f:read(MAX_BUNDLE_HEADER) or ""
  f:close()
  local first = data:match("^([^\n]*)\n")
  local version = first == "# v2 git bundle" and 2 or first == "# v3 git bundle" and 3 or nil
  if not version then
    return nil, 'not a git bundle (it starts with "' .. data:sub(1, 16):gsub("[%c\128-\255\"\\]", "?") .. '")'
  end
  local h = { version = version, capabilities = {}, prerequisites = {}, refs = {} }
  local pos = #first + 2
  while true do
    local line, stop = data:match("^([^\n]*)\n()", pos)
    if not line then return nil, "header cut short" end
    pos = stop
    if line == "" then break end
    local oid, rest = line:match("^%-(%x+) ?(.*)$")
    if M.is_oid(oid) then
      h.prerequisites[#h.prerequisites + 1] = { oid = oid, comment = rest }
    elseif line:sub(1, 1) == "@" and version == 3 then
      h.capabilities[#h.capabilities + 1] = line:sub(2)
    else
      local roid, name = line:match("^(%x+) (%S+)$")
      if not M.is_oid(roid) then return nil, "malformed header line " .. string.format("%q", line:sub(1, 80)) end
      h.refs[#h.refs + 1] = { oid = roid, name = name }
    end
  end
  h.bytes = pos - 1
  return h
end

local function first_line(text)
  return (text or ""):match("^([^\n]*)")
end

-- What HEAD is: the branch (nil when detached) and the commit (nil when the branch is unborn).
local function head_of(top)
  local res, err, code = M.run(top, { "symbolic-ref", "-q", "HEAD" })
  if not res then return nil, err, code end
  local ref = res.code == 0 and first_line(res.stdout) or nil
  if res.code ~= 0 and res.code ~= 1 then return nil, M.failure("git symbolic-ref HEAD", res), "EGIT" end
  local head
  res, err, code = M.run(top, { "rev-parse", "-q", "--verify", "HEAD^{commit}" })
  if not res then return nil, err, code end
  if res.code == 0 then head = first_line(res.stdout) end
  return { ref = ref, head = head }
end

-- Why history cannot be shipped for this workspace (nil when it can).
local function no_history_reason(info, unmerged)
  if info.prefix ~= "" then
    return "the workspace is a subdirectory of the git work tree " .. info.top
      .. "; its files are sent without history"
  end
  if unmerged ~= "" then return "the index has unmerged paths (a merge or rebase in progress)" end
  if info.object_format ~= "sha1" then
    return "the repository's object format is " .. tostring(info.object_format) .. " (only sha1 history is sent)"
  end
  if not info.detached and not info.ref:match("^refs/heads/.") then
    return "HEAD points to " .. info.ref .. ", not a branch"
  end
  return nil
end

--- Whether git could find a work tree from `dir` (absolute): git looks for a `.git` entry in the dir and
--- each parent (ENV clears GIT_DIR and the like), so without one no git process needs to start (a prepare of
--- a plain directory, 31 at once, spared a process each). A symlink on the way (git walks the physical
--- parents) answers true: git decides.
---@param dir string
---@return boolean
function M.may_be_in_work_tree(dir)
  local path = dir:gsub("/+$", "")
  while path ~= "" do
    if core.fs_lstat(path .. "/.git") then return true end
    local st = core.fs_lstat(path)
    if not st or st.kind ~= "dir" then return true end
    path = path:match("^(.*)/[^/]*$") or ""
  end
  return core.fs_lstat("/.git") ~= nil
end

--- Detect a git workspace: is `workspace` (or a parent) a git work tree. Returns false when it is not,
--- nil, message, code when git fails (git missing: ENOENT), else
--- {workspace, top (the work tree's top level), prefix ("" or "sub/dir/": the workspace below top), git_dir,
---  common_dir (where objects and refs live), branch (nil when detached), ref ("refs/heads/<branch>", or
---  "HEAD" when detached), detached, head (commit id, nil when unborn), unborn, shallow (the host repo is
---  shallow), object_format ("sha1" or "sha256"), history (true when history can be shipped: the workspace
---  is the top level, no unmerged paths, HEAD on a branch or detached, sha1 object ids), why (when history
---  is false)}.
---@param workspace string  an absolute path
---@return table|false|nil info, string|nil err, string|nil code
function M.detect(workspace)
  if not M.may_be_in_work_tree(workspace) then return false end
  local res, err, code = M.run(workspace, { "rev-parse", "--is-inside-work-tree" })
  if not res then return nil, err, code end
  if res.code ~= 0 then
    if (res.stderr or ""):find("not a git repository", 1, true) then return false end
    return nil, M.failure("git rev-parse in " .. workspace, res), "EGIT"
  end
  if first_line(res.stdout) ~= "true" then return false end
  local out
  out, err, code = M.out(workspace, { "rev-parse", "--path-format=absolute", "--show-toplevel", "--git-dir",
    "--git-common-dir", "--is-shallow-repository", "--show-object-format", "--show-prefix" },
    "git rev-parse in " .. workspace)
  if not out then return nil, err, code end
  local lines = {}
  for line in (out .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  local info = { workspace = workspace, top = lines[1], git_dir = lines[2], common_dir = lines[3],
    shallow = lines[4] == "true", object_format = lines[5], prefix = lines[6] or "" }
  local head
  head, err, code = head_of(info.top)
  if not head then return nil, err, code end
  info.head, info.unborn = head.head, head.head == nil
  info.detached = head.ref == nil
  info.ref = head.ref or "HEAD"
  info.branch = head.ref and head.ref:match("^refs/heads/(.+)$")
  local unmerged
  unmerged, err, code = M.out(info.top, { "ls-files", "-z", "--unmerged" }, "git ls-files --unmerged")
  if not unmerged then return nil, err, code end
  info.why = no_history_reason(info, unmerged)
  info.history = info.why == nil
  return info
end

-- ---- the files the sandbox gets ----

local function add_dirs(dirs, rel)
  local parent = util.parent_of(rel)
  while parent and not dirs[parent] do
    dirs[parent] = true
    parent = util.parent_of(parent)
  end
end

-- The index entries under `dir`: tracked paths (files and symlinks), gitlinks (submodules).
local function index_entries(dir)
  local out, err, code = M.out(dir, { "ls-files", "-z", "--stage" }, "git ls-files in " .. dir)
  if not out then return nil, err, code end
  local tracked, gitlinks, seen = {}, {}, {}
  for _, rec in ipairs(M.split_z(out)) do
    local mode, path = rec:match("^(%d+) %x+ %d\t(.+)$")
    if mode == "160000" then
      gitlinks[#gitlinks + 1] = path
    elseif mode and not seen[path] then -- an unmerged path has up to 3 entries
      seen[path] = true
      tracked[#tracked + 1] = path
    end
  end
  return tracked, gitlinks
end

local function populated(dir, rel)
  return core.fs_lstat(dir .. "/" .. rel .. "/.git") ~= nil
end

local list_into

-- A submodule or nested repository as a plain directory: its own files, below `prefix`.
local function nested_into(files, dir, rel, prefix, depth)
  if depth >= NESTING_LIMIT then
    files.warnings[#files.warnings + 1] = prefix .. rel .. ": repositories nested too deep; not sent"
    return true
  end
  return list_into(files, dir .. "/" .. rel, prefix .. rel .. "/", depth + 1)
end

-- Untracked, not ignored paths under `dir` (a nested repository is listed as "name/").
local function others_in(dir)
  local out, err, code = M.out(dir, { "ls-files", "-z", "--others", "--exclude-standard" },
    "git ls-files --others in " .. dir)
  if not out then return nil, err, code end
  return M.split_z(out)
end

list_into = function(files, dir, prefix, depth)
  local tracked, gitlinks, code = index_entries(dir)
  if not tracked then return nil, gitlinks, code end
  local others, err
  others, err, code = others_in(dir)
  if not others then return nil, err, code end
  local deleted
  deleted, err, code = M.out(dir, { "ls-files", "-z", "--deleted" }, "git ls-files --deleted in " .. dir)
  if not deleted then return nil, err, code end
  local gone = {}
  for _, rel in ipairs(M.split_z(deleted)) do gone[rel] = true end
  for _, rel in ipairs(tracked) do
    if gone[rel] then
      files.deleted[#files.deleted + 1] = prefix .. rel
    else
      files.tracked[prefix .. rel] = true
      files.list[#files.list + 1] = prefix .. rel
    end
  end
  for _, rel in ipairs(others) do
    if rel:sub(-1) == "/" then
      rel = rel:sub(1, -2)
      files.nested[#files.nested + 1] = prefix .. rel
      local ok, nerr, ncode = nested_into(files, dir, rel, prefix, depth)
      if not ok then return nil, nerr, ncode end
    else
      files.list[#files.list + 1] = prefix .. rel
    end
  end
  for _, rel in ipairs(gitlinks) do
    files.submodules[#files.submodules + 1] = prefix .. rel
    if populated(dir, rel) then
      local ok, nerr, ncode = nested_into(files, dir, rel, prefix, depth)
      if not ok then return nil, nerr, ncode end
    end
  end
  return true
end

--- The files the sandbox should get: tracked files still on disk plus untracked files that are not
--- ignored (`git ls-files --cached --others --exclude-standard`, less the deleted ones), relative to the
--- workspace; submodules and nested repositories as plain directories (their own such files). Returns
--- {list (sorted), set = {rel = true}, dirs = {rel = true} (every parent dir of a listed path), tracked =
--- {rel = true} (tracked by the workspace's repository or a nested one), deleted (tracked, missing on
--- disk), submodules, nested (untracked nested repositories), warnings} or nil, message, code.
---@param info table  M.detect's
---@return table|nil files, string|nil err, string|nil code
function M.files(info)
  local files = { list = {}, set = {}, dirs = {}, tracked = {}, deleted = {}, submodules = {}, nested = {},
    warnings = {} }
  local ok, err, code = list_into(files, info.workspace, "", 0)
  if not ok then return nil, err, code end
  util.sorted(files.list)
  for _, rel in ipairs(files.list) do
    files.set[rel] = true
    add_dirs(files.dirs, rel)
  end
  return files
end

--- An exclude matcher (ferry.excludes' shape: matcher(rel, is_dir) -> true when excluded) that keeps only
--- the listed files and the dirs holding them, on top of `base` (ferry's own excludes; nil for none).
--- Use it for the walk that prepare sends; on the way back the sandbox's new files are not in the list, so
--- restore filters with M.ignored instead.
---@param files table  M.files'
---@param base function|nil
---@return fun(rel: string, is_dir: boolean|nil): boolean
function M.matcher(files, base)
  return function(rel, is_dir)
    if base and base(rel, is_dir) then return true end
    if is_dir then return not files.dirs[rel] end
    return not files.set[rel]
  end
end

--- The tracked files that `base` (ferry's excludes) keeps home although git tracks them: the sandbox marks
--- them skip-worktree so that `git status` there does not show them as deleted.
---@param files table  M.files'
---@param base function|nil
---@return string[]
function M.not_sent(files, base)
  local out = {}
  if not base then return out end
  for _, rel in ipairs(files.list) do
    if files.tracked[rel] and base(rel, false) then out[#out + 1] = rel end
  end
  return out
end

--- The contents of the objects `oids` (`git cat-file --batch`, in memory): {oid = bytes}; an id git does
--- not have is left out.
---@param dir string
---@param oids string[]
---@return table|nil contents, string|nil err, string|nil code
function M.blobs(dir, oids)
  if #oids == 0 then return {} end
  local res, err, code = M.run(dir, { "cat-file", "--batch" }, { stdin = table.concat(oids, "\n") .. "\n" })
  if not res then return nil, err, code end
  local texts, pos, out = {}, 1, res.stdout or ""
  while pos <= #out do
    local oid, size, stop = out:match("^(%x+) %a+ (%d+)\n()", pos)
    if not oid then break end
    texts[oid] = out:sub(stop, stop + tonumber(size) - 1)
    pos = stop + tonumber(size) + 1
  end
  return texts
end

--- Which of `paths` (relative to the work tree's top) git ignores (`git check-ignore`: a tracked path is
--- never ignored). For restore: new files the sandbox made in ignored places stay there.
---@param top string
---@param paths string[]
---@return table|nil ignored  {rel = true}, or nil, message, code
---@return string|nil err, string|nil code
function M.ignored(top, paths)
  local set = {}
  if #paths == 0 then return set end
  local res, err, code = M.run(top, { "check-ignore", "-z", "--stdin" }, { stdin = table.concat(paths, "\0") .. "\0" })
  if not res then return nil, "git check-ignore: " .. err, code end
  if res.code ~= 0 and res.code ~= 1 then return nil, M.failure("git check-ignore", res), "EGIT" end
  for _, rel in ipairs(M.split_z(res.stdout)) do set[rel] = true end
  return set
end

return M
