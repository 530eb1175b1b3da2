local ferry = require "ferry"
local core = require "ferry.core"
local helpers = require "support.helpers"

local oct, sh, fd_count = helpers.oct, helpers.sh, helpers.fd_count


-- Names in dir that look like ferry's temp files.
local function temp_files(dir)
  local found = {}
  for _, name in ipairs(assert(core.fs_readdir(dir))) do
    if name:match("^%.ferry%-tmp%-") then found[#found + 1] = name end
  end
  return found
end

describe("core.fs (plain)", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmtree(dir) end)

  it("lstat reports each kind with mode, size, mtime, ino, dev, nlink", function()
    helpers.write_file(dir .. "/f", "hello")
    sh("chmod 4751 " .. dir .. "/f && ln " .. dir .. "/f " .. dir .. "/hard")
    sh("mkdir " .. dir .. "/d && chmod 1777 " .. dir .. "/d")
    sh("ln -s f " .. dir .. "/l && mkfifo " .. dir .. "/p")
    local f = assert(core.fs_lstat(dir .. "/f"))
    assert.equal("file", f.kind)
    assert.equal(oct "4751", f.mode)
    assert.equal(5, f.size)
    assert.equal(2, f.nlink)
    assert.is_true(math.abs(f.mtime - os.time()) < 60)
    local hard = assert(core.fs_lstat(dir .. "/hard"))
    assert.same({ f.ino, f.dev }, { hard.ino, hard.dev })
    local d = assert(core.fs_lstat(dir .. "/d"))
    assert.same({ "dir", oct "1777" }, { d.kind, d.mode })
    local l = assert(core.fs_lstat(dir .. "/l"))
    assert.same({ "symlink", 1 }, { l.kind, l.size })
    assert.equal("fifo", core.fs_lstat(dir .. "/p").kind)
    assert.equal("char", core.fs_lstat("/dev/null").kind)
    assert.equal("file", core.fs_stat(dir .. "/l").kind, "stat follows the link")
  end)

  it("lstat reports a socket", function()
    local sock = dir .. "/s"
    if not os.execute("python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' " .. sock
        .. " 2>/dev/null") then
      pending("python3 is needed to make a unix socket")
      return
    end
    assert.equal("socket", core.fs_lstat(sock).kind)
  end)

  it("fails with the path, the reason and the code", function()
    assert.same({ nil, "lstat " .. dir .. "/nope: No such file or directory", "ENOENT" },
      { core.fs_lstat(dir .. "/nope") })
    assert.same({ nil, "stat " .. dir .. "/nope: No such file or directory", "ENOENT" },
      { core.fs_stat(dir .. "/nope") })
    sh("ln -s nope " .. dir .. "/dangling")
    assert.equal("ENOENT", select(3, core.fs_stat(dir .. "/dangling")))
    assert.equal("symlink", core.fs_lstat(dir .. "/dangling").kind)
    assert.has_error(function() core.fs_lstat(42) end, "fs_lstat: path must be a string, got number")
    assert.has_error(function() core.fs_lstat("a\0b") end, "fs_lstat: path contains a NUL byte")
  end)

  it("readdir lists names sorted bytewise without . and ..", function()
    for _, name in ipairs { "b", "a b", "\255x", "-dash", "B", "caf\xc3\xa9" } do
      helpers.write_file(dir .. "/" .. name, "")
    end
    assert.same({ "-dash", "B", "a b", "b", "caf\xc3\xa9", "\255x" }, core.fs_readdir(dir))
    sh("mkdir " .. dir .. "/empty")
    assert.same({}, core.fs_readdir(dir .. "/empty"))
    assert.same({ nil, "readdir " .. dir .. "/nope: No such file or directory", "ENOENT" },
      { core.fs_readdir(dir .. "/nope") })
    assert.equal("ENOTDIR", select(3, core.fs_readdir(dir .. "/b")))
  end)

  it("readlink returns the target bytes", function()
    sh("ln -s '../x y/\xff' " .. dir .. "/l")
    assert.equal("../x y/\xff", core.fs_readlink(dir .. "/l"))
    helpers.write_file(dir .. "/f", "")
    assert.same({ nil, "readlink " .. dir .. "/f: Invalid argument", "EINVAL" }, { core.fs_readlink(dir .. "/f") })
  end)
end)

