-- Git-aware sync, detection: is the workspace a git work tree, what HEAD is, which files the sandbox gets
-- (ferry.git against real repositories made by the specs).
local core = require "ferry.core"
local excludes = require "ferry.excludes"
local git = require "ferry.git"
local helpers = require "support.helpers"
local R = require "support.git_repos"
local snapshot = require "ferry.snapshot"

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

describe("ferry.git.detect", function()
  local repo

  before_each(function() repo = R.make { commits = 3 } end)
  after_each(function() helpers.rmtree(repo.tmp) end)

  it("returns false outside a git work tree, and inside .git", function()
    local plain = helpers.tmpdir()
    assert.is_false(git.detect(plain))
    assert.is_false(git.detect(repo.dir .. "/.git"))
    helpers.rmtree(plain)
  end)

  it("starts no git process for a dir with no .git in it or above it (no PATH needed to say false)", function()
    local plain = helpers.tmpdir()
    assert(core.fs_safe_mkdir(plain, "a/b", tonumber("755", 8)))
    assert.is_false(git.may_be_in_work_tree(plain .. "/a/b"))
    assert.is_false(git.detect(plain .. "/a/b/"))
    assert.is_true(git.may_be_in_work_tree(repo.dir))
    assert(core.fs_safe_mkdir(repo.dir, "sub/deeper", tonumber("755", 8)))
    assert.is_true(git.may_be_in_work_tree(repo.dir .. "/sub/deeper"))
    assert.equal("sub/deeper/", assert(git.detect(repo.dir .. "/sub/deeper")).prefix)
    -- a symlink on the way: git walks the physical parents, so git decides
    assert(core.fs_safe_symlink(plain, "link", repo.dir .. "/sub"))
    assert.is_true(git.may_be_in_work_tree(plain .. "/link/deeper"))
    assert.equal("sub/deeper/", assert(git.detect(plain .. "/link/deeper")).prefix)
    helpers.rmtree(plain)
  end)

  it("describes the top level: branch, HEAD, directories, history possible", function()
    local info = assert(git.detect(repo.dir))
    assert.same({
      workspace = repo.dir, top = repo.dir, prefix = "", git_dir = repo.dir .. "/.git",
      common_dir = repo.dir .. "/.git", shallow = false, branch = "feature", ref = "refs/heads/feature",
      detached = false, head = repo.head, unborn = false, history = true, object_format = "sha1",
    }, info)
  end)

  it("sees a detached HEAD and an unborn branch", function()
    R.git(repo.dir, { "checkout", "-q", "--detach", "HEAD~1" })
    local info = assert(git.detect(repo.dir))
    assert.is_true(info.detached)
    assert.is_nil(info.branch)
    assert.equal("HEAD", info.ref)
    assert.equal(R.head(repo.dir), info.head)
    assert.is_true(info.history)

    local fresh = helpers.tmpdir()
    R.git(fresh, { "init", "-q", "-b", "main" })
    info = assert(git.detect(fresh))
    assert.is_true(info.unborn)
    assert.is_nil(info.head)
    assert.equal("main", info.branch)
    assert.is_true(info.history)
    helpers.rmtree(fresh)
  end)

  it("ships no history for a subdirectory of a work tree, but still lists its files", function()
    local sub = repo.dir .. "/src/mod0"
    helpers.write_file(sub .. "/new.txt", "n\n")
    helpers.write_file(sub .. "/x.log", "ignored by the parent's .gitignore\n")
    local info = assert(git.detect(sub))
    assert.equal(repo.dir, info.top)
    assert.equal("src/mod0/", info.prefix)
    assert.is_false(info.history)
    assert.equal("the workspace is a subdirectory of the git work tree " .. repo.dir
      .. "; its files are sent without history", info.why)
    local files = assert(git.files(info))
    assert.truthy(files.set["new.txt"])
    assert.truthy(files.set["file0.txt"])
    assert.is_nil(files.set["x.log"])
  end)

  it("ships no history while the index has unmerged paths", function()
    local p = R.path_of(0)
    R.git(repo.dir, { "checkout", "-q", "-b", "other", "HEAD~1" })
    R.commit(repo.dir, { [p] = "other side\n" }, "other")
    R.git(repo.dir, { "checkout", "-q", "feature" })
    R.commit(repo.dir, { [p] = "this side\n" }, "this")
    assert.equal(1, R.try(repo.dir, { "merge", "-q", "other" }).code)
    local info = assert(git.detect(repo.dir))
    assert.is_false(info.history)
    assert.equal("the index has unmerged paths (a merge or rebase in progress)", info.why)
    local files = assert(git.files(info))
    assert.truthy(files.set[p])
  end)

  it("says when git is not installed", function()
    local res, err, code = git.run(repo.dir, { "status" }, { env = { PATH = R.path_without_git() } })
    assert.is_nil(res)
    assert.equal("git is not installed or not on PATH", err)
    assert.equal("ENOENT", code)
  end)
end)

