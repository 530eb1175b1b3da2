-- Torn reads are refused (issue 8, item 9). The sandbox's `tar` is GNU tar behind a wrapper first on PATH that,
-- while tar reads big.bin, truncates it (or rewrites a few bytes in place) with tar's own --checkpoint-action,
-- so GNU tar itself prints "File shrank by N bytes; padding with zeros" or "file changed as we read it" and
-- exits 1. Restore must not write such a file: it fetches it once more, and if that read is torn too it
-- leaves the host's version and reports the path.
local core = require "ferry.core"
local ferry = require "ferry"
local helpers = require "support.helpers"
local W = require "support.workspaces"

-- Each `tar -c` puts big.bin back from $FERRY_AUX/big.orig first (the agent's version), then, for the first
-- $FERRY_TORN_TIMES reads, tears it at the 50th record (~512 KiB in): $FERRY_TEAR "shrink" truncates it,
-- "change" overwrites 8 bytes in place.
local TEARING_TAR = [[#!/bin/sh
case "$*" in *"-T /dev/null"*) exec /bin/tar "$@" ;; esac # restore's probe for GNU tar
if [ "$1" = "-c" ] && [ -n "$FERRY_BIG" ]; then
  cp "$FERRY_AUX/big.orig" "$FERRY_BIG"
  n=$(cat "$FERRY_AUX/count" 2>/dev/null || echo 0)
  n=$((n + 1))
  echo "$n" > "$FERRY_AUX/count"
  if [ "$n" -le "$FERRY_TORN_TIMES" ]; then
    if [ "$FERRY_TEAR" = shrink ]; then
      tear='truncate -s 0 "$FERRY_BIG"'
    else
      tear='printf XXXXXXXX | dd of="$FERRY_BIG" bs=1 seek=100 conv=notrunc 2>/dev/null'
    fi
    exec /bin/tar --checkpoint=50 --checkpoint-action="exec=sh -c '$tear'" "$@"
  fi
fi
exec /bin/tar "$@"
]]

local SHRINK, CHANGE = "shrink", "change"

local function chunk(seed, size)
  return string.format("%08x", seed):rep(size // 8 + 1):sub(1, size)
end

local AGENTS, HOSTS = core.sha256(chunk(2, 4 * 1024 * 1024)), core.sha256(chunk(1, 4 * 1024 * 1024))

local function sum(root, rel)
  return core.sha256_file(root .. "/" .. rel)
end

describe("restore of a file the sandbox changes while its tar reads it", function()
  local tmp, ws, remote, state

  local function setup(times, tear)
    tmp = helpers.tmpdir()
    ws, remote, state = tmp .. "/ws", tmp .. "/remote", tmp .. "/state.json"
    W.write(ws, "big.bin", chunk(1, 4 * 1024 * 1024))
    W.write(ws, "small.txt", "small\n")
    W.write(tmp, "bin/tar", TEARING_TAR, 493)
    W.mkdir(tmp, "remote")
    local provider = string.format("cmd:env PATH=%s/bin:/usr/bin:/bin FERRY_BIG=%s/big.bin FERRY_AUX=%s/aux "
      .. "FERRY_TORN_TIMES=%d FERRY_TEAR=%s", tmp, remote, tmp, times, tear)
    assert(ferry.prepare { provider = provider, workspace = ws, remote_dir = remote, state = state })
    -- the agent's work: a new big.bin (kept as aux/big.orig, which the wrapper puts back before each read)
    W.write(remote, "big.bin", chunk(2, 4 * 1024 * 1024))
    W.write(tmp, "aux/big.orig", chunk(2, 4 * 1024 * 1024))
    W.write(remote, "small.txt", "small, edited\n")
  end
  after_each(function()
    helpers.rmtree(tmp)
  end)

  it("fetches a file that shrank while read once more and takes that whole read", function()
    setup(1, SHRINK)
    local got = assert(ferry.restore { state = state })
    assert.equal(AGENTS, sum(ws, "big.bin"))
    assert.equal("small, edited\n", W.read(ws, "small.txt"))
    assert.same({}, got.torn)
    assert.same({}, got.warnings)
    assert.same({ "big.bin", "small.txt" }, got.changed)
    assert.equal(2, got.commands) -- the stream, and one command fetching big.bin again
    assert.equal("2\n", W.read(tmp, "aux/count"))
  end)

  it("does the same for GNU tar's 'file changed as we read it'", function()
    setup(1, CHANGE)
    local got = assert(ferry.restore { state = state })
    assert.equal(AGENTS, sum(ws, "big.bin"))
    assert.same({}, got.torn)
    assert.equal(2, got.commands)
  end)

  it("leaves the host's version and reports the path when the second read is torn too", function()
    setup(2, SHRINK)
    local got = assert(ferry.restore { state = state })
    assert.equal(HOSTS, sum(ws, "big.bin")) -- the host's, untouched
    assert.equal("small, edited\n", W.read(ws, "small.txt")) -- the rest came back
    assert.same({ "big.bin" }, got.torn)
    assert.same({ "restore: big.bin: changed while the sandbox's tar read it, twice; not restored (the host "
      .. "keeps its version)" }, got.warnings)
    assert.same({ "small.txt" }, got.changed)
    assert.same({}, select(2, W.full(ws)))
    -- the next restore, with a quiet sandbox, takes the agent's version
    W.write(tmp, "aux/count", "99\n")
    local again = assert(ferry.restore { state = state })
    assert.same({}, again.torn)
    assert.equal(AGENTS, sum(ws, "big.bin"))
  end)

  it("fails, writing nothing, when the sandbox's tar exits non-zero for another reason", function()
    setup(0, SHRINK)
    W.write(tmp, "bin/tar", "#!/bin/sh\n/bin/tar \"$@\"\n"
      .. "echo 'tar: ./small.txt: Cannot open: Permission denied' >&2\nexit 1\n", 493)
    local before = W.full(ws)
    local ok, err, code = ferry.restore { state = state }
    assert.is_nil(ok)
    assert.equal("restore: reading " .. remote .. " from the sandbox: exit code 1: tar: ./small.txt: Cannot open: "
      .. "Permission denied", err)
    assert.equal("EIO", code)
    assert.same({}, W.diff(before, W.full(ws)))
  end)
end)

describe("ferry.remote.torn_reports", function()
  local remote = require "ferry.remote"

  it("reads GNU tar's warnings back to the names as archived", function()
    local torn, other = remote.torn_reports(table.concat({
      "tar: ./big file\\:x: File shrank by 2977024 bytes; padding with zeros",
      "/bin/tar: ./new\\nline \\303\\251\\\\1: file changed as we read it",
      "tar: ./gone: File removed before we read it",
      "tar: ./one: File shrank by 1 byte; padding with zeros",
      "tar: ./sock: socket ignored",
      "tar: ./x: Cannot open: Permission denied",
    }, "\n"))
    assert.same({ "./big file:x", "./new\nline é\\1", "./gone", "./one" }, torn)
    assert.same({ "tar: ./x: Cannot open: Permission denied" }, other)
  end)
end)
