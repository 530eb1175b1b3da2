local ferry = require "ferry"
local core = require "ferry.core"
local helpers = require "support.helpers"

local oct, sh, fd_count = helpers.oct, helpers.sh, helpers.fd_count

local function run(argv, cwd)
  return assert(ferry.proc.run { argv = argv, cwd = cwd })
end


-- Relative paths under dir, each dir before its contents (the order tar_writer wants).
local function walk(dir, prefix, out)
  out = out or {}
  for _, name in ipairs(assert(core.fs_readdir(prefix and dir .. "/" .. prefix or dir))) do
    local rel = prefix and prefix .. "/" .. name or name
    out[#out + 1] = rel
    if core.fs_lstat(dir .. "/" .. rel).kind == "dir" then walk(dir, rel, out) end
  end
  return out
end

-- rel -> what a user would compare: kind, mode, and content hash or link target.
local function snapshot(dir)
  local snap = {}
  for _, rel in ipairs(walk(dir)) do
    local st = core.fs_lstat(dir .. "/" .. rel)
    local e = { kind = st.kind, mode = st.mode }
    if st.kind == "file" then e.sha256 = core.sha256_file(dir .. "/" .. rel) end
    if st.kind == "symlink" then e.target = core.fs_readlink(dir .. "/" .. rel) end
    snap[rel] = e
  end
  return snap
end

-- Stream an archive of names under root into a file; returns the path, the writer and the chunk sizes.
local function write_archive(path, root, names, opts)
  local w = assert(core.tar_writer(root, names, opts))
  local f = assert(io.open(path, "wb"))
  local sizes = {}
  for chunk in w.read, w do
    sizes[#sizes + 1] = #chunk
    f:write(chunk)
  end
  f:close()
  return path, w, sizes
end

local function scan_names(path)
  local names = {}
  for i, e in ipairs(assert(core.tar_scan(path))) do names[i] = e.name end
  return names
end

-- Names a workspace may hold that trip up shells and tars.
local AWKWARD = { "with space", "it's \"quoted\"", "new\nline", "-leading-dash", "--help", "caf\xc3\xa9 \xe2\x9c\x93",
  "bad\xff\xfeutf8", "tab\there", "back\\slash", "*glob?[x]" }

local function make_workspace(ws)
  sh("mkdir -p " .. ws .. "/src/deep/er " .. ws .. "/empty " .. ws .. "/src/empty2")
  for _, name in ipairs(AWKWARD) do helpers.write_file(ws .. "/src/" .. name, "content of " .. name) end
  helpers.write_file(ws .. "/src/deep/er/bin", "\0\1\2\255\r\n\0")
  helpers.write_file(ws .. "/zero", "")
  sh("head -c 20971520 /dev/urandom > " .. ws .. "/big && chmod 750 " .. ws .. "/big")
  sh("chmod 4755 " .. ws .. "/src/deep/er/bin && chmod 700 " .. ws .. "/src/deep")
  sh("ln -s 'src/with space' " .. ws .. "/link && ln -s /nonexistent/target " .. ws .. "/dangling")
  sh("ln -s ../.. " .. ws .. "/src/up")
end

describe("core.tar_writer", function()
  local dir, ws
  before_each(function()
    dir = helpers.tmpdir()
    ws = dir .. "/ws"
    sh("mkdir " .. ws)
  end)
  after_each(function() helpers.rmtree(dir) end)

  it("makes an archive that GNU tar and busybox tar extract to an exact copy", function()
    make_workspace(ws)
    local tarfile, w = write_archive(dir .. "/ws.tar", ws, walk(ws))
    assert.same({}, w:warnings())
    local want = snapshot(ws)
    sh("mkdir " .. dir .. "/gnu " .. dir .. "/bb")
    local gnu = run({ "tar", "-xf", tarfile }, dir .. "/gnu")
    assert.equal(0, gnu.code, gnu.stderr)
    assert.same(want, snapshot(dir .. "/gnu"))
    local bb = run({ "busybox", "tar", "-xf", tarfile }, dir .. "/bb")
    assert.equal(0, bb.code, bb.stderr)
    assert.same(want, snapshot(dir .. "/bb"))
    -- and through a pipe, as it travels to a sandbox
    sh("mkdir " .. dir .. "/piped")
    local piped = assert(ferry.proc.run { argv = { "tar", "-xf", "-" }, cwd = dir .. "/piped",
      stdin = helpers.read_file(tarfile) })
    assert.equal(0, piped.code, piped.stderr)
    assert.same(want, snapshot(dir .. "/piped"))
  end)

  it("names entries exactly as given: no ./ entry, dirs before contents, uid/gid 0", function()
    sh("mkdir " .. ws .. "/d && touch " .. ws .. "/d/f " .. ws .. "/-x")
    local tarfile = write_archive(dir .. "/t.tar", ws, { "-x", "d", "d/f" })
    assert.same({ "-x", "d/", "d/f" }, scan_names(tarfile))
    local listing = run({ "tar", "--numeric-owner", "-tvf", tarfile }).stdout
    local lines = 0
    for line in listing:gmatch("[^\n]+") do
      lines = lines + 1
      assert.truthy(line:find(" 0/0 ", 1, true), line)
    end
    assert.equal(3, lines)
    assert.equal("-x\nd/\nd/f\n", run({ "busybox", "tar", "-tf", tarfile }).stdout)
  end)

  it("makes a valid empty archive from an empty list", function()
    local tarfile, w, sizes = write_archive(dir .. "/empty.tar", ws, {})
    assert.same({ 1024 }, sizes)
    assert.equal(1024, w:bytes())
    assert.same({}, core.tar_scan(tarfile))
    local gnu = run({ "tar", "-tf", tarfile })
    assert.same({ 0, "" }, { gnu.code, gnu.stdout })
    local bb = run({ "busybox", "tar", "-tf", tarfile })
    assert.same({ 0, "" }, { bb.code, bb.stdout })
  end)

  it("streams a big file in bounded chunks and reports the bytes", function()
    sh("head -c 20971520 /dev/urandom > " .. ws .. "/big")
    local _, w, sizes = write_archive(dir .. "/big.tar", ws, { "big" })
    local total = 0
    for _, n in ipairs(sizes) do
      assert.is_true(n > 0 and n <= 256 * 1024, "chunk of " .. n .. " bytes")
      total = total + n
    end
    assert.is_true(#sizes >= 80)
    assert.equal(total, w:bytes())
    assert.is_nil(w:read())
    assert.is_nil(w:read())
    local e = core.tar_scan(dir .. "/big.tar")[1]
    assert.same({ "big", 20971520, core.sha256_file(ws .. "/big") }, { e.name, e.size, e.sha256 })
  end)

  it("archives a 1 GiB workspace in little memory", function()
    if os.getenv("FERRY_SANITIZED") then
      pending("sanitizers inflate memory")
      return
    end
    sh("truncate -s 1G " .. ws .. "/huge")
    local script = [[
      package.cpath = "build/lua/?.so;" .. package.cpath
      local core = require "ferry.core"
      local w = assert(core.tar_writer(]] .. string.format("%q", ws) .. [[, { "huge" }))
      while w:read() do end
      for line in io.lines("/proc/self/status") do
        local kb = line:match("^VmHWM:%s*(%d+)")
        if kb then print(w:bytes(), kb) end
      end
    ]]
    local r = run({ "lua5.4", "-e", script }, helpers.root)
    assert.equal(0, r.code, r.stderr)
    local bytes, kb = r.stdout:match("^(%d+)\t(%d+)")
    assert.is_true(tonumber(bytes) > 1073741824)
    assert.is_true(tonumber(kb) < 64 * 1024, "peak RSS " .. kb .. " KiB")
  end)

  it("warns about vanished, special and unreachable names and skips them", function()
    sh("mkfifo " .. ws .. "/fifo && mkdir " .. ws .. "/real && touch " .. ws .. "/real/f")
    sh("ln -s real " .. ws .. "/lnk")
    helpers.write_file(ws .. "/ok", "ok")
    local tarfile, w = write_archive(dir .. "/t.tar", ws, { "gone", "fifo", "lnk/f", "ok" })
    assert.same({ "gone: vanished before it was archived", "fifo: skipped, a fifo",
      "lnk/f: not archived: a parent directory is a symbolic link" }, w:warnings())
    assert.same({ "ok" }, scan_names(tarfile))
  end)

  it("follows symlinks when asked, keeping a dangling link as a link", function()
    local outside = dir .. "/outside"
    sh("mkdir " .. outside .. " && ln -s " .. outside .. " " .. ws .. "/home && ln -s nowhere " .. ws .. "/dangling")
    helpers.write_file(outside .. "/cfg", "settings")
    local tarfile = write_archive(dir .. "/t.tar", ws, { "home", "home/cfg", "dangling" }, { follow_symlinks = true })
    local entries = core.tar_scan(tarfile)
    assert.same({ "home/", "dir" }, { entries[1].name, entries[1].kind })
    assert.same({ "home/cfg", "file", core.sha256("settings") },
      { entries[2].name, entries[2].kind, entries[2].sha256 })
    assert.same({ "dangling", "symlink", "nowhere" }, { entries[3].name, entries[3].kind, entries[3].linkname })
  end)

  it("hashes each file as it archives it: the digest of the bytes the archive carries", function()
    make_workspace(ws)
    local names = walk(ws)
    local w = assert(core.tar_writer(ws, names, { hash = true }))
    assert.same({}, w:digests())
    helpers.write_file(ws .. "/src/with space", "changed after the walk") -- the archive carries this
    local tarfile = dir .. "/h.tar"
    local f = assert(io.open(tarfile, "wb"))
    for chunk in w.read, w do f:write(chunk) end
    f:close()
    local want = {}
    for _, e in ipairs(core.tar_scan(tarfile)) do
      if e.kind == "file" then want[e.name] = e.sha256 end
    end
    assert.same(want, w:digests())
    assert.equal(core.sha256("changed after the walk"), w:digests()["src/with space"])
    assert.equal(core.sha256(""), w:digests().zero)
    assert.equal(core.sha256_file(ws .. "/big"), w:digests().big)
    assert.is_nil(w:digests().link)
    assert.is_nil(w:digests().src)
    assert.has_error(function() core.tar_writer(ws, { "zero" }):digests() end,
      "tar_writer: digests: the writer was made without opts.hash")
  end)

  it("hashes the zeros that stand for a file that shrank mid-way, and nothing for a file cut off", function()
    sh("head -c 4000000 /dev/urandom > " .. ws .. "/f && cp " .. ws .. "/f " .. dir .. "/copy")
    local w = assert(core.tar_writer(ws, { "f" }, { hash = true }))
    local parts = { assert(w:read()) }
    sh("truncate -s 1000000 " .. ws .. "/f")
    for chunk in w.read, w do parts[#parts + 1] = chunk end
    helpers.write_file(dir .. "/shrunk.tar", table.concat(parts))
    assert.matches("^f: shrank while being archived", w:warnings()[1])
    local e = core.tar_scan(dir .. "/shrunk.tar")[1]
    assert.equal(e.sha256, w:digests().f)
    assert.are_not.equal(core.sha256_file(dir .. "/copy"), w:digests().f)
    local cut = assert(core.tar_writer(dir, { "copy" }, { hash = true }))
    assert.is_string(cut:read())
    cut:close()
    assert.same({}, cut:digests())
  end)

  it("fails on a missing root, raises on misuse and after close, and releases files", function()
    assert.same({ nil, "tar_writer " .. dir .. "/nope: No such file or directory", "ENOENT" },
      { core.tar_writer(dir .. "/nope", {}) })
    assert.has_error(function() core.tar_writer(ws, "x") end, "tar_writer: names must be a table or a tree, got string")
    assert.has_error(function() core.tar_writer(ws, { "a", 3 }) end,
      "tar_writer: names[2] must be a string, got number")
    assert.has_error(function() core.tar_writer(ws, { "../etc" }) end,
      "tar_writer: names[1] must be a relative path without empty, '.' or '..' components, got '../etc'")
    assert.has_error(function() core.tar_writer(ws, { "./a" }) end)
    assert.has_error(function() core.tar_writer(ws, { "/abs" }) end)
    sh("head -c 4000000 /dev/zero > " .. ws .. "/f")
    local before = fd_count()
    for _ = 1, 50 do
      local w = core.tar_writer(ws, { "f" })
      assert.is_string(w:read()) -- mid-file: the file is open
      w:close()
      assert.has_error(function() w:read() end, "tar_writer: read after close")
    end
    for _ = 1, 50 do
      core.tar_writer(ws, { "f" }):read()
    end
    collectgarbage()
    collectgarbage()
    assert.equal(before, fd_count())
  end)
end)

describe("core.tar_scan", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() helpers.rmtree(dir) end)

  -- A tree with the entries a hostile sandbox would send, archived by GNU tar with -P (names kept as given).
  local function hostile_tree()
    local src = dir .. "/src"
    sh("mkdir -p " .. src .. "/d && cd " .. src .. " && printf abc > d/f && ln d/f d/hl && mkfifo d/fifo")
    sh("cd " .. src .. " && printf xyz > d/suid && chmod 4755 d/suid && ln -s /etc/passwd d/sl")
    local dev = os.execute("mknod " .. src .. "/d/null c 1 3 2>/dev/null")
    return src, dev
  end

  local function by_name(entries)
    local t = {}
    for _, e in ipairs(entries) do t[e.name] = e end
    return t
  end

  for _, format in ipairs { "gnu", "pax", "ustar" } do
    it("reports hostile entries of a GNU tar " .. format .. " archive faithfully", function()
      local src, dev = hostile_tree()
      local tarfile = dir .. "/h.tar"
      local r = run({ "tar", "--format=" .. format, "-cPf", tarfile, "d", src .. "/d/f", "../src/d/f" }, src)
      assert.equal(0, r.code, r.stderr)
      local entries = assert(core.tar_scan(tarfile))
      local e = by_name(entries)
      assert.equal("d/", entries[1].name)
      assert.same({ "file", 3, oct "644", core.sha256("abc") }, { e["d/hl"].kind, e["d/hl"].size, e["d/hl"].mode,
        e["d/hl"].sha256 })
      assert.same({ "hardlink", "d/hl" }, { e["d/f"].kind, e["d/f"].linkname })
      assert.is_nil(e["d/f"].sha256)
      assert.same({ "hardlink", "d/hl" }, { e[src .. "/d/f"].kind, e[src .. "/d/f"].linkname }, "absolute name")
      assert.same({ "hardlink", "d/hl" }, { e["../src/d/f"].kind, e["../src/d/f"].linkname }, "dot-dot name")
      assert.equal("fifo", e["d/fifo"].kind)
      assert.same({ "file", oct "4755" }, { e["d/suid"].kind, e["d/suid"].mode })
      assert.same({ "symlink", "/etc/passwd" }, { e["d/sl"].kind, e["d/sl"].linkname })
      if dev then assert.equal("char", e["d/null"].kind) end
      assert.is_true(math.abs(e["d/suid"].mtime - os.time()) < 60)
    end)
  end

  it("reads busybox tar output and absolute and dot-dot names as stored", function()
    local src = hostile_tree()
    local tarfile = dir .. "/bb.tar"
    assert.equal(0, run({ "busybox", "tar", "-cf", tarfile, "d" }, src).code)
    local e = by_name(core.tar_scan(tarfile))
    assert.same({ "hardlink", "d/hl" }, { e["d/f"].kind, e["d/f"].linkname })
    assert.same({ "symlink", "/etc/passwd" }, { e["d/sl"].kind, e["d/sl"].linkname })
    sh("mkdir -p " .. dir .. "/a/b && printf z > " .. dir .. "/x")
    local dd = dir .. "/dd.tar"
    assert.equal(0, run({ "tar", "-cPf", dd, "../../x", dir .. "/x" }, dir .. "/a/b").code)
    assert.same({ "../../x", dir .. "/x" }, scan_names(dd))
  end)

  it("keeps long names and link targets, in GNU and pax formats", function()
    local long = ("n"):rep(120) .. "/" .. ("\xc3\xa9"):rep(90) .. "/" .. ("x"):rep(200)
    sh("mkdir -p " .. dir .. "/src/'" .. long:match("^(.*)/") .. "'")
    helpers.write_file(dir .. "/src/" .. long, "deep")
    local target = ("t"):rep(300)
    sh("ln -s " .. target .. " " .. dir .. "/src/l")
    for _, format in ipairs { "gnu", "pax" } do
      local tarfile = dir .. "/" .. format .. ".tar"
      assert.equal(0, run({ "tar", "--format=" .. format, "-cf", tarfile, long, "l" }, dir .. "/src").code)
      local entries = core.tar_scan(tarfile)
      assert.same({ long, core.sha256("deep") }, { entries[1].name, entries[1].sha256 })
      assert.same({ "l", target }, { entries[2].name, entries[2].linkname })
    end
  end)

  it("stops an archive bomb at max_bytes with EFBIG", function()
    sh("mkdir " .. dir .. "/src && head -c 3000 /dev/zero > " .. dir .. "/src/a && head -c 3000 /dev/zero > "
      .. dir .. "/src/b")
    local tarfile = write_archive(dir .. "/t.tar", dir .. "/src", { "a", "b" })
    assert.same({ nil, "archive exceeds the 5000 byte limit at b", "EFBIG" },
      { core.tar_scan(tarfile, { max_bytes = 5000 }) })
    assert.same({ nil, "archive exceeds the 2999 byte limit at a", "EFBIG" },
      { core.tar_scan(tarfile, { max_bytes = 2999 }) })
    assert.equal(2, #core.tar_scan(tarfile, { max_bytes = 6000 }))
    assert.same({ nil, "archive exceeds the 1 entry limit at b", "EFBIG" },
      { core.tar_scan(tarfile, { max_entries = 1 }) })
    assert.has_error(function() core.tar_scan(tarfile, { max_bytes = -1 }) end,
      "tar_scan: opts.max_bytes must be a non-negative integer")
  end)

  it("fails with EINVAL on garbage and truncation, ENOENT when missing; an empty file is empty", function()
    local garbage = helpers.write_temp(("not a tar "):rep(200))
    assert.same({ nil, "bad archive: Unrecognized archive format", "EINVAL" }, { core.tar_scan(garbage) })
    os.remove(garbage)
    sh("mkdir " .. dir .. "/src && head -c 100000 /dev/urandom > " .. dir .. "/src/f")
    local tarfile = write_archive(dir .. "/t.tar", dir .. "/src", { "f" })
    helpers.write_file(dir .. "/cut.tar", helpers.read_file(tarfile):sub(1, 50000))
    assert.same({ nil, "bad archive: Truncated tar archive", "EINVAL" }, { core.tar_scan(dir .. "/cut.tar") })
    assert.same({ nil, "tar_scan " .. dir .. "/nope: No such file or directory", "ENOENT" },
      { core.tar_scan(dir .. "/nope") })
    helpers.write_file(dir .. "/empty", "")
    assert.same({}, core.tar_scan(dir .. "/empty"))
  end)
end)

describe("core.tar_extract", function()
  local dir, ws, outside
  before_each(function()
    dir = helpers.tmpdir()
    ws, outside = dir .. "/ws", dir .. "/outside"
    sh("mkdir " .. ws .. " " .. outside)
  end)
  after_each(function() helpers.rmtree(dir) end)

  -- An archive made by GNU tar from a tree built by `build` (a shell snippet run in the tree).
  local function gnu_archive(build, members, extra)
    local src = dir .. "/src"
    sh("rm -rf " .. src .. " && mkdir " .. src .. " && cd " .. src .. " && " .. build)
    local argv = { "tar", "-cf", dir .. "/in.tar" }
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    for _, m in ipairs(members) do argv[#argv + 1] = m end
    local r = run(argv, src)
    assert.equal(0, r.code, r.stderr)
    return dir .. "/in.tar"
  end

  it("writes exactly the planned entries under their planned names and modes", function()
    local tarfile = gnu_archive("mkdir -p d/e && printf one > d/one && printf two > two && chmod 4755 two && "
      .. "printf skip > skip && ln -s d/one link && chmod 750 d", { "d", "two", "skip", "link" })
    local n = assert(core.tar_extract(tarfile, ws, {
      ["d/"] = { dest = "dir" },
      ["d/one"] = { dest = "dir/uno", mode = oct "600", sha256 = core.sha256("one") },
      ["two"] = { dest = "deep/new/two" },
      ["link"] = { dest = "lnk" },
      ["d/e/"] = { dest = "dir/e", mode = oct "555" },
    }))
    assert.equal(5, n)
    assert.same({
      ["deep"] = { kind = "dir", mode = oct "755" },
      ["deep/new"] = { kind = "dir", mode = oct "755" },
      ["deep/new/two"] = { kind = "file", mode = oct "755", sha256 = core.sha256("two") },
      ["dir"] = { kind = "dir", mode = oct "750" },
      ["dir/e"] = { kind = "dir", mode = oct "555" },
      ["dir/uno"] = { kind = "file", mode = oct "600", sha256 = core.sha256("one") },
      ["lnk"] = { kind = "symlink", mode = oct "777", target = "d/one" },
    }, snapshot(ws))
  end)

  it("fills a read-only dir and applies its mode last", function()
    local tarfile = gnu_archive("mkdir ro && printf x > ro/f && chmod 555 ro", { "ro" })
    assert.equal(2, core.tar_extract(tarfile, ws, { ["ro/"] = { dest = "ro" }, ["ro/f"] = { dest = "ro/f" } }))
    assert.equal(oct "555", core.fs_lstat(ws .. "/ro").mode)
    assert.equal("x", helpers.read_file(ws .. "/ro/f"))
  end)

  it("never writes through a symlink from the archive or on disk", function()
    local tarfile = gnu_archive("mkdir real && printf pwned > real/x && ln -s " .. outside .. " evil",
      { "evil", "real/x" }, { "--transform=s,^real,evil," })
    assert.same({ "evil", "evil/x" }, scan_names(tarfile))
    local r = { core.tar_extract(tarfile, ws, { evil = { dest = "evil" }, ["evil/x"] = { dest = "evil/x" } }) }
    assert.same({ nil, "tar_extract evil/x -> " .. ws .. "/evil/x: " .. ws .. "/evil is a symbolic link, not followed",
      "ELOOP" }, r)
    assert.same({}, core.fs_readdir(outside))
    sh("rm " .. ws .. "/evil && ln -s " .. outside .. " " .. ws .. "/ondisk")
    r = { core.tar_extract(tarfile, ws, { ["evil/x"] = { dest = "ondisk/x" } }) }
    assert.equal("ELOOP", r[3])
    assert.same({}, core.fs_readdir(outside))
  end)

  it("replaces a symlink leaf instead of following it", function()
    helpers.write_file(outside .. "/target", "orig")
    sh("ln -s " .. outside .. "/target " .. ws .. "/f")
    local tarfile = gnu_archive("printf new > f", { "f" })
    assert.equal(1, core.tar_extract(tarfile, ws, { f = { dest = "f" } }))
    assert.same({ "file", "new" }, { core.fs_lstat(ws .. "/f").kind, helpers.read_file(ws .. "/f") })
    assert.equal("orig", helpers.read_file(outside .. "/target"))
  end)

  it("refuses hard links and special files, missing names and changed content", function()
    local tarfile = gnu_archive("printf a > f && ln f hl && mkfifo p", { "f", "hl", "p" })
    assert.same({ nil, "tar_extract hl: a hardlink entry cannot be extracted", "EINVAL" },
      { core.tar_extract(tarfile, ws, { hl = { dest = "hl" } }) })
    assert.same({ nil, "tar_extract p: a fifo entry cannot be extracted", "EINVAL" },
      { core.tar_extract(tarfile, ws, { p = { dest = "p" } }) })
    assert.same({ nil, "tar_extract " .. tarfile .. ": planned entry nope is not in the archive", "ENOENT" },
      { core.tar_extract(tarfile, ws, { nope = { dest = "nope" } }) })
    helpers.write_file(ws .. "/f", "old")
    assert.same({ nil, "tar_extract f: content differs from the scanned archive", "EINVAL" },
      { core.tar_extract(tarfile, ws, { f = { dest = "f", sha256 = core.sha256("other") } }) })
    assert.equal("old", helpers.read_file(ws .. "/f"))
    assert.same({ "f" }, core.fs_readdir(ws), "no temp file left behind")
  end)

  it("stops at max_bytes, fails on a dir leaf, and raises on a bad plan", function()
    local tarfile = gnu_archive("head -c 5000 /dev/zero > f", { "f" })
    assert.same({ nil, "archive exceeds the 4000 byte limit at f", "EFBIG" },
      { core.tar_extract(tarfile, ws, { f = { dest = "f" } }, { max_bytes = 4000 }) })
    sh("mkdir " .. ws .. "/f")
    assert.same({ nil, "tar_extract f -> " .. ws .. "/f: Is a directory", "EISDIR" },
      { core.tar_extract(tarfile, ws, { f = { dest = "f" } }) })
    assert.same({ "f" }, core.fs_readdir(ws))
    assert.has_error(function() core.tar_extract(tarfile, ws, { f = { dest = "../f" } }) end,
      "tar_extract: plan['f'].dest must be a relative path without empty, '.' or '..' components")
    assert.has_error(function() core.tar_extract(tarfile, ws, { f = { dest = "f", mode = "644" } }) end,
      "tar_extract: plan['f'].mode must be an integer in 0..07777")
    assert.has_error(function() core.tar_extract(tarfile, ws, { f = "f" }) end,
      "tar_extract: plan['f'] must be a table")
    assert.has_error(function() core.tar_extract(tarfile, ws) end, "tar_extract: plan must be a table, got no value")
    assert.same({ nil, "bad archive: Unrecognized archive format", "EINVAL" },
      { core.tar_extract(helpers.write_temp(("junk"):rep(300)), ws, {}) })
  end)

  it("round-trips a workspace from tar_writer without leaking descriptors", function()
    make_workspace(outside)
    local names = walk(outside)
    local tarfile = write_archive(dir .. "/ws.tar", outside, names)
    local plan = {}
    for _, e in ipairs(core.tar_scan(tarfile)) do
      local rel = e.name:gsub("/$", "")
      plan[e.name] = { dest = rel, mode = e.mode, sha256 = e.sha256 }
    end
    local before = fd_count()
    assert.equal(#names, core.tar_extract(tarfile, ws, plan))
    local want = snapshot(outside)
    want["src/deep/er/bin"].mode = oct "755" -- setuid dropped
    assert.same(want, snapshot(ws))
    for _ = 1, 30 do
      core.tar_extract(tarfile, ws, { big = { dest = "big/x" } })
      core.tar_extract(tarfile, ws, { nope = { dest = "x" } })
      core.tar_scan(tarfile, { max_bytes = 10 })
    end
    assert.equal(before, fd_count())
  end)
end)
