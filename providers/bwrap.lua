--- Provider `bwrap:DIR`: a bubblewrap sandbox on this host. The host system is visible read-only, DIR is
-- bound read-write at /sandbox (with DIR/home as HOME and DIR/workspace as the default remote dir), /tmp is a
-- private tmpfs, there is no network, and the sandbox dies with ferry.
--
-- The root is a tmpfs holding a read-only bind of each entry of the host's / (then remounted read-only),
-- rather than `--ro-bind / /`: bwrap cannot create the /sandbox mount point inside a read-only root.
local core = require "ferry.core"
local proc = require "ferry.proc"
local util = require "ferry.provider_util"

local M = {}

M.usage = "bwrap:DIR"
M.help = "a bubblewrap sandbox: host read-only, DIR read-write at /sandbox, no network"

local SKIP_ROOT = { proc = true, dev = true, tmp = true, sandbox = true }
local HINT = "use -p local to run without isolation"

local root_args   -- host / entries as bwrap arguments, computed once per process
local bwrap_works -- set once a sandbox started in this process

local function host_root_args()
  if root_args then return root_args end
  local names, err, code = core.fs_readdir("/")
  if not names then return nil, err, code end
  local args = {}
  for _, name in ipairs(names) do
    local path = "/" .. name
    local st = not SKIP_ROOT[name] and core.fs_lstat(path)
    if st and st.kind == "symlink" then
      local target = core.fs_readlink(path)
      if target then table.move({ "--symlink", target, path }, 1, 3, #args + 1, args) end
    elseif st and (st.kind == "dir" or st.kind == "file") then
      table.move({ "--ro-bind", path, path }, 1, 3, #args + 1, args)
    end
  end
  root_args = args
  return args
end

-- Create DIR and its home/workspace/tmp subdirs on the host; returns DIR's absolute path.
local function prepare_dir(name, dir)
  local script = 'mkdir -p -- "$1/home" "$1/workspace" "$1/tmp" && cd -- "$1" && pwd -P'
  local res, err = proc.run { argv = { "sh", "-c", script, "sh", dir } }
  if not res then return nil, name .. ": cannot create the sandbox dir: " .. err, "EIO" end
  if res.code ~= 0 then
    return nil, name .. ": cannot create the sandbox dir " .. dir .. ": " .. util.tail(res.stderr), "EIO"
  end
  return (res.stdout:gsub("\n$", ""))
end

local Bwrap = {}
Bwrap.__index = Bwrap

--- The argv that runs `script` with sh inside the sandbox (cwd /).
---@param script string
---@return string[]
function Bwrap:command(script)
  return util.with(self.argv, "sh", "-c", script)
end

function Bwrap.close() end

-- Start one sandbox running `true`: tells a missing bwrap or a kernel that refuses namespaces from a working one.
local function probe(p, opts)
  local res, err, code = util.run_shown(util.with(p.argv, "true"), "true", opts, 30000)
  if not res then
    return util.start_error(p.name, err, code,
      { program = "bwrap", shown = "bubblewrap", install = " (apt-get install bubblewrap)", after = "; " .. HINT })
  end
  if res.code ~= 0 then
    return nil, string.format("%s: bubblewrap cannot create a sandbox here (%s); %s", p.name, util.why(res), HINT),
      "EPERM"
  end
  bwrap_works = true
  return true
end

--- Open the provider: create DIR (and DIR/home, DIR/workspace), and check once per process that bwrap works.
---@param arg string  DIR, the host dir bound at /sandbox
---@param opts table|nil  on_exec
---@return table|nil provider, string|nil err, string|nil code
function M.open(arg, opts)
  opts = opts or {}
  local name = "bwrap:" .. (arg or "")
  if arg == nil or arg == "" then
    return nil, name .. ": expected a host dir to hold the sandbox's files, e.g. bwrap:/tmp/box", "EINVAL"
  end
  local dir, err, code = prepare_dir(name, arg)
  if not dir then return nil, err, code end
  local root, rerr, rcode = host_root_args()
  if not root then return nil, name .. ": cannot list the host's /: " .. rerr, rcode end
  local argv = { "bwrap" }
  table.move(root, 1, #root, 2, argv)
  for _, a in ipairs {
    "--bind", dir, "/sandbox", "--tmpfs", "/tmp", "--dev", "/dev", "--proc", "/proc",
    "--unshare-all", "--die-with-parent", "--new-session", "--setenv", "HOME", "/sandbox/home",
    "--chdir", "/", "--remount-ro", "/",
  } do argv[#argv + 1] = a end
  local p = setmetatable({
    name = name,
    dir = dir,
    argv = argv,
    caps = { stdin = true, binary = true },
    default_remote_dir = "/sandbox/workspace",
    scratch_dir = "/sandbox/tmp", -- /tmp is private to each command
  }, Bwrap)
  if not bwrap_works then
    local ok, perr, pcode = probe(p, opts)
    if not ok then return nil, perr, pcode end
  end
  return p
end

return M
