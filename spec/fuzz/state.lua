--- Fuzz target: ferry.state.read on arbitrary bytes (a state file is the user's, but it may be damaged, edited
-- by hand or written by another version). Contract: a state table or nil, "state: ...", code (EINVAL, ENOENT,
-- EACCES); never an error. A state it returns is one restore can use: version 1, provider, remote_dir and
-- workspace strings, baseline a table of entry tables, excludes, preserve and assets tables, local_stat nil
-- or a table; and excludes.checked on its excludes gives a matcher or a message, never an error.
local DIR = debug.getinfo(1, "S").source:match("^@(.*)/")
local common = dofile(DIR .. "/common.lua")
local excludes = require "ferry.excludes"
local state = require "ferry.state"

local scratch, remove = common.scratch()
local path = scratch .. "/state.json"
local CODES = { EINVAL = true, ENOENT = true, EACCES = true }

local function check_state(st)
  if st.version ~= state.VERSION then common.fail("accepted version %s", tostring(st.version)) end
  for _, k in ipairs { "provider", "remote_dir", "workspace" } do
    if type(st[k]) ~= "string" then common.fail("accepted a %s %s", type(st[k]), k) end
  end
  for _, k in ipairs { "baseline", "excludes", "preserve", "assets" } do
    if type(st[k]) ~= "table" then common.fail("returned a %s %s", type(st[k]), k) end
  end
  if st.local_stat ~= nil and type(st.local_stat) ~= "table" then
    common.fail("local_stat is a %s", type(st.local_stat))
  end
  for rel, e in pairs(st.baseline) do
    if type(e) ~= "table" then common.fail("baseline[%q] is a %s", tostring(rel), type(e)) end
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
