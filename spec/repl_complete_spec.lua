-- ferry.repl_complete: what TAB offers in the REPL (the tmux spec in cli_spec.lua drives it through libedit).
describe("the REPL's completion", function()
  local candidates = require("ferry.repl_complete").candidates
  local env = setmetatable({ ferry = { prepare = 1, proc = { run = 1 }, restore = 1 },
    sb = setmetatable({ name = "local" }, { __index = { exec = function() end, exists = 1, put = function() end } }),
    s = "text", print = print, pairs = pairs }, { __index = _G })

  it("completes a global, a keyword, and a field of a table", function()
    assert.same({ "print" }, candidates("pri", env))
    assert.same({ "pairs", "print" }, candidates("x = p", env))
    assert.same({ "restore" }, candidates("ferry.re", env))
    assert.same({ "prepare", "proc" }, candidates("ferry.pr", env))
    assert.same({ "run" }, candidates("if ferry.proc.r", env))
    assert.same({ "repeat", "return" }, candidates("re", env))
  end)

  it("completes methods after ':' (through __index), string methods after a string", function()
    assert.same({ "exec" }, candidates("sb:ex", env))
    assert.same({ "exec", "exists" }, candidates("sb.ex", env))
    assert.same({ "upper" }, candidates("s:up", env))
    assert.same({ "upper" }, candidates("('x'):up", env))
    assert.same({ "format" }, candidates("string.fo", env))
  end)

  it("offers nothing where nothing is known, without running code", function()
    assert.same({}, candidates("nope.x", env))
    assert.same({}, candidates("f():x", env))
    assert.same({}, candidates("1.5", env))
    assert.same({}, candidates("sb:exec():x", env))
  end)
end)