describe("core.fs_safe_*", function()
  local dir, ws, outside
  before_each(function()
    dir = helpers.tmpdir()
    ws, outside = dir .. "/ws", dir .. "/outside"
    sh("mkdir " .. ws .. " " .. outside)
    sh("ln -s " .. outside .. " " .. ws .. "/evil")
  end)
  after_each(function() helpers.rmtree(dir) end)

  it("write creates parents, keeps the mode, drops setuid/setgid/sticky", function()
    assert.is_true(core.fs_safe_write(ws, "a/b c/d", "data", oct "640"))
    assert.equal("data", helpers.read_file(ws .. "/a/b c/d"))
    assert.equal(oct "640", core.fs_lstat(ws .. "/a/b c/d").mode)
    assert.is_true(core.fs_safe_write(ws, "s", "x", oct "7755"))
    assert.equal(oct "755", core.fs_lstat(ws .. "/s").mode)
    assert.is_true(core.fs_safe_write(ws, "default", ""))
    assert.same({ 0, oct "644" }, { core.fs_lstat(ws .. "/default").size, core.fs_lstat(ws .. "/default").mode })
    assert.same({}, temp_files(ws))
    assert.same({}, temp_files(ws .. "/a/b c"))
  end)

  it("write refuses a symlinked parent dir: ELOOP and nothing outside", function()
    assert.same({ nil, "write " .. ws .. "/evil/x: " .. ws .. "/evil is a symbolic link, not followed", "ELOOP" },
      { core.fs_safe_write(ws, "evil/x", "pwned") })
    sh("mkdir " .. ws .. "/a && ln -s " .. outside .. " " .. ws .. "/a/evil")
    assert.same({ nil, "write " .. ws .. "/a/evil/b/x: " .. ws .. "/a/evil is a symbolic link, not followed", "ELOOP" },
      { core.fs_safe_write(ws, "a/evil/b/x", "pwned") })
    sh("ln -s . " .. ws .. "/self")
    assert.equal("ELOOP", select(3, core.fs_safe_write(ws, "self/x", "pwned")))
    assert.same({}, core.fs_readdir(outside))
    assert.is_nil(core.fs_lstat(ws .. "/x"))
  end)

  it("write replaces a symlink leaf instead of following it", function()
    helpers.write_file(outside .. "/target", "orig")
    sh("ln -s " .. outside .. "/target " .. ws .. "/leaf")
    assert.is_true(core.fs_safe_write(ws, "leaf", "new", oct "600"))
    assert.equal("file", core.fs_lstat(ws .. "/leaf").kind)
    assert.equal("new", helpers.read_file(ws .. "/leaf"))
    assert.equal("orig", helpers.read_file(outside .. "/target"))
  end)

  it("write fails on a directory leaf or a file parent and leaves no temp file", function()
    sh("mkdir " .. ws .. "/d && touch " .. ws .. "/d/keep")
    assert.same({ nil, "write " .. ws .. "/d: Is a directory", "EISDIR" }, { core.fs_safe_write(ws, "d", "x") })
    helpers.write_file(ws .. "/file", "f")
    assert.same({ nil, "write " .. ws .. "/file/x: " .. ws .. "/file is not a directory", "ENOTDIR" },
      { core.fs_safe_write(ws, "file/x", "x") })
    assert.same({}, temp_files(ws))
    assert.same({ "keep" }, core.fs_readdir(ws .. "/d"))
    assert.same({ nil, "write " .. dir .. "/nope/x: No such file or directory", "ENOENT" },
      { core.fs_safe_write(dir .. "/nope", "x", "") })
  end)

  it("raises on a rel that is not a plain relative path, and on bad arguments", function()
    local msg = "fs_safe_write: rel must be a relative path without empty, '.' or '..' components, got '%s'"
    for _, rel in ipairs { "", "/abs", "../x", "a/../../x", "a//b", "a/./b", ".", "a/", "a/..", "x\0y" } do
      assert.has_error(function() core.fs_safe_write(ws, rel, "x") end, msg:format(rel:gsub("%z.*", "")))
    end
    assert.has_error(function() core.fs_safe_write(ws, "x", 1) end, "fs_safe_write: data must be a string, got number")
    assert.has_error(function() core.fs_safe_write(ws, "x", "", 4096) end,
      "fs_safe_write: mode must be in 0..07777, got 4096")
    assert.has_error(function() core.fs_safe_write(ws, "x", "", "644") end,
      "fs_safe_write: mode must be an integer, got string")
    assert.has_error(function() core.fs_safe_lstat(nil, "x") end, "fs_safe_lstat: root must be a string, got nil")
    assert.has_error(function() core.fs_safe_chmod(ws, "x") end, "fs_safe_chmod: mode must be an integer, got no value")
  end)

  it("lstat: missing, through a symlink, a symlink leaf", function()
    assert.same({ nil, "lstat " .. ws .. "/nope: No such file or directory", "ENOENT" },
      { core.fs_safe_lstat(ws, "nope") })
    assert.equal("ENOENT", select(3, core.fs_safe_lstat(ws, "nope/deeper")))
    helpers.write_file(outside .. "/x", "secret")
    assert.same({ nil, "lstat " .. ws .. "/evil/x: " .. ws .. "/evil is a symbolic link, not followed", "ELOOP" },
      { core.fs_safe_lstat(ws, "evil/x") })
    assert.equal("symlink", core.fs_safe_lstat(ws, "evil").kind)
    core.fs_safe_write(ws, "a/f", "12345", oct "600")
    local st = core.fs_safe_lstat(ws, "a/f")
    assert.same({ "file", 5, oct "600" }, { st.kind, st.size, st.mode })
  end)

  it("mkdir makes parents, applies the mode, accepts an existing dir, refuses links and files", function()
    assert.is_true(core.fs_safe_mkdir(ws, "a/b/c", oct "750"))
    assert.same({ "dir", oct "750" }, { core.fs_lstat(ws .. "/a/b/c").kind, core.fs_lstat(ws .. "/a/b/c").mode })
    assert.is_true(core.fs_safe_mkdir(ws, "a/b/c", oct "3700"))
    assert.equal(oct "700", core.fs_lstat(ws .. "/a/b/c").mode)
    assert.is_true(core.fs_safe_mkdir(ws, "a/b/c"))
    assert.same({ nil, "mkdir " .. ws .. "/evil: " .. ws .. "/evil is a symbolic link, not followed", "ELOOP" },
      { core.fs_safe_mkdir(ws, "evil") })
    assert.equal("ELOOP", select(3, core.fs_safe_mkdir(ws, "evil/sub")))
    helpers.write_file(ws .. "/f", "")
    assert.same({ nil, "mkdir " .. ws .. "/f: " .. ws .. "/f exists and is not a directory", "EEXIST" },
      { core.fs_safe_mkdir(ws, "f") })
    assert.same({}, core.fs_readdir(outside))
  end)

  it("symlink creates or replaces the leaf, never through a symlinked parent", function()
    assert.is_true(core.fs_safe_symlink(ws, "d/l", "../target with space"))
    assert.equal("../target with space", core.fs_readlink(ws .. "/d/l"))
    helpers.write_file(ws .. "/f", "x")
    assert.is_true(core.fs_safe_symlink(ws, "f", "t2"))
    assert.equal("t2", core.fs_readlink(ws .. "/f"))
    assert.is_true(core.fs_safe_symlink(ws, "evil", "elsewhere"))
    assert.equal("elsewhere", core.fs_readlink(ws .. "/evil"), "the link itself was replaced")
    sh("ln -sfn " .. outside .. " " .. ws .. "/evil")
    assert.equal("ELOOP", select(3, core.fs_safe_symlink(ws, "evil/l", "/etc/passwd")))
    assert.same({}, core.fs_readdir(outside))
    assert.same({}, temp_files(ws))
  end)

  it("remove unlinks files and links, rmdirs empty dirs, and accepts missing paths", function()
    helpers.write_file(outside .. "/keep", "k")
    assert.is_true(core.fs_safe_remove(ws, "evil"))
    assert.is_nil(core.fs_lstat(ws .. "/evil"))
    assert.equal("k", helpers.read_file(outside .. "/keep"))
    core.fs_safe_write(ws, "d/f", "x")
    assert.same({ nil, "remove " .. ws .. "/d: Directory not empty", "ENOTEMPTY" }, { core.fs_safe_remove(ws, "d") })
    assert.is_true(core.fs_safe_remove(ws, "d/f"))
    assert.is_true(core.fs_safe_remove(ws, "d"))
    assert.is_nil(core.fs_lstat(ws .. "/d"))
    assert.is_true(core.fs_safe_remove(ws, "nope"))
    assert.is_true(core.fs_safe_remove(ws, "nope/deeper/x"))
    sh("ln -s " .. outside .. " " .. ws .. "/evil")
    assert.equal("ELOOP", select(3, core.fs_safe_remove(ws, "evil/keep")))
    assert.equal("k", helpers.read_file(outside .. "/keep"))
  end)

  it("rename moves within the root, making parents, never through links", function()
    core.fs_safe_write(ws, "a", "A")
    assert.is_true(core.fs_safe_rename(ws, "a", "x/y/b"))
    assert.equal("A", helpers.read_file(ws .. "/x/y/b"))
    assert.is_nil(core.fs_lstat(ws .. "/a"))
    assert.equal("ELOOP", select(3, core.fs_safe_rename(ws, "x/y/b", "evil/b")))
    helpers.write_file(outside .. "/s", "secret")
    assert.equal("ELOOP", select(3, core.fs_safe_rename(ws, "evil/s", "stolen")))
    assert.same({ "s" }, core.fs_readdir(outside))
    assert.same({ nil, "rename " .. ws .. "/nope to " .. ws .. "/z: No such file or directory", "ENOENT" },
      { core.fs_safe_rename(ws, "nope", "z") })
  end)

  it("chmod sets the mode masked to 0777 and refuses a symlink leaf", function()
    core.fs_safe_write(ws, "f", "x", oct "600")
    assert.is_true(core.fs_safe_chmod(ws, "f", oct "4755"))
    assert.equal(oct "755", core.fs_lstat(ws .. "/f").mode)
    helpers.write_file(outside .. "/t", "x")
    sh("chmod 600 " .. outside .. "/t && ln -s " .. outside .. "/t " .. ws .. "/l")
    assert.same({ nil, "chmod " .. ws .. "/l: " .. ws .. "/l is a symbolic link, not followed", "ELOOP" },
      { core.fs_safe_chmod(ws, "l", oct "777") })
    assert.equal(oct "600", core.fs_lstat(outside .. "/t").mode)
  end)

  it("does not leak descriptors, on success or failure", function()
    core.fs_safe_write(ws, "warm", "x")
    local before = fd_count()
    for i = 1, 300 do
      core.fs_safe_write(ws, "d/f" .. i % 7, "x")
      core.fs_safe_write(ws, "evil/x", "x")
      core.fs_safe_write(ws, "d", "x")
      core.fs_safe_lstat(ws, "d/f1")
      core.fs_safe_mkdir(ws, "m/n")
      core.fs_safe_symlink(ws, "m/l", "t")
      core.fs_safe_rename(ws, "m/l", "m/l2")
      core.fs_safe_chmod(ws, "m/l2", oct "644")
      core.fs_safe_remove(ws, "m/l2")
      core.fs_readdir(ws)
      core.fs_lock(ws .. "/lock"):unlock()
    end
    assert.equal(before, fd_count())
    assert.same({}, temp_files(ws .. "/d"))
  end)
end)

