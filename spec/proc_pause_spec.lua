-- handle:pause_output() / resume_output() (proc.c), reached through on_spawn's third argument: a consumer
-- slower than the child holds the child back instead of buffering its output.
local ferry = require "ferry"

describe("pausing a child's output", function()
  it("blocks the child once the pipes are full, and loses nothing when resumed", function()
    local got, handle = 0, nil
    local t = ferry.spawn(function()
      return ferry.proc.run { argv = { "sh", "-c", "head -c 8000000 /dev/zero; echo done >&2" },
        on_spawn = function(_, _, h)
          handle = h
          h:pause_output()
        end,
        on_stdout = function(c) got = got + #c end }
    end)
    ferry.sleep(300)
    assert.is_not_nil(handle)
    assert.equal(0, got) -- paused before the first read
    handle:resume_output()
    ferry.sleep(5)
    handle:pause_output()
    local at_pause = got
    ferry.sleep(300)
    assert.is_true(got - at_pause <= 256 * 1024, "read " .. (got - at_pause) .. " bytes while paused")
    assert.is_true(got < 8000000)
    handle:resume_output()
    local res = ferry.wait(t)
    assert.equal(0, res.code)
    assert.equal(8000000, got)
    assert.equal("done\n", res.stderr)
    handle:pause_output() -- after the end: no effect, no error
  end)
end)
