-- ferry.pool: at most N calls at once on the one loop, every item run even when some raise.
local ferry = require "ferry"
local pool = require "ferry.pool"

describe("pool.run", function()
  it("runs every item, at most `jobs` at a time, and returns results in item order", function()
    local running, peak = 0, 0
    local items = { 10, 20, 30, 40, 50 }
    local results, errors, stats = pool.run(items, 2, function(item, i)
      running = running + 1
      peak = math.max(peak, running)
      ferry.sleep(40)
      running = running - 1
      return item + i
    end)
    assert.same({ 11, 22, 33, 44, 55 }, results)
    assert.same({}, errors)
    assert.equal(2, peak)
    assert.equal(2, stats.max_running)
    -- 5 items of 40 ms, 2 at a time: three rounds (libuv timers may fire a few ms early), not two.
    assert.is_true(stats.ms > 90, "took " .. stats.ms .. " ms")
  end)

  it("keeps going when a call raises, and reports the error by index", function()
    local done = {}
    local results, errors = pool.run({ "a", "boom", "c" }, 1, function(item)
      if item == "boom" then error("exploded on " .. item) end
      ferry.sleep(5)
      return item:upper()
    end, function(i, value, err) done[#done + 1] = { i, value, err and true } end)
    assert.equal("A", results[1])
    assert.is_nil(results[2])
    assert.equal("C", results[3])
    assert.matches("exploded on boom", errors[2])
    assert.is_nil(errors[1])
    assert.same({ { 1, "A" }, { 2, nil, true }, { 3, "C" } }, done)
  end)

  it("runs everything at once when jobs exceeds the items, and nothing for an empty list", function()
    local _, _, stats = pool.run({ 1, 2, 3 }, 8, function() ferry.sleep(30) end)
    assert.equal(3, stats.max_running)
    local results, errors, empty = pool.run({}, 4, function() error("never called") end)
    assert.same({}, results)
    assert.same({}, errors)
    assert.equal(0, empty.max_running)
  end)

  it("works from inside a task", function()
    local t = ferry.spawn(function()
      local results, _, stats = pool.run({ 1, 2, 3, 4 }, 3, function(x)
        ferry.sleep(10)
        return x * x
      end)
      return { results = results, peak = stats.max_running }
    end)
    local out = ferry.wait(t)
    assert.same({ 1, 4, 9, 16 }, out.results)
    assert.equal(3, out.peak)
  end)

  it("rejects bad arguments", function()
    local f = function() end
    assert.has_error(function() pool.run({}, 0, f) end, "pool.run: jobs must be an integer >= 1")
    assert.has_error(function() pool.run({}, 1.5, f) end, "pool.run: jobs must be an integer >= 1")
    assert.has_error(function() pool.run("x", 1, f) end, "pool.run: items must be a list")
    assert.has_error(function() pool.run({}, 1, nil) end, "pool.run: fn must be a function")
  end)
end)