describe("ferry.git.files", function()
  local repo

  before_each(function()
    repo = R.make { commits = 3 }
    R.dirty(repo.dir)
  end)
  after_each(function() helpers.rmtree(repo.tmp) end)

  it("lists tracked files on disk and untracked files that are not ignored", function()
    local files = assert(git.files(assert(git.detect(repo.dir))))
    local set = files.set
    for _, rel in ipairs { ".gitignore", R.path_of(1), R.path_of(2), R.path_of(4), R.path_of(5), "src/renamed.txt",
      "src/new-staged.txt", "intent.txt", "notes.txt", "scratch/a.txt" } do
      assert.truthy(set[rel], rel)
    end
    for _, rel in ipairs { R.path_of(3), R.path_of(6), "debug.log", "node_modules/pkg/i.js", "ignored-dir/y.txt" } do
      assert.is_nil(set[rel], rel)
    end
    assert.same({ R.path_of(3) }, files.deleted)
    assert.is_nil(files.tracked["notes.txt"])
    assert.truthy(files.tracked[R.path_of(1)])
    assert.same({ "scratch", "src", "src/mod0" }, sorted_keys(files.dirs))
    local copy = {}
    for _, rel in ipairs(files.list) do copy[#copy + 1] = rel end
    table.sort(copy)
    assert.same(copy, files.list)
  end)

  it("as a matcher, makes a walk of the workspace find exactly the listed files, within ferry's excludes", function()
    R.sh(repo.dir, "mkdir -p dist && echo d > dist/bundle.js") -- not ignored by git, excluded by ferry
    local files = assert(git.files(assert(git.detect(repo.dir))))
    assert.truthy(files.set["dist/bundle.js"])
    local matcher = git.matcher(files, excludes.compile(excludes.DEFAULT))
    local snap = assert(snapshot.take(repo.dir, { matcher = matcher }))
    local walked = {}
    for rel, e in pairs(snap) do
      if e.kind ~= "dir" then walked[#walked + 1] = rel end
    end
    table.sort(walked)
    local want = {}
    for _, rel in ipairs(files.list) do
      if rel ~= "dist/bundle.js" then want[#want + 1] = rel end
    end
    assert.same(want, walked)
    assert.is_nil(snap[".git"])
  end)

  it("lists submodules and nested repositories as plain directories, without their .git", function()
    local top = repo.tmp .. "/sup"
    local sub = repo.tmp .. "/sub"
    R.make { dir = sub, commits = 2, files = 2 }
    helpers.write_file(sub .. "/extra.txt", "untracked in the submodule\n")
    R.make { dir = top, commits = 2, files = 2 }
    R.git(top, { "-c", "protocol.file.allow=always", "submodule", "add", "-q", sub, "lib" })
    R.git(top, { "commit", "-q", "-m", "add lib" })
    helpers.write_file(top .. "/lib/local.txt", "untracked in the submodule's work tree\n")
    helpers.write_file(top .. "/lib/skip.log", "ignored by the submodule\n")
    R.make { dir = top .. "/other", commits = 1, files = 1 }
    local files = assert(git.files(assert(git.detect(top))))
    assert.same({ "lib" }, files.submodules)
    assert.same({ "other" }, files.nested)
    assert.truthy(files.set["lib/src/mod0/file0.txt"])
    assert.truthy(files.set["lib/local.txt"])
    assert.truthy(files.set["other/src/mod0/file0.txt"])
    assert.truthy(files.tracked["lib/src/mod0/file1.txt"])
    assert.is_nil(files.set["lib/skip.log"])
    assert.is_nil(files.set["lib"])
    for _, rel in ipairs(files.list) do assert.is_nil(rel:find("%.git/"), rel) end
    assert.is_nil(files.set["lib/.git"])
    assert.truthy(core.fs_lstat(top .. "/lib/.git"))
  end)

  it("says which paths git ignores", function()
    local ignored = assert(git.ignored(repo.dir, { "debug.log", "notes.txt", "node_modules/pkg/i.js", R.path_of(1),
      "new/dir/x.log" }))
    assert.same({ "debug.log", "new/dir/x.log", "node_modules/pkg/i.js" }, sorted_keys(ignored))
    assert.same({}, assert(git.ignored(repo.dir, {})))
  end)

  it("lists the tracked files ferry's excludes keep home", function()
    R.git(repo.dir, { "add", "-f", "node_modules/pkg/i.js" })
    local files = assert(git.files(assert(git.detect(repo.dir))))
    assert.same({ "node_modules/pkg/i.js" }, git.not_sent(files, excludes.compile(excludes.DEFAULT)))
    assert.same({}, git.not_sent(files, nil))
  end)
end)

describe("ferry.git.bundle_header", function()
  it("reads prerequisites and refs, and refuses what is not a bundle", function()
    local repo = R.make { commits = 3 }
    local path = repo.tmp .. "/x.bundle"
    R.git(repo.dir, { "bundle", "create", "-q", path, "feature", "^HEAD~1" })
    local h = assert(git.bundle_header(path))
    assert.equal(2, h.version)
    assert.same({ { oid = R.line(repo.dir, { "rev-parse", "HEAD~1" }), name = "refs/heads/feature" } },
      { { oid = h.prerequisites[1].oid, name = h.refs[1].name } })
    assert.equal(repo.head, h.refs[1].oid)
    helpers.write_file(path, "PACK....")
    local none, why = git.bundle_header(path)
    assert.is_nil(none)
    assert.equal('not a git bundle (it starts with "PACK....")', why)
    helpers.write_file(path, "# v2 git bundle\n" .. repo.head .. " refs/heads/x\n")
    none, why = git.bundle_header(path)
    assert.is_nil(none)
    assert.equal("header cut short", why)
    helpers.rmtree(repo.tmp)
  end)
end)
