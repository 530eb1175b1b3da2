--- What prepare and restore say about git-aware sync on the command line: the summary lines, the exit code of
--- a restore whose commits went to a ferry/ branch, and the --no-git option as the Lua API's `git` field.
local registry = require "ferry.cli.registry"
local report = require "ferry.cli.report"

local EXIT = registry.EXIT
local M = {}

--- The `git` field of ferry.prepare / ferry.restore for --no-git: false, else nil (the default: on).
---@param o table  the verb's options
---@return boolean|nil
function M.git_option(o)
  if o.no_git then return false end
  return nil
end

local function short_ref(ref)
  return (tostring(ref or "")):gsub("^refs/heads/", "")
end

--- A restore's git outcome in words: "2 commits fast-forwarded onto main", or "branch main moved on the
--- host: 2 commits kept on ferry/main"; nil when no commit came back.
---@param g table|nil  the result's git field
---@return string|nil
function M.summary(g)
  if type(g) ~= "table" then return nil end
  local commits = report.plural(math.tointeger(g.commits) or 0, "commit")
  if g.mode == "fast-forward" then return commits .. " fast-forwarded onto " .. short_ref(g.ref) end
  if g.mode == "ferry-ref" then
    return (g.branch and "branch " .. g.branch or "HEAD") .. " moved on the host: " .. commits .. " kept on "
      .. short_ref(g.ref)
  end
  return nil
end

--- The git lines of a prepare's human summary, on stdout.
---@param r table  the result object
function M.prepare(r)
  local g, out, printable = r.git, io.stdout, report.printable
  if type(g) == "table" then
    if g.mode == "history" and g.pack == "adopted" then
      registry.say(out, "  git       adopted ", printable(short_ref(g.ref or "HEAD")), " at ",
        g.head or "(no commit yet)", "\n")
    elseif g.mode == "history" then
      registry.say(out, "  git       ", printable(g.branch or "detached HEAD"), ": ",
        report.plural(math.tointeger(g.commits) or 0, "commit"), " of history (", g.pack, ", ",
        report.human_bytes(g.bytes), ")\n")
    elseif g.mode == "files" then -- why: in the warnings
      registry.say(out, "  git       the files git shows, without history\n")
    elseif g.why then
      registry.say(out, "  note      ", printable(g.why), "\n")
    end
  end
  local names = {}
  for name in pairs(type(r.reference_dirs) == "table" and r.reference_dirs or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    registry.say(out, "  reference ", printable(name), " -> ", printable(r.reference_dirs[name]), " (read-only)\n")
  end
end

--- The git line of a restore's human summary, on stdout.
---@param r table  the result object
function M.restore(r)
  local line = M.summary(r.git)
  if line then registry.say(io.stdout, "  git      ", report.printable(line), "\n") end
end

--- True when a restore's result object has commits kept on a ferry/ branch (the user's branch moved).
---@param obj table
---@return boolean
function M.kept_on_ferry_ref(obj)
  return type(obj.git) == "table" and obj.git.mode == "ferry-ref"
end

--- The exit code of a restore's result object: 3 for conflicts or commits kept on a ferry/ branch.
---@param obj table
---@return integer|nil
function M.restore_exit(obj)
  if #obj.conflicts > 0 or M.kept_on_ferry_ref(obj) then return EXIT.conflicts end
  return nil
end

return M
