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

-- A timer that fired, then stopped (its handle freed by the close callback), stopped again, collected; one
-- stopped before it fired and stopped again after its close completed; one pending when the state closes.
local fired = false
local t1 = core.timer(1, function() fired = true end)
while not fired do core.run_once() end
t1:stop()
local t2 = core.timer(1000, function() error("a stopped timer fired") end)
t2:stop()
ferry.sleep(5)
t1:stop()
t2:stop()
t1, t2 = nil, nil -- luacheck: ignore 311
collectgarbage()
core.timer(60000, function() end)
-- A bad callback raises before anything is spawned: no child, no handle, no descriptor left behind.
local handles = core.handles()
assert(not pcall(core.proc_start, { argv = { "true" }, on_stdout = "print" }, function() end))
assert(core.handles() == handles)
-- A child still running when the state closes is killed and its handles freed.
assert(core.proc_start({ argv = { "sleep", "30" }, stdin = true }, function() end))

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
  -- the compact tree: walk, digests, diff, dump/load and file round trip, listing, tar both ways
  local function not_lock(rel) return rel == "lock" end
  local tree = assert(core.tree_walk(dir, { hash = true, exclude = not_lock }))
  local again = assert(core.tree_walk(dir, { hash = true, known = tree, exclude = not_lock }))
  assert(#core.tree_diff(tree, again, tree, { compare = "stat" }) == 0)
  assert(core.tree_load(tree:dump()):count() == tree:count())
  assert(tree:write(dir .. "/t.tree") and core.tree_read(dir .. "/t.tree"):count() == tree:count())
  assert(not core.tree_load(tree:dump():sub(1, 70)))
  for rel, kind, sha in tree:iter(nil, "kind sha256") do assert(rel and kind and (sha or kind ~= "file")) end
  tree:set_flags("a", 1)
  tree:set_flags("a/b.txt", 1)
  local tw = core.tar_writer(dir, tree, { hash = true, flagged = 1 })
  local tparts = {}
  for chunk in function() return tw:read() end do tparts[#tparts + 1] = chunk end
  f = assert(io.open(spool, "wb"))
  f:write(table.concat(tparts))
  f:close()
  local scanned = assert(core.tar_scan_tree(spool))
  assert(scanned:get("a/b.txt").sha256 == tree:get("a/b.txt").sha256)
  local listing = "I\0R\0" .. "c\0" .. "d\0" .. "755\0" .. "0\0" .. "1.5\0" .. "3\0" .. "1\0" .. "./a\0" .. "\0H\0E\0"
  assert(core.tree_parse_listing(listing):get("a").kind == "dir")
  assert(not core.tree_parse_listing(listing:sub(1, 12)))
  local built = core.tree_new()
  built:add("z", { kind = "file", sha256 = ("0"):rep(64) })
  built:add("y", { kind = "symlink", target = "z" })
  built:add("d", { kind = "dir" })
  built:add("d/e", { kind = "file" })
  built:remove("z")
  assert(built:count() == 3 and built:under("") == 3)
  local copy = built:copy()
  assert(#copy:children("") == 2 and copy:prune("d") == 2 and copy:orphan() == nil)
  copy:stat_from(built)
  assert(core.exclude_matcher({ { bare = true, comps = { "*.log" } } })("a/b.log"))
  local _, sum = built:write(dir .. "/t.tree")
  assert(select(2, core.tree_read(dir .. "/t.tree")) == sum)
  core.fs_remove_tree(dir)
end
print("valgrind smoke: ok")

-- the bridge's bindings: HMAC, random bytes, the HTTP server and client on one loop (a whole response, a
-- streamed one, an aborted one), closing both
assert(#core.hmac_sha256("key", "a", "b") == 32 and core.hmac_equal("x", "x") and #core.random_bytes(16) == 16)
local http = require "ferry.http"
local srv = assert(http.listen({ port = 0, idle_timeout_ms = 200 }, function(req, res)
  if req.path == "/stream" then
    res:start(200, {})
    for _ = 1, 3 do if not res:write(string.rep("s", 70000)) then return end end
    res:finish()
  elseif req.path == "/forever" then
    res:start(200, {})
    while res:write("tick") do ferry.sleep(5) end
  else
    res:respond(200, { ["x-n"] = tostring(#req.body) }, req.path)
  end
end))
local base = "http://127.0.0.1:" .. srv.port
assert(assert(http.request { url = base .. "/a", method = "PUT", body = string.rep("b", 100000) }).body == "/a")
local got = 0
assert(http.request { url = base .. "/stream", on_data = function(c) got = got + #c end })
assert(got == 210000)
local handle
ferry.spawn(function() ferry.sleep(30); handle:abort() end)
assert(not http.request { url = base .. "/forever", on_request = function(req) handle = req end })
assert(not http.request { url = "http://127.0.0.1:1/" })
ferry.sleep(50)
assert(http.close_idle())
ferry.sleep(300)
srv:close()
