-- Run by `make check` under valgrind: exercises every C binding once through the binary, so that leaks,
-- invalid reads and fd leaks in the core show up.
local ferry = require "ferry"
local core = require "ferry.core"

local r = assert(ferry.proc.run { argv = { "sh", "-c", "cat; echo err >&2" }, stdin = "in",
  env = { X = "1" } })
assert(r.stdout == "in" and r.stderr == "err\n")
local t = assert(ferry.proc.run { argv = { "sleep", "5" }, timeout_ms = 50, kill_grace_ms = 50 })
assert(t.timed_out)
assert(not ferry.proc.run { argv = { "/nonexistent" } })
local chunks = 0
ferry.proc.run { argv = { "head", "-c", "1" }, stdin = function()
  chunks = chunks + 1
  return chunks < 50 and string.rep("x", 65536) or nil
end }
local tasks = {}
for i = 1, 20 do tasks[i] = ferry.spawn(function() ferry.sleep(1); return ferry.proc.run { argv = { "true" } } end) end
ferry.wait(tasks)

local data = string.rep("\0\1\2\255", 1000)
assert(ferry.b64.decode(ferry.b64.encode(data)) == data)
assert(not ferry.b64.decode("@@@@"))
local enc, dec = ferry.b64.encoder(), ferry.b64.decoder()
local s = enc:update(data) .. enc:finish()
assert(dec:update(s) .. dec:finish() == data)
assert(ferry.sh.quote("a'b") == [['a'\''b']])
assert(#ferry.hash.sha256("abc") == 64)
local h = ferry.hash.new()
h:update("abc")
assert(h:hexdigest() == ferry.hash.sha256("abc"))
assert(ferry.hash.sha256_file("/etc/hostname"))
assert(not ferry.hash.sha256_file("/nonexistent"))

local dir = core.fs_mkdtemp and core.fs_mkdtemp("/tmp/ferry-vg.") or nil
if dir then
  assert(core.fs_safe_write(dir, "a/b.txt", "hello", 420))
  assert(core.fs_safe_symlink(dir, "a/link", "b.txt"))
  assert(core.fs_lstat(dir .. "/a/b.txt").size == 5)
  local w = core.tar_writer(dir, { "a", "a/b.txt", "a/link" })
  local parts = {}
  for chunk in function() return w:read() end do parts[#parts + 1] = chunk end
  local spool = dir .. "/x.tar"
  local f = assert(io.open(spool, "wb"))
  f:write(table.concat(parts))
  f:close()
  local entries = assert(core.tar_scan(spool))
  assert(#entries == 3)
  assert(core.tar_extract(spool, dir, { ["a/b.txt"] = { dest = "c.txt", mode = 384 } }))
  local lock = assert(core.fs_lock(dir .. "/lock"))
  lock:unlock()
  core.fs_remove_tree(dir)
end
print("valgrind smoke: ok")
