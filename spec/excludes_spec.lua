local excludes = require "ferry.excludes"

local function excluded_among(matcher, cases)
  local out = {}
  for _, case in ipairs(cases) do
    local path, is_dir = case:gsub("/$", "")
    if matcher(path, is_dir == 1) then out[#out + 1] = case end
  end
  return out
end

describe("excludes.DEFAULT", function()
  local matcher = excludes.compile(excludes.DEFAULT)

  it("excludes heavy directories at any depth with everything inside them", function()
    assert.same({ "node_modules/", "node_modules/react/index.js", "web/node_modules/", "a/b/vendor/x.go",
      "dist/", "build/", "pkg/out/", "coverage/", ".next/", ".turbo/", "x/.cache/", ".ferry-runtime/",
      ".ferry-runtime/claude/home/settings.json" },
      excluded_among(matcher, { "node_modules/", "node_modules/react/index.js", "web/node_modules/",
        "a/b/vendor/x.go", "dist/", "build/", "pkg/out/", "coverage/", ".next/", ".turbo/", "x/.cache/",
        ".ferry-runtime/", ".ferry-runtime/claude/home/settings.json", "src/", "src/build.c" }))
  end)

  it("leaves files named like those directories, and similar names, alone", function()
    assert.same({}, excluded_among(matcher, { "build", "out", "tools/dist", "mybuild/", "build.gradle",
      "node_modules.txt", ".nextrc", "src/vendored/" }))
  end)

  it("excludes AppleDouble files anywhere and the runtime dir's name whatever it is", function()
    assert.same({ "._README.md", "docs/._img.png", ".ferry-runtime" }, excluded_among(matcher, { "._README.md",
      "docs/._img.png", "docs/a._b", ".ferry-runtime" }))
  end)
end)

describe("excludes.compile", function()
  it("matches a bare name at any depth and anchors a leading '/'", function()
    local m = excludes.compile { "secrets.env", "/tmp" }
    assert.same({ "secrets.env", "deploy/secrets.env", "tmp/", "tmp/x" },
      excluded_among(m, { "secrets.env", "deploy/secrets.env", "tmp/", "tmp/x", "src/tmp/", "secrets.env.example" }))
  end)

  it("anchors a pattern holding a '/'", function()
    local m = excludes.compile { "docs/generated" }
    assert.same({ "docs/generated/", "docs/generated/a.html" },
      excluded_among(m, { "docs/generated/", "docs/generated/a.html", "site/docs/generated/", "docs/generated2" }))
  end)

  it("expands '*' and '?' within one component only", function()
    local m = excludes.compile { "*.log", "/img/*.png", "v?.tmp" }
    assert.same({ "a.log", "x/y/b.log", "img/a.png", "v1.tmp", "x/v2.tmp" },
      excluded_among(m, { "a.log", "x/y/b.log", "img/a.png", "img/sub/a.png", "v1.tmp", "x/v2.tmp", "v10.tmp",
        "log", "a.log.gz" }))
  end)

  it("lets '**' span any number of components, zero included", function()
    local m = excludes.compile { "docs/**/draft.md", "/cache/**", "**/tmp/*.o" }
    assert.same({ "docs/draft.md", "docs/a/draft.md", "docs/a/b/c/draft.md", "cache/x", "cache/x/y", "tmp/a.o",
      "p/q/tmp/b.o" },
      excluded_among(m, { "docs/draft.md", "docs/a/draft.md", "docs/a/b/c/draft.md", "docs/a/draft.mdx",
        "xdocs/draft.md", "cache/", "cache/x", "cache/x/y", "tmp/a.o", "p/q/tmp/b.o", "tmp/sub/c.o" }))
  end)

  it("matches directories only with a trailing '/'", function()
    local m = excludes.compile { "logs/" }
    assert.same({ "logs/", "app/logs/", "logs/today.txt" }, excluded_among(m, { "logs", "logs/", "app/logs/",
      "logs/today.txt", "app/logs" }))
  end)

  it("treats Lua pattern characters in names literally", function()
    local m = excludes.compile { "a+b (1).txt", "%d", "[x]", "c.d", "^$" }
    assert.same({ "a+b (1).txt", "%d", "[x]", "c.d", "^$" },
      excluded_among(m, { "a+b (1).txt", "aab (1).txt", "%d", "5", "[x]", "x", "c.d", "cxd", "^$" }))
  end)

  it("treats a backslash-escaped '*', '?' or '!' as that character", function()
    local m = excludes.compile { "\\*", "what\\?", "\\!important" }
    assert.same({ "*", "what?", "!important" }, excluded_among(m, { "*", "a", "what?", "whatX", "!important" }))
  end)

  it("re-includes with '!', the last matching pattern winning, never inside an excluded directory", function()
    local m = excludes.compile { "*.log", "!keep.log", "build/", "!build/keep.txt", "/tmp/*", "!/tmp/.keep" }
    assert.same({ "a.log", "build/", "build/keep.txt", "tmp/x" },
      excluded_among(m, { "a.log", "keep.log", "sub/keep.log", "build/", "build/keep.txt", "tmp/x", "tmp/.keep" }))
  end)

  it("raises on invalid patterns, naming them", function()
    for pattern, why in pairs {
      [""] = "empty pattern", ["/"] = "empty pattern", ["!"] = "empty pattern",
      ["a//b"] = "empty path component", ["a**"] = "'**' must be a whole path component",
      ["x/**y"] = "'**' must be a whole path component", ["../up"] = "'.' and '..' components are not allowed",
      ["a/./b"] = "'.' and '..' components are not allowed", ["end\\"] = "trailing '\\' escapes nothing",
      ["**/a/**/b/**/c/**/d/**/e"] = "more than 4 '**' components",
    } do
      assert.has_error(function() excludes.compile { "ok", pattern } end,
        string.format("exclude pattern %q: %s", pattern, why))
    end
    assert.has_error(function() excludes.compile { 42 } end, "exclude pattern: expected a string, got number")
    assert.has_error(function() excludes.compile "node_modules" end,
      "excludes.compile: expected a list of patterns, got string")
  end)

  it("matches 20,000 paths against the defaults and user globs in well under a second", function()
    local user = { "*.log", "/docs/**/draft.md", "tmp/", "!keep.log" }
    local m = excludes.compile(excludes.combine(excludes.DEFAULT, user))
    local paths = {}
    for d = 1, 200 do
      for f = 1, 100 do paths[#paths + 1] = string.format("src/pkg%d/sub%d/file%d.lua", d, f % 7, f) end
    end
    local started, count = os.clock(), 0
    for _, p in ipairs(paths) do
      if m(p, false) then count = count + 1 end
    end
    local seconds = os.clock() - started
    assert.equal(0, count)
    assert.is_true(seconds < 0.5, string.format("20,000 paths took %.3f s", seconds))
  end)
end)

describe("excludes.combine and excludes.filter", function()
  it("concatenates lists, skipping nil ones", function()
    assert.same({ "a", "b", "c" }, excludes.combine({ "a" }, nil, { "b", "c" }))
  end)

  it("drops excluded paths from a snapshot", function()
    local snapshot = { src = { kind = "dir" }, ["src/a.c"] = { kind = "file" }, build = { kind = "dir" },
      ["build/a.o"] = { kind = "file" }, out = { kind = "file" } }
    local kept = excludes.filter(snapshot, excludes.compile(excludes.DEFAULT))
    assert.same({ src = { kind = "dir" }, ["src/a.c"] = { kind = "file" }, out = { kind = "file" } }, kept)
  end)
end)
