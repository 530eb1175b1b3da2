--- Small helpers shared by the specs: paths of the build outputs, temp files and dirs.
local M = {}

M.root = os.getenv("PWD")
M.ferry_bin = M.root .. "/build/ferry"

--- Run a shell command; fail the spec when it fails.
function M.sh(cmd)
  assert(os.execute(cmd), "command failed: " .. cmd)
end
local sh = M.sh

--- An octal mode written as in chmod: oct("755") == 493.
function M.oct(s) return tonumber(s, 8) end

--- Open descriptors of this process, listed without a child process (a popen's pipe would race the listing).
function M.fd_count()
  return #assert(require("ferry.core").fs_readdir("/proc/self/fd"))
end

--- Pids of the live (not zombie) processes whose command line contains `text` (a plain string).
function M.pids_with(text)
  local out = {}
  for _, name in ipairs(assert(require("ferry.core").fs_readdir("/proc"))) do
    local cmdline = name:match("^%d+$") and M.read_file("/proc/" .. name .. "/cmdline")
    local stat = cmdline and cmdline:find(text, 1, true) and M.read_file("/proc/" .. name .. "/stat")
    if stat and stat:match("^%d+ %b() (%a)") ~= "Z" then out[#out + 1] = tonumber(name) end
  end
  return out
end

--- The baseline of the state file at `path`, as a lookup: baseline[rel] is its entry ({kind, mode & 0777,
--- size, sha256, target}) or nil.
function M.baseline(path)
  local state = require "ferry.state"
  local st = assert(state.read(path))
  return require("ferry.snapshot").view(assert(state.tree(path, st, "baseline")))
end

--- A fresh temporary directory.
function M.tmpdir()
  local p = io.popen("mktemp -d /tmp/ferry-spec.XXXXXX")
  local dir = p:read("l")
  p:close()
  return dir
end

--- Remove a directory tree made by the specs.
function M.rmtree(dir)
  assert(dir:match("^/tmp/"), "refusing to remove " .. dir)
  sh("chmod -R u+rwx '" .. dir .. "' 2>/dev/null; rm -rf '" .. dir .. "'")
end

--- Write `data` to `path`.
function M.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

--- Read a whole file, or nil.
function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

--- Write `data` to a new temporary file and return its path.
function M.write_temp(data)
  local path = os.tmpname()
  M.write_file(path, data)
  return path
end

--- Random bytes from a seeded generator.
function M.random_bytes(n)
  local t = {}
  for i = 1, n do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

return M
