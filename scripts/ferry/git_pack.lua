--- ferry.git_pack: the inbound pack of git-aware sync, made on the host. A dir of inputs the sandbox-side
-- script (ferry.git_remote) turns into a repository at REMOTE_DIR/.git:
--   history.bundle  the branch's last D commits: fetched with --depth into a temp bare repo (the workspace's
--                   repository is only read), then bundled; or, for a delta, `git bundle create <ref> ^HAVE`
--                   from the workspace's repository (only the commits the sandbox lacks)
--   shallow         the temp repo's shallow boundary (the sandbox writes it before fetching the bundle:
--                   a bundle made from a shallow repo records no prerequisites but is not complete)
--   staged.patch    `git diff --cached --binary --full-index` (the host's staged changes)
--   intent.z        paths added with `git add -N` (NUL-separated)
--   skip.z          tracked paths ferry's excludes keep home (skip-worktree in the sandbox)
-- Files with nothing in them are left out.
local core = require "ferry.core"
local git = require "ferry.git"
local util = require "ferry.util"

local M = {}

local BUNDLE, SHALLOW, PATCH, INTENT, SKIP = "history.bundle", "shallow", "staged.patch", "intent.z", "skip.z"
M.NAMES = { bundle = BUNDLE, shallow = SHALLOW, patch = PATCH, intent = INTENT, skip = SKIP }

local DETACHED_REF = "refs/ferry/head" -- the bundle's ref when HEAD is detached

local function size_of(path)
  local st = core.fs_stat(path)
  return st and st.size or 0
end

local function write(path, data)
  local f, err = io.open(path, "wb")
  if not f then return nil, "cannot write " .. path .. ": " .. tostring(err), "EIO" end
  local ok, werr = f:write(data)
  local closed, cerr = f:close()
  if not (ok and closed) then return nil, "cannot write " .. path .. ": " .. tostring(werr or cerr), "EIO" end
  return true
end


local function is_ancestor(top, a, b)
  local res = git.run(top, { "merge-base", "--is-ancestor", a, b })
  return res ~= nil and res.code == 0
end

-- The bundle holds one ref at `oid`, or why not (the branch moved while it was made).
local function check_bundle(path, ref, oid)
  local h, why = git.bundle_header(path)
  if not h then return nil, "git bundle " .. path .. ": " .. why, "EGIT" end
  if #h.refs ~= 1 or h.refs[1].name ~= ref or h.refs[1].oid ~= oid then
    return nil, "the branch moved while its history was packed (expected " .. ref .. " at " .. oid
      .. "); try again", "EAGAIN"
  end
  return h
end

-- The last `depth` commits of HEAD (all of them for depth 0), bundled, with their shallow boundary.
local function full_history(info, pack, depth)
  local tmp = pack.dir .. "/.repo"
  local out, err, code = git.out(pack.dir, { "init", "-q", "--bare", "--template=", tmp }, "git init")
  if not out then return nil, err, code end
  local args = { "fetch", "-q", "--no-tags" }
  if depth > 0 then args[#args + 1] = "--depth=" .. depth end
  table.move({ info.top, info.ref .. ":" .. pack.bundle_ref }, 1, 2, #args + 1, args)
  out, err, code = git.out(tmp, args, "git fetch --depth=" .. depth .. " from " .. info.top)
  if not out then return nil, err, code end
  local count
  count, err, code = git.out(tmp, { "rev-list", "--count", pack.bundle_ref }, "git rev-list --count")
  if not count then return nil, err, code end
  pack.commits = tonumber(count:match("%d+"))
  out, err, code = git.out(tmp, { "bundle", "create", "-q", pack.dir .. "/" .. BUNDLE, pack.bundle_ref },
    "git bundle create")
  if not out then return nil, err, code end
  local shallow = util.read_file(tmp .. "/shallow") or ""
  for oid in shallow:gmatch("%x+") do pack.shallow[#pack.shallow + 1] = oid end
  if shallow ~= "" then
    local ok, werr, wcode = write(pack.dir .. "/" .. SHALLOW, shallow)
    if not ok then return nil, werr, wcode end
  end
  return core.fs_remove_tree(tmp)
end

-- Only the commits after `have` (which the sandbox's repository holds), from the workspace's repository.
local function thin_history(info, pack)
  local path = pack.dir .. "/" .. BUNDLE
  local ref = info.detached and "HEAD" or info.ref
  local out, err, code = git.out(info.top, { "bundle", "create", "-q", path, ref, "^" .. pack.have },
    "git bundle create " .. ref .. " ^" .. pack.have)
  if not out then return nil, err, code end
  pack.bundle_ref = ref
  local count
  count, err, code = git.out(info.top, { "rev-list", "--count", info.head, "^" .. pack.have }, "git rev-list --count")
  if not count then return nil, err, code end
  pack.commits = tonumber(count:match("%d+"))
  return true
end

local DIFF = { "--no-color", "--no-ext-diff", "--no-textconv", "--no-relative", "--no-renames" }

local function diff_args(...)
  local args = { "diff" }
  table.move(DIFF, 1, #DIFF, 2, args)
  table.move({ ... }, 1, select("#", ...), #args + 1, args)
  return args
end

local function write_list(path, list)
  if #list == 0 then return true end
  return write(path, table.concat(list, "\0") .. "\0")
end

-- The host's index as inputs: the staged patch, the intent-to-add paths, the paths to mark skip-worktree.
local function index_inputs(info, pack, not_sent)
  local patch = pack.dir .. "/" .. PATCH
  local res, err, code = git.run(info.top, diff_args("--cached", "--binary", "--full-index", "--src-prefix=a/",
    "--dst-prefix=b/"), { to_file = patch })
  if not res then return nil, "git diff --cached: " .. err, code end
  if res.code ~= 0 then return nil, git.failure("git diff --cached", res), "EGIT" end
  if size_of(patch) == 0 then os.remove(patch) end
  local staged, intent
  staged, err, code = git.out(info.top, diff_args("--cached", "--name-only", "-z"), "git diff --cached --name-only")
  if not staged then return nil, err, code end
  pack.staged_paths = git.split_z(staged)
  intent, err, code = git.out(info.top, diff_args("--name-only", "-z", "--diff-filter=A"), "git diff --name-only")
  if not intent then return nil, err, code end
  local ok, werr, wcode = write_list(pack.dir .. "/" .. INTENT, git.split_z(intent))
  if not ok then return nil, werr, wcode end
  return write_list(pack.dir .. "/" .. SKIP, not_sent or {})
end

local function identity(top)
  local id = {}
  for _, key in ipairs { "name", "email" } do
    local res = git.run(top, { "config", "--get", "user." .. key })
    local value = res and res.code == 0 and res.stdout:match("^([^\n]*)")
    if value and value ~= "" then id[key] = value end
  end
  return id
end

local function history(info, pack, depth)
  if info.unborn then
    pack.mode = "unborn"
    return true
  end
  if pack.have == info.head then
    pack.mode = "same"
    return true
  end
  local ok, err, code
  if pack.have and is_ancestor(info.top, pack.have, info.head) then
    pack.mode = "thin"
    ok, err, code = thin_history(info, pack)
  else
    pack.mode, pack.have = "full", nil
    ok, err, code = full_history(info, pack, depth)
  end
  if not ok then return nil, err, code end
  return check_bundle(pack.dir .. "/" .. BUNDLE, pack.bundle_ref, info.head)
end

local function listed(pack)
  pack.names, pack.bytes = {}, 0
  for _, name in ipairs { BUNDLE, SHALLOW, PATCH, INTENT, SKIP } do
    local st = core.fs_stat(pack.dir .. "/" .. name)
    if st then
      pack.names[#pack.names + 1] = name
      pack.bytes = pack.bytes + st.size
    end
  end
  pack.bundle_bytes = size_of(pack.dir .. "/" .. BUNDLE)
end

--- Make the inbound pack of a git workspace (`info` from ferry.git.detect, with info.history true) in a new
--- temp dir. opts: depth (commits of history, default ferry.git.DEFAULT_DEPTH; 0 for all of it), have (a
--- commit the sandbox's repository already holds, from an earlier prepare: when it is an ancestor of HEAD
--- only the commits after it are bundled), not_sent (tracked paths ferry's excludes keep home,
--- ferry.git.not_sent's). Returns
--- {dir, names (the input files made, inside dir), bytes (their total), bundle_bytes, mode ("full" | "thin":
---  commits after `have` | "same": HEAD is `have`, no bundle | "unborn": no commit yet, no bundle), head,
---  branch (nil when detached), ref (refs/heads/<branch> or HEAD), bundle_ref (the ref the bundle carries),
---  have (thin only), depth, commits (in the bundle), shallow (boundary commit ids), staged_paths (the paths
---  staged on the host: restore resets the index for them), identity = {name, email} (the host's user.*,
---  each nil when unset)}
--- or nil, message, code (EAGAIN: the branch moved while it was packed). M.cleanup(pack) removes the dir.
---@param info table
---@param opts table|nil
---@return table|nil pack, string|nil err, string|nil code
function M.pack(info, opts)
  opts = opts or {}
  local depth = opts.depth or git.DEFAULT_DEPTH
  if math.type(depth) ~= "integer" or depth < 0 then
    error("git_pack.pack: opts.depth must be an integer >= 0, got " .. tostring(depth), 2)
  end
  if not info.history then return nil, "git history cannot be sent: " .. tostring(info.why), "EINVAL" end
  local dir, err, code = core.fs_mkdtemp("ferry-git-in-")
  if not dir then return nil, err, code end
  local pack = { dir = dir, head = info.head, branch = info.branch, ref = info.ref, depth = depth,
    have = opts.have, shallow = {}, commits = 0, staged_paths = {}, identity = identity(info.top),
    bundle_ref = info.detached and DETACHED_REF or info.ref }
  local ok
  ok, err, code = history(info, pack, depth)
  if ok then ok, err, code = index_inputs(info, pack, opts.not_sent) end
  if not ok then
    core.fs_remove_tree(dir)
    return nil, err, code
  end
  listed(pack)
  return pack
end

--- Remove the pack's temp dir.
---@param pack table
function M.cleanup(pack)
  if pack and pack.dir then core.fs_remove_tree(pack.dir) end
end

return M