describe("core.fs_lock", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmtree(dir) end)

  it("is exclusive, also within one process, until unlocked", function()
    local path = dir .. "/lock"
    local lock = assert(core.fs_lock(path))
    assert.same({ nil, "lock " .. path .. ": held by another process", "EBUSY" }, { core.fs_lock(path) })
    assert.equal(1, ferry.proc.run({ argv = { "flock", "-n", path, "true" } }).code, "a child cannot take it")
    assert.is_true(lock:unlock())
    assert.is_true(lock:unlock(), "unlocking twice is harmless")
    assert.equal(0, ferry.proc.run({ argv = { "flock", "-n", path, "true" } }).code)
    local again = assert(core.fs_lock(path))
    again:unlock()
  end)

  it("fails with EBUSY while another process holds it", function()
    local path = dir .. "/lock"
    local held, result
    local child = ferry.spawn(function()
      return ferry.proc.run {
        argv = { "flock", "-n", path, "sh", "-c", "echo held; sleep 1" },
        on_stdout = function() held = true end,
      }
    end)
    local probe = ferry.spawn(function()
      while not held do ferry.sleep(10) end
      result = { core.fs_lock(path) }
    end)
    ferry.wait { child, probe }
    assert.same({ nil, "lock " .. path .. ": held by another process", "EBUSY" }, result)
    local lock = assert(core.fs_lock(path), "free again once the child exited")
    lock:unlock()
  end)

  it("is released when the lock is closed or collected", function()
    local path = dir .. "/lock"
    do
      local held <close> = assert(core.fs_lock(path))
      assert.equal("fs lock (held)", tostring(held))
      assert.is_nil(core.fs_lock(path))
    end
    assert(core.fs_lock(path)) -- dropped without unlock: the collector releases it
    collectgarbage()
    collectgarbage()
    local again = assert(core.fs_lock(path))
    again:unlock()
    assert.equal("fs lock (released)", tostring(again))
    assert.same({ nil, "lock " .. dir .. "/nope/lock: No such file or directory", "ENOENT" },
      { core.fs_lock(dir .. "/nope/lock") })
  end)
