--- ferry.git_import: the agent's commits back into the host repository. The sandbox is hostile, so a bundle is
-- verified before anything reaches the workspace's repository:
--   the file's size is bounded; it is a v2 bundle whose header carries exactly the expected ref (no tag, no
--   other ref); `git bundle verify` passes in a scratch bare repository that borrows the host's objects
--   (alternates), and the bundle is fetched there (a truncated pack fails here); the ref is a commit whose
--   history shares a commit with the one ferry sent (a bundle of another repository is refused); every new
--   object is under a size limit; every path the new commits add is a plain relative path without a `.git`
--   component, and every symlink they add resolves inside the work tree; then the objects move into the
--   host repository by a fetch from the scratch repository with transfer.fsckObjects on (git 2.39 ignores
--   it for bundles, not for repositories), which writes no ref. Nothing else is ever written: no tag, no
--   other ref, and on any refusal no object.
-- Integration is ferry.git_integrate.
local core = require "ferry.core"
local git = require "ferry.git"
local util = require "ferry.util"

local M = {}

--- Default limits: the bundle file, and any one object in it (uncompressed).
M.MAX_BYTES = 256 * 1024 * 1024
M.MAX_OBJECT_BYTES = 128 * 1024 * 1024

local RESOLVE_BUDGET = 256
local NO_GC = { "-c", "gc.auto=0", "-c", "maintenance.auto=false" }

local function refused(why)
  return nil, "git bundle refused: " .. why, "EPERM"
end

