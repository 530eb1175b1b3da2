--- Fuzz target: ferry.state.read on arbitrary bytes (a state file is the user's, but it may be damaged, edited
-- by hand or written by another version), then ferry.state.tree for its baseline. Contract: a state table or
-- nil, "state: ...", code (EINVAL, ENOENT, EACCES); never an error. A state it returns is one restore can
-- use: version 1 or 2, provider, remote_dir and workspace strings, excludes, preserve and assets tables; for
-- version 1 a baseline table of entry tables, for version 2 trees.baseline a checksum; state.tree gives a tree
-- or nil, "state: ...", code (the tree files are not there: ENOENT), never an error; and excludes.checked on
-- its excludes gives a matcher or a message, never an error.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/")
local common = dofile(DIR .. "/common.lua")
local excludes = require "ferry.excludes"
local state = require "ferry.state"

local scratch, remove = common.scratch()
local path = scratch .. "/state.json"
local CODES = { EINVAL = true, ENOENT = true, EACCES = true }

local function check_state(st)
  if st.version ~= 1 and st.version ~= state.VERSION then common.fail("accepted version %s", tostring(st.version)) end
  for _, k in ipairs { "provider", "remote_dir", "workspace" } do
    if type(st[k]) ~= "string" then common.fail("accepted a %s %s", type(st[k]), k) end
  end
  for _, k in ipairs { "excludes", "preserve", "assets" } do
    if type(st[k]) ~= "table" then common.fail("returned a %s %s", type(st[k]), k) end
  end
  if st.version == 1 then
    if type(st.baseline) ~= "table" then common.fail("returned a %s baseline", type(st.baseline)) end
    for rel, e in pairs(st.baseline) do
      if type(e) ~= "table" then common.fail("baseline[%q] is a %s", tostring(rel), type(e)) end
    end
  elseif type(st.trees) ~= "table" or type(st.trees.baseline) ~= "string" or #st.trees.baseline ~= 64 then
    common.fail("a version 2 state without its baseline's checksum")
  end
  local tok, tree, terr, tcode = pcall(state.tree, path, st, "baseline")
  if not tok then common.fail("state.tree raised: %s", tostring(tree)) end
  if tree == nil and (type(terr) ~= "string" or not terr:find("^state: ") or not CODES[tcode]) then
    common.fail("state.tree failed with %q, %q", tostring(terr), tostring(tcode))
  end
  local ok, matcher, err = pcall(excludes.checked, st.excludes, "restore")
  if not ok then common.fail("excludes.checked raised: %s", tostring(matcher)) end
  if not matcher and type(err) ~= "string" then common.fail("excludes.checked: no matcher and no message") end
end

local function check(data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  local ok, st, err, code = pcall(state.read, path)
  if not ok then common.fail("state.read raised: %s", tostring(st)) end
  if st == nil then
    if type(err) ~= "string" or not err:find("^state: ") or not CODES[code] then
      common.fail("bad failure: %q, %q", tostring(err), tostring(code))
    end
    return
  end
  if type(st) ~= "table" then common.fail("state.read returned a %s", type(st)) end
  check_state(st)
end

return { check = check, close = remove }
