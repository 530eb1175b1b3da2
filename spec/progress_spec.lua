local progress = require "ferry.progress"
local redact = require "ferry.redact"
local cjson = require "cjson"

local function sink()
  local f = { chunks = {} }
  function f:write(...)
    for i = 1, select("#", ...) do self.chunks[#self.chunks + 1] = tostring((select(i, ...))) end
    return self
  end
  function f.flush() end
  function f:text() return table.concat(self.chunks) end
  function f:draws() -- what each carriage return starts
    local draws = {}
    for draw in self:text():gmatch("\r([^\r]*)") do draws[#draws + 1] = draw end
    return draws
  end
  function f:lines()
    local lines = {}
    for line in self:text():gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
    return lines
  end
  return f
end

local function fake_clock()
  local clock = { t = 0 }
  return clock, function() return clock.t end
end

describe("progress with json", function()
  it("writes one JSON line per event, throttled per phase, each phase's final line, and the result last", function()
    local out, err = sink(), sink()
    local clock, now = fake_clock()
    local p = progress.new { json = true, out = out, err = err, now = now, no_color = true }
    p:phase("sync", 1000)
    clock.t = 0.05; p:advance(100) -- within 0.1 s of the last line: not written
    clock.t = 0.10; p:advance(100)
    clock.t = 0.15; p:advance(100)
    clock.t = 0.19; p:advance(100)
    clock.t = 0.30; p:advance(600)
    clock.t = 0.50; p:phase("finalize")
    p:event { level = "warn", message = "careful" }
    clock.t = 0.75
    p:finish { ok = true, remote_dir = "/sandbox/workspace", conflicts = {}, bytes = 1000 }
    assert.same({
      '{"event":"phase","phase":"sync","total":1000}',
      '{"event":"progress","phase":"sync","bytes":200,"total":1000}',
      '{"event":"progress","phase":"sync","bytes":1000,"total":1000}',
      '{"event":"progress","phase":"sync","bytes":1000,"total":1000,"done":true,"elapsed_ms":500}',
      '{"event":"phase","phase":"finalize"}',
      '{"event":"message","phase":"finalize","level":"warn","message":"careful"}',
      '{"event":"progress","phase":"finalize","bytes":0,"done":true,"elapsed_ms":250}',
      '{"event":"result","bytes":1000,"conflicts":[],"ok":true,"remote_dir":"/sandbox/workspace"}',
    }, out:lines())
    assert.equal("", err:text())
    for _, line in ipairs(out:lines()) do assert.is_table(cjson.decode(line)) end
  end)

  it("limits each phase to about ten lines a second however often it advances", function()
    local out = sink()
    local clock, now = fake_clock()
    local p = progress.new { json = true, out = out, now = now }
    p:phase("restore", 10000)
    for i = 1, 1000 do
      clock.t = i * 0.001
      p:advance(10)
    end
    p:finish {}
    -- 1 s of advancing: phase + 10 updates + final line + result
    assert.equal(13, #out:lines())
  end)

  it("passes every event through redact", function()
    local out = sink()
    local p = progress.new { json = true, out = out, now = function() return 0 end, redact = redact.new { "s3cret" } }
    p:phase("install")
    p:event { level = "warn", message = "npm: token s3cret rejected", detail = { "s3cret", ["s3cret"] = 1 } }
    p:finish { error = "auth with s3cret failed" }
    local text = out:text()
    assert.is_nil(text:find("s3cret", 1, true))
    local lines = out:lines()
    assert.equal('{"event":"message","phase":"install","level":"warn","message":"npm: token *** rejected",'
      .. '"detail":{"***":1,"1":"***"}}', lines[2])
    assert.equal('{"event":"result","error":"auth with *** failed"}', lines[4])
  end)

  it("keeps lists as arrays and an event's own name", function()
    local out = sink()
    local p = progress.new { json = true, out = out, now = function() return 0 end }
    p:phase("restore", 0)
    p:event { event = "conflict", path = "a b.txt", remote_copy = "a b.txt.ferry-remote" }
    p:finish { changed = { "x", "y" }, ratio = 0.5 }
    local lines = out:lines()
    assert.equal('{"event":"conflict","phase":"restore","path":"a b.txt","remote_copy":"a b.txt.ferry-remote"}',
      lines[2])
    assert.equal('{"event":"result","changed":["x","y"],"ratio":0.5}', lines[4])
  end)
end)

describe("progress on a terminal", function()
  it("redraws one line with the phase, bar, percent, bytes, rate and ETA, and leaves each phase's last", function()
    local err, out = sink(), sink()
    local clock, now = fake_clock()
    local p = progress.new { tty = true, err = err, out = out, now = now, no_color = true }
    p:phase("sync", 4 * 1048576)
    clock.t = 1; p:advance(1048576)
    clock.t = 1.05; p:advance(1048576) -- throttled
    clock.t = 2; p:advance(2 * 1048576)
    clock.t = 2.5; p:phase("finalize")
    clock.t = 63.5; p:finish {}
    assert.same({
      "sync      [--------------------]    0%  0 B / 4.0 MiB  ETA -:--",
      "sync      [#####---------------]   25%  1.0 MiB / 4.0 MiB  1.0 MiB/s  ETA 0:03",
      "sync      [####################]  100%  4.0 MiB / 4.0 MiB  2.0 MiB/s  ETA 0:00",
      "sync      [####################]  100%  4.0 MiB / 4.0 MiB  1.6 MiB/s  done in 0:03\n",
      "finalize  0:00",
      "finalize  done in 1:01\n",
    }, err:draws())
    assert.equal("", out:text())
  end)

  it("shows bytes and rate without a bar when the total is unknown", function()
    local err = sink()
    local clock, now = fake_clock()
    local p = progress.new { tty = true, err = err, now = now, no_color = true }
    p:phase("assets")
    clock.t = 2; p:advance(3072)
    clock.t = 4; p:advance(1)
    clock.t = 6; p:advance(1)
    -- a shorter line is padded with blanks over the end of the longer one it replaces
    assert.same({ "assets    0:00", "assets    3.0 KiB  1.5 KiB/s  0:02", "assets    3.0 KiB  768 B/s  0:04  ",
      "assets    3.0 KiB  512 B/s  0:06" }, err:draws())
  end)

  it("colours the phase and bar unless no_color, and reads NO_COLOR by default", function()
    local function first_draw(opts)
      local err = sink()
      opts.tty, opts.err, opts.now = true, err, function() return 0 end
      progress.new(opts):phase("sync", 10)
      return err:text()
    end
    assert.truthy(first_draw({ no_color = false }):find("\27[1;36msync    \27[0m", 1, true))
    assert.is_nil(first_draw({ no_color = true }):find("\27", 1, true))
    local getenv = os.getenv
    finally(function() os.getenv = getenv end) -- luacheck: ignore 122
    os.getenv = function(name) if name == "NO_COLOR" then return "1" end return getenv(name) end -- luacheck: ignore 122
    assert.is_nil(first_draw({}):find("\27", 1, true))
    os.getenv = function(name) if name == "NO_COLOR" then return nil end return getenv(name) end -- luacheck: ignore 122
    assert.truthy(first_draw({}):find("\27[", 1, true))
  end)

  it("colours a warning's label only on a terminal without no_color; info and debug only with verbose", function()
    local function said(opts, level)
      local err = sink()
      opts.err, opts.now = err, function() return 0 end
      progress.new(opts):event { level = level or "warn", message = "m" }
      return err:text()
    end
    assert.equal("ferry: \27[33mwarning\27[0m: m\n", said { tty = true, no_color = false })
    assert.equal("ferry: warning: m\n", said { tty = true, no_color = true })
    assert.equal("ferry: warning: m\n", said { tty = false, no_color = false }) -- stderr is not a terminal
    assert.equal("", said({ tty = false }, "info"))
    assert.equal("ferry: info: m\n", said({ tty = false, verbose = true }, "info"))
    assert.equal("ferry: debug: m\n", said({ tty = false, verbose = true }, "debug"))
  end)

  it("prints a warning above the bar, redacted, then redraws the bar", function()
    local err = sink()
    local p = progress.new { tty = true, err = err, now = function() return 0 end, no_color = true,
      redact = redact.new { "hunter2" } }
    p:phase("install")
    local before = #err.chunks
    p:event { level = "warn", message = "install failed: --password hunter2" }
    local after = table.concat(err.chunks, "", before + 1)
    assert.equal("\r" .. string.rep(" ", #"install   0:00") .. "\rferry: warning: install failed: --password ***\n"
      .. "\rinstall   0:00", after)
  end)
end)

describe("progress when quiet", function()
  it("prints only warnings and errors, on err", function()
    local out, err = sink(), sink()
    local p = progress.new { out = out, err = err, now = function() return 0 end, no_color = true }
    p:phase("sync", 100)
    p:advance(100)
    p:event { level = "info", message = "copied" }
    p:event { level = "warn", message = "codex not found after install" }
    p:event { level = "error", message = "disk full" }
    p:finish { ok = true }
    assert.equal("", out:text())
    assert.equal("ferry: warning: codex not found after install\nferry: error: disk full\n", err:text())
  end)
end)

describe("progress misuse", function()
  it("raises on unknown phases, bytes outside a phase, bad numbers and use after finish", function()
    local p = progress.new { out = sink(), err = sink() }
    assert.has_error(function() p:advance(1) end, "progress:advance: no phase started")
    assert.has_error(function() p:phase("upload") end,
      "progress:phase: unknown phase upload (install, sync, assets, restore, finalize)")
    assert.has_error(function() p:phase("sync", -1) end, "progress:phase: total must be a non-negative number or nil")
    p:phase("sync")
    assert.has_error(function() p:advance(-5) end, "progress:advance: bytes must be a non-negative number")
    p:finish()
    assert.has_error(function() p:advance(1) end, "progress:advance: called after finish")
  end)
end)

describe("progress.human and progress.clock", function()
  it("formats bytes and durations", function()
    assert.same({ "0 B", "1023 B", "1.0 KiB", "1.5 MiB", "2.0 GiB", "1024.0 TiB" },
      { progress.human(0), progress.human(1023), progress.human(1024), progress.human(1.5 * 1048576),
        progress.human(2 * 1073741824), progress.human(1024 ^ 5) })
    assert.same({ "0:00", "0:59", "1:01", "1:00:00" },
      { progress.clock(0), progress.clock(59.4), progress.clock(61), progress.clock(3600) })
  end)
end)
