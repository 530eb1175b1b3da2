-- Git-aware sync at its edges, through ferry.prepare and ferry.restore: a sandbox without git (files only,
-- with a warning), a hostile sandbox whose bundle carries an extra ref or a tree with .git (refused, nothing
-- imported, nothing written), inbound "adopt" (a workspace already in the sandbox becomes the baseline
-- without being sent; a git one's HEAD is recorded), and read-only references (staged, never restored, a
-- failing one only a warning).
local core = require "ferry.core"
local ferry = require "ferry"
local helpers = require "support.helpers"
local R = require "support.git_repos"
local sandboxes = require "support.sandboxes"

local function ok(r, err, code)
  assert(r, tostring(err) .. " " .. tostring(code))
  return r
end

describe("git-aware sync", function()
  local box, repo, ws, rd, state

  before_each(function()
    box = sandboxes.make("local")
    repo = R.make { commits = 8 }
    ws, rd, state = repo.dir, box.root, box.tmp .. "/state.json"
  end)

  after_each(function()
    box:cleanup()
    helpers.rmtree(repo.tmp)
  end)

  local function prepare(opts)
    opts = opts or {}
    opts.provider = opts.provider or box.provider
    opts.workspace, opts.remote_dir, opts.state = opts.workspace or ws, rd, state
    return ok(ferry.prepare(opts))
  end

  describe("in a sandbox without git", function()
    it("sends the tree as git shows it without history, with a warning; restore merges files only", function()
      local r = prepare { provider = "cmd:env PATH=" .. R.path_without_git() }
      local why = "the sandbox has no git: the workspace was sent without its history (restore brings back files "
        .. "only)"
      assert.same({ mode = "files", why = why }, r.git)
      assert.same({ why }, r.warnings)
      assert.equal(1, r.commands)
      assert.is_nil(core.fs_lstat(rd .. "/.git"))
      assert.truthy(core.fs_lstat(rd .. "/" .. R.path_of(1)))
      R.sh(rd, "echo edit >> " .. R.path_of(1) .. " && echo new > new.txt && echo x > x.log")
      local before = R.refs(ws)
      local back = ok(ferry.restore { state = state })
      assert.is_nil(back.git)
      assert.same({ "new.txt", R.path_of(1) }, back.changed)
      assert.same({ "x.log" }, back.ignored)
      assert.equal(" M " .. R.path_of(1) .. "\n?? new.txt\n", R.status(ws))
      assert.equal(before, R.refs(ws))
    end)
  end)

  describe("with a hostile sandbox", function()
    -- a commit on the branch whose tree holds .git/hooks/post-checkout, made with git's plumbing
    local function commit_with_dotgit()
      local blob = R.git(rd, { "hash-object", "-w", "--stdin" }, { stdin = "#!/bin/sh\necho pwned\n" }):match("%x+")
      local hooks = R.git(rd, { "mktree" }, { stdin = "100755 blob " .. blob .. "\tpost-checkout\n" }):match("%x+")
      local dotgit = R.git(rd, { "mktree" }, { stdin = "040000 tree " .. hooks .. "\thooks\n" }):match("%x+")
      local root = R.git(rd, { "mktree" }, { stdin = R.git(rd, { "ls-tree", "HEAD" }) .. "040000 tree " .. dotgit
        .. "\t.git\n" }):match("%x+")
      local commit = R.git(rd, { "commit-tree", root, "-p", "HEAD", "-m", "evil" }):match("%x+")
      R.git(rd, { "update-ref", "refs/heads/feature", commit })
      return commit
    end

    local function refused(pattern, evil)
      local before_refs, before_status = R.refs(ws), R.status(ws)
      local before_file = helpers.read_file(ws .. "/" .. R.path_of(1))
      local back, err, code = ferry.restore { state = state }
      assert.is_nil(back)
      assert.matches(pattern, err)
      assert.equal("EPERM", code)
      assert.is_false(R.has(ws, evil))
      assert.equal(before_refs, R.refs(ws))
      assert.equal(before_status, R.status(ws))
      assert.equal(before_file, helpers.read_file(ws .. "/" .. R.path_of(1))) -- the file merge did not run
    end

    it("refuses a bundle whose commit adds .git: nothing imported, nothing written", function()
      prepare()
      R.sh(rd, "echo agent >> " .. R.path_of(1))
      local evil = commit_with_dotgit()
      refused("^git bundle refused: fsck: .*hasDotgit", evil)
    end)

    it("refuses a bundle carrying another ref than the branch", function()
      -- the sandbox's git adds refs/heads/evil to every bundle it makes
      local real = R.sh(repo.tmp, "command -v git"):match("[^\n]+")
      local bin = box.tmp .. "/bin"
      R.sh(repo.tmp, "mkdir -p " .. bin)
      helpers.write_file(bin .. "/git", "#!/bin/sh\nif [ \"$1\" = bundle ] && [ \"$2\" = create ]; then shift 2; "
        .. "exec " .. real .. " bundle create \"$@\" refs/heads/evil; fi\nexec " .. real .. " \"$@\"\n")
      R.sh(repo.tmp, "chmod +x " .. bin .. "/git")
      prepare { provider = "cmd:env PATH=" .. bin .. ":/usr/bin:/bin" }
      R.sh(rd, "echo agent >> " .. R.path_of(1) .. " && git commit -qam agent")
      local evil = R.git(rd, { "commit-tree", R.line(rd, { "rev-parse", "HEAD^{tree}" }), "-m", "evil" }):match("%x+")
      R.git(rd, { "update-ref", "refs/heads/evil", evil })
      refused("^git bundle refused: it carries refs/heads/evil; only refs/heads/feature is expected", evil)
    end)
  end)

  it("sends a subdirectory of a work tree as plain files, with a note", function()
    R.sh(ws, "echo log > src/x.log")
    local r = prepare { workspace = ws .. "/src" }
    assert.same({ mode = "plain", why = "the workspace is a subdirectory of the git work tree " .. ws
      .. "; it is sent as plain files, without history" }, r.git)
    assert.same({}, r.warnings)
    assert.equal("log\n", helpers.read_file(rd .. "/x.log")) -- as outside git: ignored files too
    assert.is_nil(core.fs_lstat(rd .. "/.git"))
    R.sh(rd, "echo more >> mod0/file1.txt")
    local back = ok(ferry.restore { state = state })
    assert.is_nil(back.git)
    assert.same({ "mod0/file1.txt" }, back.changed)
  end)

  it("sends a SHA-256 repository's files without its history", function()
    local dir = box.tmp .. "/sha256"
    R.sh(box.tmp, "git init -q --object-format=sha256 -b main sha256 && cd sha256 && git config user.name U && "
      .. "git config user.email u@x && echo a > a.txt && git add a.txt && git commit -qm one && echo b > b.txt")
    local r = prepare { workspace = dir }
    local why = "the repository's object format is sha256 (only sha1 history is sent)"
    assert.same({ mode = "files", why = why }, r.git)
    assert.same({ why .. "; the files are sent without history" }, r.warnings)
    assert.is_nil(core.fs_lstat(rd .. "/.git"))
    assert.equal("b\n", helpers.read_file(rd .. "/b.txt"))
    R.sh(rd, "echo more >> a.txt")
    local back = ok(ferry.restore { state = state })
    assert.is_nil(back.git)
    assert.same({ "a.txt" }, back.changed)
    assert.equal(" M a.txt\n?? b.txt\n", R.status(dir))
  end)

  describe("inbound adopt", function()
    it("takes a workspace already in the sandbox as the baseline without sending it", function()
      local host = box.tmp .. "/host"
      R.sh(box.tmp, "mkdir -p host/src work/src && echo a > work/a.txt && echo b > work/src/b.txt && "
        .. "echo sandbox > work/only-there.txt && echo a > host/a.txt && echo b > host/src/b.txt && "
        .. "echo mine > host/only-here.txt")
      local r = prepare { workspace = host, inbound = "adopt" }
      assert.same({ inbound = "adopt", commands = 1, bytes_sent = 0, files = 3, dirs = 1, delta = false },
        { inbound = r.inbound, commands = r.commands, bytes_sent = r.bytes_sent, files = r.files, dirs = r.dirs,
          delta = r.delta })
      assert.is_nil(r.git)
      assert.is_nil(core.fs_lstat(rd .. "/only-here.txt")) -- nothing was sent
      R.sh(rd, "echo changed > a.txt")
      local back = ok(ferry.restore { state = state })
      assert.same({ "a.txt" }, back.changed)
      assert.same({}, back.conflicts)
      assert.equal("changed\n", helpers.read_file(host .. "/a.txt"))
      assert.is_nil(core.fs_lstat(host .. "/only-there.txt")) -- unchanged since it was adopted
      assert.equal("mine\n", helpers.read_file(host .. "/only-here.txt"))
      -- the next prepare is a delta from the adopted tree
      local again = prepare { workspace = host }
      assert.is_true(again.delta)
      assert.equal("mine\n", helpers.read_file(rd .. "/only-here.txt"))
      assert.is_nil(core.fs_lstat(rd .. "/only-there.txt"))
    end)

    it("records the HEAD of an adopted repository and brings its commits back", function()
      R.sh(repo.tmp, "rmdir " .. rd .. " && git clone -q file://" .. ws .. " " .. rd)
      local r = prepare { inbound = "adopt" }
      assert.same({ mode = "history", pack = "adopted", head = repo.head, ref = "refs/heads/feature",
        branch = "feature", commits = 0, bytes = 0 }, r.git)
      assert.equal("/.ferry-runtime/\n", R.sh(rd, "grep -x /.ferry-runtime/ .git/info/exclude"))
      R.sh(rd, "git config user.name A && git config user.email a@x && echo one > one.txt && git add one.txt && "
        .. "git commit -qm 'agent one'")
      local back = ok(ferry.restore { state = state })
      assert.same({ mode = "fast-forward", ref = "refs/heads/feature", old = repo.head,
        new = R.head(rd), commits = 1, branch = "feature" }, back.git)
      assert.equal("", R.status(ws))
      assert.equal("one\n", helpers.read_file(ws .. "/one.txt"))
    end)

    it("fails when there is no workspace in the sandbox to adopt", function()
      R.sh(repo.tmp, "rmdir " .. rd)
      local r, err, code = ferry.prepare { provider = box.provider, workspace = ws, remote_dir = rd, state = state,
        inbound = "adopt" }
      assert.is_nil(r)
      assert.equal("prepare: adopt: " .. rd .. " does not exist in the sandbox; nothing to adopt", err)
      assert.equal("ENOENT", code)
      r, err, code = ferry.prepare { provider = box.provider, workspace = ws, remote_dir = rd, inbound = "move" }
      assert.is_nil(r)
      assert.equal('prepare: inbound must be "copy" or "adopt", got move', err)
      assert.equal("EINVAL", code)
    end)
  end)

  describe("references", function()
    it("stages other projects read-only, never restores them, and warns about one it cannot stage", function()
      local lib = box.tmp .. "/lib"
      R.sh(box.tmp, "mkdir -p lib/docs && echo api > lib/docs/api.md && echo tool > lib/tool.sh")
      local other = R.make { commits = 2 }
      R.sh(other.dir, "echo log > debug.log")
      local r = prepare { references = { lib = lib, other = other.dir, gone = "/nonexistent/x" } }
      local refs = rd .. "/.ferry-runtime/references"
      assert.same({ lib = refs .. "/lib", other = refs .. "/other" }, r.reference_dirs)
      assert.equal("reference gone: /nonexistent/x: lstat /nonexistent: No such file or directory; not staged",
        r.warnings[1])
      assert.equal(3, r.commands)
      assert.equal("api\n", helpers.read_file(refs .. "/lib/docs/api.md"))
      for _, rel in ipairs { "lib", "lib/docs", "lib/docs/api.md", "lib/tool.sh", "other/" .. R.path_of(1) } do
        assert.equal(0, assert(core.fs_lstat(refs .. "/" .. rel)).mode & 146, rel) -- no write bit (0222)
      end
      assert.is_nil(core.fs_lstat(refs .. "/other/.git"))
      assert.is_nil(core.fs_lstat(refs .. "/other/debug.log"))
      -- never restored, even when changed in the sandbox
      R.sh(refs, "chmod u+w lib && echo agent > lib/new.txt")
      local back = ok(ferry.restore { state = state })
      assert.same({}, back.changed)
      assert.is_nil(core.fs_lstat(ws .. "/.ferry-runtime"))
      -- each prepare stages exactly the references it names
      prepare()
      assert.is_nil(core.fs_lstat(refs))
      local bad, err, code = ferry.prepare { provider = box.provider, workspace = ws, remote_dir = rd,
        references = { ["../x"] = lib } }
      assert.is_nil(bad)
      assert.equal([[prepare: reference name "../x" must be letters, digits, '_', '.' or '-']], err)
      assert.equal("EINVAL", code)
      helpers.rmtree(other.tmp)
    end)
  end)
end)