end)

describe("core.fs_mkdtemp and fs_remove_tree", function()
  it("makes a fresh private dir and removes a tree without following links", function()
    local outside = helpers.tmpdir()
    helpers.write_file(outside .. "/keep", "k")
    local d = assert(core.fs_mkdtemp("ferry-spec-"))
    assert.truthy(d:match("^/.+/ferry%-spec%-%w%w%w%w%w%w$"))
    assert.same({ "dir", oct "700" }, { core.fs_lstat(d).kind, core.fs_lstat(d).mode })
    local other = assert(core.fs_mkdtemp("ferry-spec-"))
    assert.are_not.equal(d, other)
    assert.is_true(core.fs_remove_tree(other))
    sh("mkdir -p " .. d .. "/a/b/ro && touch " .. d .. "/a/b/ro/f && chmod 500 " .. d .. "/a/b/ro")
    sh("ln -s " .. outside .. " " .. d .. "/a/link && touch '" .. d .. "/a/x\ny'")
    assert.is_true(core.fs_remove_tree(d))
    assert.is_nil(core.fs_lstat(d))
    assert.equal("k", helpers.read_file(outside .. "/keep"))
    assert.is_true(core.fs_remove_tree(d), "missing is fine")
    local d2 = assert(core.fs_mkdtemp(outside .. "/sub-"))
    assert.equal(outside .. "/sub-", d2:sub(1, #outside + 5))
    assert.equal("ENOENT", select(3, core.fs_mkdtemp(outside .. "/nope/x-")))
    assert.has_error(function() core.fs_remove_tree("/") end, "fs_remove_tree: refusing to remove /")
    helpers.rmtree(outside)
  end)
end)
