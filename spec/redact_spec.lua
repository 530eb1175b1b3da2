local redact = require "ferry.redact"
local cjson = require "cjson"

describe("redact.new", function()
  it("replaces every occurrence of each secret value, longest first, as plain text", function()
    local r = redact.new { "hunter2", "hunter2-and-more", "a.b%c" }
    assert.equal("x *** y *** z ***", r "x hunter2-and-more y hunter2 z a.b%c")
    assert.equal("axbyc", r "axbyc") -- '.' and '%' are not pattern characters here
    assert.equal("*** ***|***", r "hunter2 hunter2|hunter2hunter2")
  end)

  it("hides overlapping secrets entirely", function()
    local r = redact.new { "abcd", "cdef" }
    assert.equal("<***>", r "<abcdef>")
  end)

  it("ignores empty and non-string secrets and passes non-strings through", function()
    local r = redact.new { "", 42, "tok" }
    assert.equal("a *** b", r "a tok b")
    assert.equal(7, r(7))
    assert.is_nil(r(nil))
    assert.has_error(function() redact.new "secret" end, "redact.new: expected a table of secret strings, got string")
  end)

  it("accepts a map of names to secret values", function()
    local r = redact.new { GITHUB = "s3cr3t-value", OTHER = "pa55" }
    assert.equal("*** ***", r "s3cr3t-value pa55")
  end)

  it("redacts token shapes without being told", function()
    local r = redact.new()
    assert.equal("key *** ok", r "key sk-ant-api03-abcdefghijklmnopqrstuvwxyz ok")
    assert.equal("sk-short task-abcdefghijklmnopqrstuvwxyz0123", r "sk-short task-abcdefghijklmnopqrstuvwxyz0123")
    assert.equal("*** ghs_tooshort", r "ghp_abcdefghijklmnopqrstuvwxyz0123456789 ghs_tooshort")
    assert.equal("***", r "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz")
    assert.equal('curl -H "Authorization: Bearer ***" x', r 'curl -H "Authorization: Bearer abc.def-ghi" x')
    assert.equal("Authorization: Basic ***", r "Authorization: Basic dXNlcjpwYXNz")
    assert.equal("bearer *** rest", r "bearer abc/def+== rest")
    assert.equal("jwt *** end", r "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl_-x end")
  end)

  it("redacts credential option values in logged commands, and only those", function()
    local r = redact.new()
    assert.equal("agent --token *** --api-key=*** --password \"***\" --apikey '***' --github-token=***",
      r "agent --token abc --api-key=xyz --password \"p w\" --apikey 'k k' --github-token=q")
    local harmless = "ferry --secret-env OPENAI_KEY --foo bar --tokens 3"
    assert.equal(harmless, r(harmless))
    assert.equal("--client-secret ***\n--password=***", r "--client-secret abc\n--password=hunter2")
  end)

  it("redacts credential-named environment assignments and JSON members", function()
    local r = redact.new()
    assert.equal("GITHUB_TOKEN=*** API_KEY=*** OPENAI_API_KEY=*** PATH=/bin MONKEY=2 KEYS=1",
      r "GITHUB_TOKEN=abc API_KEY=1 OPENAI_API_KEY=zz PATH=/bin MONKEY=2 KEYS=1")
    assert.equal('{"refresh_token": "***", "max_tokens": 5, "id_token":"***", "key": "home"}',
      r '{"refresh_token": "abc", "max_tokens": 5, "id_token":"x.y", "key": "home"}')
    assert.equal("--asset KEY=/home/me/.codex --key home", r "--asset KEY=/home/me/.codex --key home")
  end)

  it("keeps token shapes when asked to redact secret values only", function()
    local r = redact.new({ "abc" }, { shapes = false })
    assert.equal("*** --token x", r "abc --token x")
  end)
end)

describe("redact.deep", function()
  it("returns a redacted deep copy, keys included, leaving the original alone", function()
    local r = redact.new { "s3cret" }
    local original = { event = "warn", message = "install failed: s3cret", nested = { list = { "a", "s3cret" } },
      ["s3cret"] = true, n = 3 }
    local copy = redact.deep(original, r)
    assert.same({ event = "warn", message = "install failed: ***", nested = { list = { "a", "***" } },
      ["***"] = true, n = 3 }, copy)
    assert.equal("install failed: s3cret", original.message)
  end)

  it("keeps metatables and cycles", function()
    local marker = { __name = "list" }
    local t = { list = setmetatable({}, marker), null = cjson.null }
    t.self = t
    local copy = redact.deep(t, redact.new {})
    assert.equal(copy, copy.self)
    assert.equal(marker, getmetatable(copy.list))
    assert.equal(cjson.null, copy.null)
  end)
end)

describe("redact.table", function()
  it("returns the table itself when no string needs redacting, a redacted copy otherwise", function()
    local r = redact.new { "s3cret" }
    local clean = { a = "plain", list = { "x", "y" }, n = 1 }
    assert.equal(clean, redact.table(clean, r))
    local dirty = { a = "plain", list = { "x", "the s3cret" }, ["s3cret key"] = 1 }
    local copy = redact.table(dirty, r)
    assert.are_not.equal(dirty, copy)
    assert.same({ a = "plain", list = { "x", "the ***" }, ["*** key"] = 1 }, copy)
    assert.equal("***", redact.table("s3cret", r))
  end)
end)

describe("state.redactor", function()
  local state = require "ferry.state"

  it("redacts the free text of a state record or a result, never a path, name, link target or digest", function()
    local token = "sk-abcdefghijklmnopqrstuvwxyz0123456789"
    local fn, record = state.redactor { "abab" }
    local st = { provider = "cmd:env TOKEN=abab", workspace = "/w/" .. token, remote_dir = "/r/abab",
      baseline = { ["abab/" .. token] = { kind = "symlink", target = "x-abab" } },
      local_stat = { ["a.txt"] = "644 3 12 1700000000.25 " .. ("ab"):rep(32) },
      excludes = { "*abab*" }, changed = { "abab.txt" }, conflict_copies = { abab = "abab.ferry-remote" },
      warnings = { "kept abab", "a " .. token }, install_warning = "x abab", refused = { "abab: hard link" } }
    local out = record(st)
    assert.are_not.equal(st, out)
    assert.equal("cmd:env TOKEN=***", out.provider)
    assert.same({ "kept ***", "a ***" }, out.warnings)
    assert.equal("x ***", out.install_warning)
    assert.same({ "***: hard link" }, out.refused)
    for _, k in ipairs { "workspace", "remote_dir", "baseline", "local_stat", "excludes", "changed",
      "conflict_copies" } do
      assert.equal(st[k], out[k], k)
    end
    assert.equal("cmd:env TOKEN=abab", st.provider) -- the record itself is left alone
    assert.equal("x ***", fn "x abab")
    local clean = { provider = "local", workspace = "/w/abab", warnings = {} }
    assert.equal(clean, record(clean))
  end)
end)
