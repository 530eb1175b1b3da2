-- ferry.inspect: how the REPL prints a value (nested, sorted, bounded, cycles marked, terminal-safe).
local inspect = require("ferry.inspect").inspect

describe("the REPL's table printer", function()
  it("prints scalars as Lua would write them", function()
    assert.equal("nil", inspect(nil))
    assert.equal("1.5", inspect(1.5))
    assert.equal("true", inspect(true))
    assert.equal('"a b"', inspect("a b"))
    assert.equal("<function [C]>", inspect(print))
    assert.matches("^<function .*repl_inspect_spec%.lua:%d+>$", inspect(function() end))
  end)

  it("prints a table nested, the list part first, then the keys sorted", function()
    assert.equal("{}", inspect({}))
    assert.equal('{ 3, 2, [1.5] = 2, a = { b = 1 }, ["not id"] = true, z = 1, [true] = 1 }',
      inspect({ 3, 2, z = 1, a = { b = 1 }, ["not id"] = true, [true] = 1, [1.5] = 2 }))
    assert.equal('{ _ok = 2, ["end"] = 1 }', inspect({ ["end"] = 1, _ok = 2 })) -- a keyword is not a bare key
  end)

  it("bounds the depth, the entries per table and the length of strings", function()
    assert.equal("{ a = { b = { c = { d = {...} } } } }", inspect({ a = { b = { c = { d = { e = 1 } } } } }))
    assert.equal("{ a = {...} }", inspect({ a = { b = 1 } }, { depth = 1 }))
    local list = {}
    for n = 1, 8 do list[n] = n end
    assert.equal("{ 1, 2, 3, ... (5 more) }", inspect(list, { items = 3 }))
    assert.equal('"xxxxxxxxxx"...(30 bytes)', inspect(("x"):rep(30), { string_bytes = 10 }))
  end)

  it("breaks a table wider than the width over lines, indented", function()
    assert.equal('{\n  long = "' .. ("y"):rep(40) .. '",\n  nested = { 1, 2 }\n}',
      inspect({ long = ("y"):rep(40), nested = { 1, 2 } }, { width = 40 }))
    assert.equal("{\n  a = {\n    b = 1,\n    c = 2\n  }\n}", inspect({ a = { b = 1, c = 2 } }, { width = 10 }))
  end)

  it("numbers a table met twice and marks the cycle", function()
    local t = { name = "x" }
    t.self = t
    assert.equal('<1>{ name = "x", self = <table 1> }', inspect(t))
    local shared = {}
    assert.equal("{ <1>{}, <table 1> }", inspect({ shared, shared }))
  end)

  it("escapes every byte a terminal could act on, and reads back as Lua", function()
    local s = 'a\27[2Jb\n"q"\\\0\xff'
    local text = inspect(s)
    assert.equal('"a\\x1b[2Jb\\n\\"q\\"\\\\\\x00\\xff"', text)
    assert.equal(s, load("return " .. text)())
  end)
end)
