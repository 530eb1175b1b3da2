-- Sandbox operations (ferry.open / ferry.client) against every provider and every transfer mode.
local ferry = require "ferry"
local helpers = require "support.helpers"
local sandboxes = require "support.sandboxes"

local NAMES = {
  "plain.txt", "with space", "it's \"quoted\"", "new\nline", "-leading-dash", "--", "ünïcödé ✓",
  "$(touch pwned) `touch pwned2` *?[a]", "back\\slash", " lead and trail ", "tab\there",
}

-- The transfer modes a provider can be forced into: raw stdin/stdout, base64 on stdin, base64 in arguments.
local MODES = {
  { name = "raw", caps = {} },
  { name = "base64 on stdin", caps = { binary = false } },
  { name = "base64 chunks in arguments", caps = { stdin = false } },
}

local ALL_BYTES
do
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  ALL_BYTES = table.concat(t)
end

local function urandom(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local data = f:read(n)
  f:close()
  return data
end

local function names_of(entries)
  local names = {}
  for _, e in ipairs(entries) do names[#names + 1] = e.name end
  return names
end

local function by_name(entries)
  local t = {}
  for _, e in ipairs(entries) do t[e.name] = e end
  return t
end

local function sorted(list)
  local copy = table.move(list, 1, #list, 1, {})
  table.sort(copy)
  return copy
end

for _, label in ipairs { "local", "bwrap", "cmd", "busybox" } do
  for _, mode in ipairs(MODES) do
    describe("sandbox on " .. label .. " (" .. mode.name .. ")", function()
      local box, sb
      before_each(function()
        box = sandboxes.make(label)
        sb = box:open { caps = mode.caps }
      end)
      after_each(function()
        sb:close()
        box:cleanup()
      end)

      it("writes, reads, lists and removes files whose names hold spaces, quotes, newlines, dashes, UTF-8",
        function()
          for i, name in ipairs(NAMES) do
            local path = box.root .. "/" .. name
            local data = name .. "\n#" .. i
            assert(sb:write(path, data))
            assert.equal(data, sb:read(path))
            assert.equal(data, helpers.read_file(box.host_root .. "/" .. name))
          end
          local entries = assert(sb:ls(box.root))
          assert.same(sorted(NAMES), names_of(entries))
          for _, e in ipairs(entries) do assert.equal("file", e.kind) end
          assert.is_nil(helpers.read_file(box.host_root .. "/pwned"))
          assert.is_nil(helpers.read_file("/pwned"))
          for _, name in ipairs(NAMES) do
            assert(sb:rm(box.root .. "/" .. name))
            local data, err, code = sb:read(box.root .. "/" .. name)
            assert.is_nil(data)
            assert.equal(box.root .. "/" .. name .. ": no such file", err)
            assert.equal("ENOENT", code)
          end
          assert.same({}, assert(sb:ls(box.root)))
        end)

      it("moves all 256 byte values, an empty file and a multi-chunk file unchanged", function()
        local big = urandom(200 * 1024 + 7) -- three base64 chunks without stdin
        for name, data in pairs { all = ALL_BYTES:rep(3), empty = "", big = big } do
          local path = box.root .. "/" .. name
          assert(sb:write(path, data))
          assert.equal(data, sb:read(path))
          assert.equal(data, helpers.read_file(box.host_root .. "/" .. name))
        end
      end)

      it("writes from a reader with and without a known size, with a mode", function()
        local pieces = { "abc", "", ALL_BYTES, ("x"):rep(100000) }
        local function reader()
          local i = 0
          return function()
            i = i + 1
            return pieces[i]
          end
        end
        local whole = table.concat(pieces)
        local progress = {}
        assert(sb:write(box.root .. "/sized", reader(), {
          size = #whole, mode = tonumber("751", 8), on_progress = function(n) progress[#progress + 1] = n end,
        }))
        assert(sb:write(box.root .. "/unsized", reader()))
        assert.equal(whole, sb:read(box.root .. "/sized"))
        assert.equal(whole, sb:read(box.root .. "/unsized"))
        assert.equal(#whole, progress[#progress])
        for i = 2, #progress do assert.is_true(progress[i] > progress[i - 1]) end
        local e = by_name(assert(sb:ls(box.root)))
        assert.equal(tonumber("751", 8), e.sized.mode)
        assert.same({ "sized", "unsized" }, names_of(assert(sb:ls(box.root))))
      end)

      it("a write whose size does not match the data fails and leaves no file behind", function()
        local ok, err, code = sb:write(box.root .. "/short", function() return nil end, { size = 10 })
        assert.is_nil(ok)
        assert.equal("EIO", code)
        assert.matches("write " .. box.root .. "/short: the sandbox wrote 0 of 10 bytes", err, 1, true)
        assert.same({}, assert(sb:ls(box.root)))
      end)

      it("makes dirs with parents; ls reports kinds, sizes and modes without following symlinks", function()
        local dir = box.root .. "/dir one/-sub"
        assert(sb:mkdir(dir))
        assert(sb:mkdir(dir)) -- already there: fine
        assert(sb:mkdir(box.root .. "/private", { mode = tonumber("700", 8) }))
        assert(sb:write(dir .. "/new\nline", "12345", { mode = tonumber("640", 8) }))
        local r = assert(sb:exec({ "ln", "-s", "new\nline", dir .. "/link" }))
        assert.equal(0, r.code)
        local e = by_name(assert(sb:ls(dir)))
        assert.same({ name = "new\nline", kind = "file", size = 5, mode = tonumber("640", 8) }, e["new\nline"])
        assert.equal("symlink", e.link.kind)
        assert.equal(#"new\nline", e.link.size)
        local top = by_name(assert(sb:ls(box.root)))
        assert.equal("dir", top["dir one"].kind)
        assert.equal(tonumber("700", 8), top.private.mode)
        assert(sb:rm(box.root .. "/dir one"))
        assert.same({ "private" }, names_of(assert(sb:ls(box.root))))
        assert(sb:rm(box.root .. "/dir one")) -- missing: fine
      end)

      it("puts and gets files, keeping the mode, never leaving a partial local file", function()
        local src = box.tmp .. "/src file"
        local data = urandom(300000)
        helpers.write_file(src, data)
        assert(os.execute("chmod 754 '" .. src .. "'"))
        assert(sb:put(src, box.root .. "/-put me"))
        assert(sb:put(src, box.root .. "/made/by put/-put me")) -- missing parents are made
        assert.equal(300000, by_name(assert(sb:ls(box.root .. "/made/by put")))["-put me"].size)
        assert.equal(tonumber("754", 8), by_name(assert(sb:ls(box.root)))["-put me"].mode)
        local dst = box.tmp .. "/got 'it'"
        assert(sb:get(box.root .. "/-put me", dst))
        assert.equal(data, helpers.read_file(dst))
        local ok, err, code = sb:get(box.root .. "/missing", box.tmp .. "/never")
        assert.is_nil(ok)
        assert.equal(box.root .. "/missing: no such file", err)
        assert.equal("ENOENT", code)
        ok, err, code = sb:get(box.root .. "/-put me", box.tmp .. "/small", { max_bytes = 1000 })
        assert.is_nil(ok)
        assert.equal(box.root .. "/-put me is 300000 bytes, over the 1000 byte limit", err)
        assert.equal("EFBIG", code)
        local left = io.popen("ls '" .. box.tmp .. "'"):read("a")
        assert.is_nil(left:find("never", 1, true))
        assert.is_nil(left:find("small", 1, true))
        assert.is_nil(left:find("ferry-tmp", 1, true))
      end)

      it("reports ENOENT, EFBIG, EISDIR and ENOTDIR with the path", function()
        local p = box.root .. "/f"
        assert(sb:write(p, "0123456789"))
        assert.equal("0123456789", sb:read(p, { max_bytes = 10 }))
        local data, err, code = sb:read(p, { max_bytes = 9 })
        assert.is_nil(data)
        assert.equal(p .. " is 10 bytes, over the 9 byte limit", err)
        assert.equal("EFBIG", code)
        data, err, code = sb:read(box.root .. "/nope")
        assert.is_nil(data)
        assert.equal(box.root .. "/nope: no such file", err)
        assert.equal("ENOENT", code)
        data, err, code = sb:read(box.root)
        assert.is_nil(data)
        assert.equal(box.root .. ": is a directory", err)
        assert.equal("EISDIR", code)
        data, err, code = sb:ls(p)
        assert.is_nil(data)
        assert.equal(p .. ": not a directory", err)
        assert.equal("ENOTDIR", code)
        data, err, code = sb:ls(box.root .. "/nope")
        assert.is_nil(data)
        assert.equal(box.root .. "/nope: no such directory", err)
        assert.equal("ENOENT", code)
        -- missing parents are made (mkdir -p); a parent that is a file is named
        assert(sb:write(box.root .. "/no/dir/f", "x"))
        assert.equal("x", sb:read(box.root .. "/no/dir/f"))
        data, err, code = sb:write(p .. "/sub/g", "x")
        assert.is_nil(data)
        assert.equal("write " .. p .. "/sub/g: " .. p .. " is not a directory", err)
        assert.equal("ENOTDIR", code)
        assert.equal("0123456789", sb:read(p))
        data, err, code = sb:write(box.root, "x")
        assert.is_nil(data)
        assert.equal(box.root .. ": is a directory", err)
        assert.equal("EISDIR", code)
        data, err, code = sb:rm("/")
        assert.is_nil(data)
        assert.equal("EINVAL", code)
        assert.equal("rm: refusing to remove '/'", err)
      end)

      it("pipe_in and pipe_out carry a tar stream in one command each, with progress", function()
        local src = box.root .. "/src"
        assert(sb:mkdir(src .. "/sub dir"))
        local blob = urandom(150000)
        assert(sb:write(src .. "/sub dir/blob", blob))
        assert(sb:write(src .. "/-x y", ALL_BYTES))
        local parts, seen = {}, {}
        local res = assert(sb:pipe_out("cd " .. ferry.sh.quote(src) .. " && tar -c -f - .", function(c)
          parts[#parts + 1] = c
        end, { on_progress = function(n) seen[#seen + 1] = n end }))
        assert.equal(0, res.code)
        local tarball = table.concat(parts)
        assert.equal(#tarball, res.received)
        assert.equal(#tarball, seen[#seen])
        local sent = {}
        local dst = box.root .. "/dst"
        res = assert(sb:pipe_in("mkdir -p " .. ferry.sh.quote(dst) .. " && tar -x -f - -C " .. ferry.sh.quote(dst)
          .. " && echo extracted", tarball, { on_progress = function(n) sent[#sent + 1] = n end }))
        assert.equal(0, res.code)
        assert.equal("extracted\n", res.stdout)
        assert.equal(#tarball, res.sent)
        assert.equal(#tarball, sent[#sent])
        assert.equal(blob, sb:read(dst .. "/sub dir/blob"))
        assert.equal(ALL_BYTES, sb:read(dst .. "/-x y"))
      end)

      it("pipe_in and pipe_out report the script's exit code and stderr", function()
        local res = assert(sb:pipe_in("cat >/dev/null; echo oops >&2; exit 3", "data"))
        assert.equal(3, res.code)
        assert.equal("oops\n", res.stderr)
        res = assert(sb:pipe_out("printf abc; exit 4", function() end))
        assert.equal(4, res.code)
        assert.equal(3, res.received)
      end)

      it("scripts with case patterns, here-documents and a final comment run unchanged in pipe_in/pipe_out",
        function()
          local script = 'case "x$1" in\n  x) echo case-ok ;;\n  *) echo bad ;;\nesac\n'
            .. "cat <<'END'\nheredoc ) ( $(not run)\nEND\n# a comment without a newline"
          local out = {}
          assert.equal(0, assert(sb:pipe_out(script, function(c) out[#out + 1] = c end)).code)
          assert.equal("case-ok\nheredoc ) ( $(not run)\n", table.concat(out))
          local res = assert(sb:pipe_in("cat > /dev/null\n" .. script, "data"))
          assert.equal("case-ok\nheredoc ) ( $(not run)\n", res.stdout)
        end)

      it("exec runs scripts and argvs with cwd /, env, cwd, stdin and exit codes", function()
        local r = assert(sb:exec("pwd; exit 5"))
        assert.equal(5, r.code)
        assert.equal("/\n", r.stdout)
        r = assert(sb:exec({ "printf", "%s|", "a b", "it's", "-n", "$HOME", "new\nline" }))
        assert.equal("a b|it's|-n|$HOME|new\nline|", r.stdout)
        if mode.caps and mode.caps.stdin == false then
          -- no stdin: the values could only travel on the command line, which is refused
          assert.has_error(function() sb:exec("true", { env = { GREETING = "hi" } }) end,
            "exec: opts.env needs a channel with stdin: " .. sb.name .. " has none, and the values would be on "
            .. "the command line")
          r = assert(sb:exec("pwd", { cwd = box.root }))
          assert.equal(box.root .. "\n", r.stdout)
        else
          r = assert(sb:exec('printf "%s" "$GREETING"; pwd', { env = { GREETING = "hi 'there'" }, cwd = box.root }))
          assert.equal("hi 'there'" .. box.root .. "\n", r.stdout)
        end
        r = assert(sb:exec("cat; printf done", { stdin = ALL_BYTES }))
        assert.equal(0, r.code)
        assert.equal(ALL_BYTES .. "done", r.stdout)
        r = assert(sb:exec("echo no input needed", { stdin = "ignored" }))
        assert.equal(0, r.code)
      end)
    end)
  end
end

describe("20 MB transfers", function()
  local data = urandom(20 * 1024 * 1024)
  local sha = ferry.hash.sha256(data)

  for _, label in ipairs(sandboxes.LABELS) do
    it("put and get a 20 MB file through " .. label .. " in every transfer mode, bytes identical", function()
      local box = sandboxes.make(label)
      local src = box.tmp .. "/big"
      helpers.write_file(src, data)
      for _, mode in ipairs(MODES) do
        local sb = box:open { caps = mode.caps }
        local remote = box.root .. "/big " .. mode.name
        assert(sb:put(src, remote))
        local dst = box.tmp .. "/back " .. mode.name
        assert(sb:get(remote, dst))
        assert.equal(sha, ferry.hash.sha256_file(dst), mode.name)
        assert.equal(sha, ferry.hash.sha256_file(box.host_root .. "/big " .. mode.name), mode.name)
      end
      box:cleanup()
    end)
  end
end)

describe("commands per operation, counted through a wrapping cmd: provider", function()
  local function counts(mode_caps)
    local box = sandboxes.counting("cmd")
    local sb = box:open { caps = mode_caps }
    local out = { open = box:count() }
    local function measure(name, fn)
      box:reset()
      fn()
      out[name] = box:count()
    end
    local src = box.tmp .. "/src"
    helpers.write_file(src, urandom(1000000))
    measure("put", function() assert(sb:put(src, box.root .. "/f")) end)
    measure("get", function() assert(sb:get(box.root .. "/f", box.tmp .. "/back")) end)
    measure("write", function() assert(sb:write(box.root .. "/w", "small")) end)
    measure("write_reader", function() assert(sb:write(box.root .. "/r", string.gmatch("a b c", "%S"))) end)
    measure("read", function() assert(sb:read(box.root .. "/w")) end)
    measure("ls", function() assert(sb:ls(box.root)) end)
    measure("mkdir", function() assert(sb:mkdir(box.root .. "/d/e")) end)
    measure("rm", function() assert(sb:rm(box.root .. "/d")) end)
    measure("exec", function() assert(sb:exec("true")) end)
    measure("pipe_in", function() assert(sb:pipe_in("cat > /dev/null", ("z"):rep(500000))) end)
    measure("pipe_out", function() assert(sb:pipe_out("head -c 500000 /dev/zero", function() end)) end)
    sb:close()
    box:cleanup()
    return out
  end

  it("is one per operation on an 8-bit clean channel (put of a 1 MB file: 1)", function()
    assert.same({ open = 1, put = 1, get = 1, write = 1, write_reader = 2, read = 1, ls = 1, mkdir = 1, rm = 1,
      exec = 1, pipe_in = 1, pipe_out = 1 }, counts({}))
  end)

  it("is the same with base64 on stdin", function()
    assert.same({ open = 1, put = 1, get = 1, write = 1, write_reader = 2, read = 1, ls = 1, mkdir = 1, rm = 1,
      exec = 1, pipe_in = 1, pipe_out = 1 }, counts({ binary = false }))
  end)

  it("is one per 72 KiB (96 KiB of base64) without stdin", function()
    assert.same({ open = 1, put = 14, get = 1, write = 1, write_reader = 2, read = 1, ls = 1, mkdir = 1, rm = 1,
      exec = 1, pipe_in = 7, pipe_out = 1 }, counts({ stdin = false }))
  end)

  it("calls on_exec before every command, with the argv and the script", function()
    local calls = {}
    local function on_exec(argv, script) calls[#calls + 1] = { argv, script } end
    local sb = assert(ferry.open("local", { on_exec = on_exec }))
    assert(sb:exec("echo marker-123"))
    assert.equal(1, #calls)
    assert.same({ "sh", "-c", calls[1][2] }, calls[1][1])
    assert.truthy(calls[1][2]:find("echo marker-123", 1, true))
  end)

  it("shows every command to a watcher until it stops watching, on_exec as well", function()
    local seen, shown = {}, 0
    local sb = assert(ferry.open("local", { on_exec = function() shown = shown + 1 end }))
    local stop = sb:watch(function(argv, script) seen[#seen + 1] = { argv, script } end)
    assert(sb:exec("echo one"))
    assert(sb:write(helpers.tmpdir() .. "/watched", "x"))
    stop()
    assert(sb:exec("echo three"))
    assert.equal(2, #seen)
    assert.same({ "sh", "-c", seen[1][2] }, seen[1][1])
    assert.truthy(seen[1][2]:find("echo one", 1, true))
    assert.equal(3, shown)
    assert.has_error(function() sb:watch("nope") end, "watch: expected a function, got string")
    sb:close()
  end)
end)

describe("transfers are checked by length", function()
  -- cmd: prefixes that damage the channel: `sh -c 'PIPELINE'` runs PIPELINE with "$0" "$@" = sh -c SCRIPT.
  local function damaged(pipeline)
    local box = sandboxes.make("cmd")
    local sb = assert(ferry.open("cmd:sh -c '" .. pipeline .. "'", { probe = false }))
    return box, sb
  end

  it("a channel that truncates stdin makes write and pipe_in fail, leaving no file", function()
    -- dd bs=1 passes each byte on as it comes: the sandbox sees the first 100 bytes of the channel, then EOF,
    -- which the command's wrapper takes for a channel that closed: the command is stopped.
    local box, sb = damaged('dd bs=1 count=100 2>/dev/null | "$0" "$@"')
    local ok, err, code = sb:write(box.root .. "/f", ("a"):rep(1000))
    assert.is_nil(ok)
    assert.equal("EIO", code)
    assert.equal(1, err:find("write " .. box.root .. "/f: ", 1, true))
    local res, _, pcode = sb:pipe_in("cat > /dev/null", ("a"):rep(1000))
    assert.is_true(res == nil and pcode == "EIO" or res.code ~= 0, "a truncated pipe_in must not succeed")
    ok, err, code = sb:write(box.root .. "/g", string.gmatch(("a"):rep(1000), "a+"))
    assert.is_nil(ok)
    assert.equal("EIO", code)
    assert.equal(1, err:find("write " .. box.root .. "/g: ", 1, true))
    assert.equal("", io.popen("ls -A '" .. box.root .. "'"):read("a"))
    box:cleanup()
  end)

  it("a channel that truncates stdout makes read fail", function()
    local box, sb = damaged('"$0" "$@" | head -c 100')
    local ok = io.open(box.root .. "/f", "wb")
    ok:write(("b"):rep(1000))
    ok:close()
    local data, err, code = sb:read(box.root .. "/f")
    assert.is_nil(data)
    assert.equal("EIO", code)
    assert.equal(1, err:find("read " .. box.root .. "/f: the sandbox command ended without its status line", 1, true))
    box:cleanup()
  end)

  it("a channel that drops bytes but keeps the status line makes read fail", function()
    local box, sb = damaged([["$0" "$@" | sed "s/b//"]])
    local f = io.open(box.root .. "/f", "wb")
    f:write(("b"):rep(10) .. "\n")
    f:close()
    local data, err, code = sb:read(box.root .. "/f")
    assert.is_nil(data)
    assert.equal("EIO", code)
    assert.equal("read " .. box.root .. "/f: received 10 bytes but the sandbox sent 11", err)
    box:cleanup()
  end)
end)

describe("exec timeout", function()
  for _, label in ipairs(sandboxes.LABELS) do
    it("kills the command's process group through " .. label, function()
      local box = sandboxes.make(label)
      local sb = box:open()
      local r = assert(sb:exec("sleep 30 & sleep 30; echo never", { timeout_ms = 300, kill_grace_ms = 200 }))
      assert.is_true(r.timed_out)
      assert.is_true(r.duration_ms < 5000)
      assert.is_nil(r.stdout:find("never", 1, true))
      box:cleanup()
    end)
  end

  it("write and read report ETIMEDOUT", function()
    local sb = assert(ferry.open("cmd:sh -c 'sleep 5; exec \"$0\" \"$@\"'", { probe = false }))
    local data, err, code = sb:read("/etc/hostname", { timeout_ms = 200 })
    assert.is_nil(data)
    assert.equal("ETIMEDOUT", code)
    assert.equal("read /etc/hostname: timed out", err)
  end)
end)
