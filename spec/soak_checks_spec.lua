-- The soak's oracle (spec/soak/checks.lua): the merge it predicts follows README's table, and each way a
-- restore can go wrong is reported as its own kind of violation.
local helpers = require "support.helpers"
local checks = dofile(helpers.root .. "/spec/soak/checks.lua")

local function file(data, mode) return { kind = "file", data = data, mode = mode or 420 } end

local function kinds(found)
  local out = {}
  for _, v in ipairs(found) do out[#out + 1] = v.kind end
  table.sort(out)
  return out
end

describe("soak checks", function()
  local B = { keep = file("k"), host = file("h0"), box = file("s0"), both = file("b0"), gone = file("g"),
    same = file("x"), dir = { kind = "dir" } }
  local H = { keep = file("k"), host = file("h1"), box = file("s0"), both = file("b-host"), gone = file("g"),
    same = file("y"), dir = { kind = "dir" }, new = file("n") }
  local S = { keep = file("k"), host = file("h0"), box = file("s1", 493), both = file("b-box"), same = file("y"),
    dir = { kind = "dir" } }

  it("predicts README's merge: one side's change lands, both sides' different changes are conflicts", function()
    local expected, conflicts = checks.merge(B, H, S)
    assert.same({ "both" }, conflicts)
    assert.same(file("k"), expected.keep)
    assert.same(file("h1"), expected.host)
    assert.same(file("s1", 493), expected.box)
    assert.same(file("b-host"), expected.both)
    assert.is_nil(expected.gone) -- the sandbox deleted it, the host left it alone
    assert.same(file("y"), expected.same)
    assert.same(file("n"), expected.new)
  end)

  it("finds nothing wrong in the predicted tree with its conflict copy", function()
    local expected, conflicts = checks.merge(B, H, S)
    local actual = {}
    for k, v in pairs(expected) do actual[k] = v end
    actual["both.ferry-remote"], actual.dir = file("b-box"), { kind = "dir" }
    local c = { B = B, H = H, S = S, expected = expected, conflicts = conflicts, actual = actual,
      reported = { both = true } }
    assert.same({}, checks.final(c))
    c.reported = {}
    assert.same({ "conflict not reported" }, kinds(checks.final(c)))
    c.killed = true -- a killed restore's rerun may not report it again: the copy is what counts
    assert.same({}, checks.final(c))
  end)

  it("names each loss", function()
    local expected, conflicts = checks.merge(B, H, S)
    local actual = { keep = file("k"), host = file("h0"), box = file("s0"), both = file("b-box"), same = file("y"),
      new = file("n"), stray = file("?"), [".ferry-tmp-0123abcd"] = file(""), dir = { kind = "dir" },
      newdir = { kind = "dir" } }
    local c = { B = B, H = H, S = S, expected = expected, conflicts = conflicts, actual = actual, reported = {} }
    assert.same({ "conflict copy missing", "host edit lost", "host edit lost", "sandbox change lost", "stray dir",
      "stray file", "temp file left" }, kinds(checks.final(c)))
  end)

  it("checks the user's writes during a restore, and that a killed restore left whole files", function()
    local expected, conflicts = checks.merge(B, H, S)
    local actual = {}
    for k, v in pairs(expected) do actual[k] = v end
    actual["both.ferry-remote"] = file("b-box")
    actual.box = file("s1", 493)
    local c = { B = B, H = H, S = S, expected = expected, conflicts = conflicts, actual = actual,
      reported = { both = true }, race = { box = file("mine"), keep = false } }
    assert.same({ "host edit during restore lost", "host edit during restore lost" }, kinds(checks.final(c)))
    assert.same({}, checks.whole(H, S, expected, { host = file("h1"), box = file("s1", 493),
      ["both.ferry-remote"] = file("b-box") }))
    assert.same({ "torn or foreign file after a killed restore" }, kinds(checks.whole(H, S, expected,
      { box = file("s") })))
  end)
end)