local function names_of(refs)
  local out = {}
  for _, r in ipairs(refs) do out[#out + 1] = r.name end
  return table.concat(out, ", ")
end

-- The header's checks: a v2 bundle carrying exactly `ref`. Returns the header or nil, message, code.
local function check_header(path, ref)
  local h, why = git.bundle_header(path)
  if not h then return refused(why) end
  if h.version ~= 2 then return refused("a v" .. h.version .. " bundle (" .. table.concat(h.capabilities, ", ")
    .. "); only v2 bundles are accepted") end
  if #h.refs == 0 then return refused("it carries no ref; " .. ref .. " is expected") end
  for _, r in ipairs(h.refs) do
    if r.name ~= ref then
      return refused("it carries " .. r.name .. "; only " .. ref .. " is expected (refs: " .. names_of(h.refs) .. ")")
    end
  end
  if #h.refs > 1 then return refused("it carries " .. ref .. " " .. #h.refs .. " times") end
  return h
end

local function has_commit(dir, oid)
  local res = git.run(dir, { "cat-file", "-e", oid .. "^{commit}" })
  return res ~= nil and res.code == 0
end

-- A scratch bare repository that reads the host's objects through alternates.
local function scratch(info)
  local dir, err, code = core.fs_mkdtemp("ferry-git-import-")
  if not dir then return nil, err, code end
  local repo = dir .. "/repo.git"
  local out
  out, err, code = git.out(dir, { "init", "-q", "--bare", "--template=", repo }, "git init (scratch)")
  if out then
    local f = io.open(repo .. "/objects/info/alternates", "wb")
    if f and f:write(info.common_dir .. "/objects\n") and f:close() then return { dir = dir, repo = repo } end
    err, code = "cannot write the scratch repository's alternates", "EIO"
  end
  core.fs_remove_tree(dir)
  return nil, err, code
end

-- Chunks of the file at `path` from byte `offset` on.
local function file_reader(path, offset)
  local f = io.open(path, "rb")
  if f then f:seek("set", offset) end
  return function()
    local chunk = f and f:read(65536)
    if not chunk and f then
      f:close()
      f = nil
    end
    return chunk
  end
end

-- `git bundle verify`, then the bundle's pack into the scratch repository through `index-pack --strict`
-- (what `git bundle unbundle` does, with git's fsck checks on every object: a '.git' tree entry, a '..'
-- component, a broken link...; a truncated pack fails here), then its ref as refs/heads/incoming there.
-- Returns true or nil, message, code (ENEEDFULL: the host lacks the prerequisites).
local function unbundle_scratch(s, path, header, new)
  local res, err, code = git.run(s.repo, { "bundle", "verify", path }) -- -q would hide why it fails
  if not res then return nil, err, code end
  if res.code ~= 0 then
    if (res.stderr or ""):find("lacks these prerequisite", 1, true) then
      return nil, "git bundle: this repository lacks the commits the bundle builds on ("
        .. git.failure("git bundle verify", res):gsub("^git bundle verify: ", "") .. "); a full bundle is needed",
        "ENEEDFULL"
    end
    return refused(git.failure("git bundle verify", res))
  end
  res, err, code = git.run(s.repo, { "index-pack", "--strict", "--fix-thin", "--stdin" },
    { stdin = file_reader(path, header.bytes) })
  if not res then return nil, err, code end
  if res.code ~= 0 then
    local why = git.failure("git index-pack", res):gsub("^git index%-pack: ", "")
    if why:find("fsck error", 1, true) then return refused("fsck: " .. why) end
    return refused("its pack is damaged or incomplete: " .. why)
  end
  res, err, code = git.run(s.repo, { "update-ref", "refs/heads/incoming", new })
  if not res then return nil, err, code end
  if res.code ~= 0 then return refused("its pack does not hold " .. new .. " (" .. git.failure("", res) .. ")") end
  return true
end

-- Object ids stored in the scratch repository itself (its packs and loose objects), not its alternates.
local function own_objects(repo)
  local ids = {}
  local pack_dir = repo .. "/objects/pack"
  for _, name in ipairs(core.fs_readdir(pack_dir) or {}) do
    if name:match("^pack%-%x+%.idx$") then
      local f = io.open(pack_dir .. "/" .. name, "rb")
      local idx = f and f:read("a")
      if f then f:close() end
      local res = idx and git.run(repo, { "show-index" }, { stdin = idx })
      if not res or res.code ~= 0 then return nil, "cannot read the pack index " .. name end
      for oid in res.stdout:gmatch("%d+ (%x+)") do ids[#ids + 1] = oid end
    end
  end
  for _, sub in ipairs(core.fs_readdir(repo .. "/objects") or {}) do
    if sub:match("^%x%x$") then
      for _, rest in ipairs(core.fs_readdir(repo .. "/objects/" .. sub) or {}) do ids[#ids + 1] = sub .. rest end
    end
  end
  return ids
end

local function check_sizes(repo, max_object)
  local ids, err = own_objects(repo)
  if not ids then return nil, err, "EIO" end
  if #ids == 0 then return true end
  local out, gerr, code = git.out(repo, { "cat-file", "--batch-check=%(objectname) %(objecttype) %(objectsize)" },
    "git cat-file --batch-check", { stdin = table.concat(ids, "\n") .. "\n" })
  if not out then return nil, gerr, code end
  for oid, kind, size in out:gmatch("(%x+) (%a+) (%d+)") do
    if tonumber(size) > max_object then
      return refused(kind .. " " .. oid .. " is " .. size .. " bytes, over the " .. max_object .. " byte limit")
    end
  end
  return true
end

-- ---- paths and symlinks of the new commits ----

local function bad_component(path)
  if path:sub(1, 1) == "/" then return "an absolute path" end
  for comp in (path .. "/"):gmatch("([^/]*)/") do
    if comp == "" or comp == "." or comp == ".." then return "a '" .. comp .. "' component" end
    if comp:lower() == ".git" then return "a .git component" end
  end
  return nil
end

-- diff-tree -z records of the new commits: {commit, path, mode, oid} for every added or changed entry.
local function new_entries(repo, commits)
  local out, err, code = git.out(repo, { "diff-tree", "-r", "-z", "--root", "-m", "--no-renames", "--stdin" },
    "git diff-tree", { stdin = table.concat(commits, "\n") .. "\n" })
  if not out then return nil, err, code end
  local entries, commit = {}, nil
  local fields = git.split_z(out)
  local i = 1
  while i <= #fields do
    local f = fields[i]
    local mode, oid, status = f:match("^:%d+ (%d+) %x+ (%x+) (%a)")
    if mode then
      if status ~= "D" then
        entries[#entries + 1] = { commit = commit, path = fields[i + 1], mode = mode, oid = oid }
      end
      i = i + 2
    else
      commit = f:match("^(%x+)") or commit
      i = i + 1
    end
  end
  return entries
end

-- Every symlink of a commit's tree: {path = target}.
local function symlinks_of(repo, commit)
  local out, err, code = git.out(repo, { "ls-tree", "-r", "-z", "--full-tree", commit }, "git ls-tree")
  if not out then return nil, err, code end
  local oids, paths = {}, {}
  for _, rec in ipairs(git.split_z(out)) do
    local oid, path = rec:match("^120000 blob (%x+)\t(.+)$")
    if oid then
      oids[#oids + 1], paths[#paths + 1] = oid, path
    end
  end
  local texts, terr, tcode = git.blobs(repo, oids)
  if not texts then return nil, terr, tcode end
  local links = {}
  for i, path in ipairs(paths) do links[path] = texts[oids[i]] end
  return links
end

local function split(path)
  local out = {}
  for c in path:gmatch("[^/]+") do out[#out + 1] = c end
  return out
end

-- Resolve `target` from the dir `stack` through the tree's symlinks; false, why when it leaves the top.
local function resolve(links, stack, target, ctx)
  if target == "" then return false, "an empty target" end
  if target:sub(1, 1) == "/" then return false, "an absolute target" end
  local comps = split(target)
  for i, c in ipairs(comps) do
    if c == ".." then
      if #stack == 0 then return false, "a target outside the work tree" end
      stack[#stack] = nil
    elseif c ~= "." then
      stack[#stack + 1] = c
      local next_target = links[table.concat(stack, "/")]
      if next_target then
        ctx.budget = ctx.budget - 1
        if ctx.budget < 0 then return false, "too many symlinks to resolve" end
        stack[#stack] = nil
        local rest = table.concat(comps, "/", i + 1)
        local ok, why = resolve(links, stack, next_target, ctx)
        if not ok then return false, why end
        if rest ~= "" then return resolve(links, stack, rest, ctx) end
        return true
      end
    end
  end
  return true
end

local function check_symlinks(repo, by_commit)
  for commit, paths in pairs(by_commit) do
    local links, err, code = symlinks_of(repo, commit)
    if not links then return nil, err, code end
    for _, path in ipairs(paths) do
      local parent = util.parent_of(path)
      local ok, why = resolve(links, parent and split(parent) or {}, links[path] or "", { budget = RESOLVE_BUDGET })
      if not ok then
        return refused("commit " .. commit .. " adds the symlink '" .. path .. "' with " .. why .. " ("
          .. string.format("%q", links[path] or "") .. ")")
      end
    end
  end
  return true
end

local function check_paths(repo, new, base, allow_outside)
  local out, err, code = git.out(repo, { "rev-list", new, "--not", base }, "git rev-list")
  if not out then return nil, err, code end
  local commits = {}
  for oid in out:gmatch("%x+") do commits[#commits + 1] = oid end
  if #commits == 0 then return true end
  local entries
  entries, err, code = new_entries(repo, commits)
  if not entries then return nil, err, code end
  local links = {}
  for _, e in ipairs(entries) do
    local bad = bad_component(e.path)
    if bad then return refused("commit " .. e.commit .. " adds '" .. e.path .. "': " .. bad) end
    if e.mode == "120000" and not allow_outside then
      links[e.commit] = links[e.commit] or {}
      table.insert(links[e.commit], e.path)
    end
  end
  return check_symlinks(repo, links)
end

-- The checks on the fetched ref: a commit, related to `base`, objects within limits, clean paths.
local function check_incoming(s, new, expect, opts)
  local res = git.run(s.repo, { "cat-file", "-t", new })
  local kind = res and res.code == 0 and res.stdout:match("%a+")
  if kind ~= "commit" then return refused(expect.ref .. " points to a " .. tostring(kind) .. ", not a commit") end
  if not expect.base then return check_paths(s.repo, new, nil, opts.allow_outside_symlinks) end -- was unborn
  if not has_commit(s.repo, expect.base) then -- the host's objects, or the bundle's (a full one)
    return refused("the commit ferry sent, " .. expect.base .. ", is no longer in this repository")
  end
  res = git.run(s.repo, { "merge-base", expect.base, new })
  if not res or res.code ~= 0 then
    return refused("its history is unrelated to " .. expect.ref .. " (no commit in common with " .. expect.base
      .. "): a bundle of another repository, or a rewrite of the first commit the sandbox got")
  end
  local ok, err, code = check_sizes(s.repo, opts.max_object_bytes or M.MAX_OBJECT_BYTES)
  if not ok then return nil, err, code end
  return check_paths(s.repo, new, expect.base, opts.allow_outside_symlinks)
end

-- The objects of the scratch repository's ref into the host's repository, checked by fsck on the way.
local function move_objects(s, info)
  local args = { "-c", "transfer.fsckObjects=true", "-c", "fetch.fsckObjects=true" }
  table.move(NO_GC, 1, #NO_GC, #args + 1, args)
  table.move({ "fetch", "-q", "--no-tags", "--no-write-fetch-head", s.repo, "refs/heads/incoming" }, 1, 6,
    #args + 1, args)
  local res, err, code = git.run(info.top, args)
  if not res then return nil, err, code end
  if res.code ~= 0 then return refused("fsck: " .. git.failure("git fetch", res):gsub("^git fetch: ", "")) end
  return true
end

local function check_limits(path, opts)
  local st = core.fs_stat(path)
  if not st then return nil, "git bundle " .. path .. ": no such file", "ENOENT" end
  local max = opts.max_bytes or M.MAX_BYTES
  if st.size > max then
    return nil, "git bundle refused: " .. path .. " is " .. st.size .. " bytes, over the " .. max .. " byte limit",
      "EFBIG"
  end
  return true
end

local function import_new(info, path, header, expect, opts, new)
  local s, err, code = scratch(info)
  if not s then return nil, err, code end
  local ok
  ok, err, code = unbundle_scratch(s, path, header, new)
  if ok then ok, err, code = check_incoming(s, new, expect, opts) end
  if ok then ok, err, code = move_objects(s, info) end
  core.fs_remove_tree(s.dir)
  if not ok then return nil, err, code end
  if not has_commit(info.top, new) then return nil, "git bundle: " .. new .. " did not arrive", "EIO" end
  return true
end

--- Verify a bundle from the sandbox and bring its objects into the host repository (no ref is written).
--- expect: ref (the one ref the bundle must carry: "refs/heads/<branch>", or "HEAD" for a detached
--- workspace), base (the commit ferry sent). opts: max_bytes (the bundle file, default M.MAX_BYTES),
--- max_object_bytes (default M.MAX_OBJECT_BYTES), allow_outside_symlinks. Returns {new (the ref's commit),
--- commits (reachable from new, not from base)} or nil, message, code: "git bundle refused: <why>" EPERM
--- (EFBIG over max_bytes) with nothing imported; ENEEDFULL when the host lacks the commits a thin bundle
--- builds on (ask the sandbox for a full one: ferry.git_remote.outbound with params.full).
---@param info table  ferry.git.detect's
---@param path string  the bundle file
---@param expect table
---@param opts table|nil
---@return table|nil imported, string|nil err, string|nil code
function M.import(info, path, expect, opts)
  opts = opts or {}
  local ok, err, code = check_limits(path, opts)
  if not ok then return nil, err, code end
  local h
  h, err, code = check_header(path, expect.ref)
  if not h then return nil, err, code end
  local new = h.refs[1].oid
  if not has_commit(info.top, new) then
    ok, err, code = import_new(info, path, h, expect, opts, new)
    if not ok then return nil, err, code end
  end
  local count = git.out(info.top, { "rev-list", "--count", new, "--not", expect.base }, "git rev-list --count")
  return { new = new, commits = tonumber((count or ""):match("%d+")) or 0 }
end

return M
