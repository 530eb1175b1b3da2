--- Provider `bwrap:DIR[?OPTIONS]`: a bubblewrap sandbox on this host. The host system is visible read-only, DIR
-- is bound read-write at /sandbox (with DIR/home as HOME and DIR/workspace as the default remote dir), /tmp is
-- a private tmpfs, there is no network, and the sandbox dies with ferry. DIR is made when missing, but its
-- parent must exist (a mistyped path is an error, not a new tree). OPTIONS, `name=value` joined by `&`:
--   net=1   share the host's network (an agent installs from npm and reaches its API; the host's /etc, with
--           resolv.conf and the CA certificates, is visible as always); default net=0: no network at all
--   home=0  HOME (/sandbox/home) is an empty tmpfs for each command: nothing written there outlives the
--           command; default home=1: DIR/home, read-write, kept between commands and runs
--
-- The root is a tmpfs holding a read-only bind of each entry of the host's / (then remounted read-only),
-- rather than `--ro-bind / /`: bwrap cannot create the /sandbox mount point inside a read-only root.
local core = require "ferry.core"
local proc = require "ferry.proc"
local util = require "ferry.provider_util"
local util_path = require "ferry.util"

local M = {}

M.usage = "bwrap:DIR"
M.help = "a bubblewrap sandbox: host read-only, DIR read-write at /sandbox, no network; options: "
  .. "bwrap:DIR?net=1 (the host's network), &home=0 (an empty HOME per command)"

-- The options of the provider string and their defaults.
local OPTIONS = { net = false, home = true }

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

--- The argument parsed: {dir, net = bool, home = bool}, or nil and what is wrong.
---@param arg string  DIR[?name=value&...]
---@return table|nil target, string|nil err
function M.parse(arg)
  local dir, query = arg:match("^([^?]*)%?(.*)$")
  dir = dir or arg
  if dir == "" then return nil, "expected a host dir to hold the sandbox's files, e.g. bwrap:/tmp/box" end
  local t = { dir = dir }
  for k, v in pairs(OPTIONS) do t[k] = v end
  for pair in (query or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if not k or OPTIONS[k] == nil then
      local names = {}
      for name in pairs(OPTIONS) do names[#names + 1] = name end
      table.sort(names)
      return nil, "unknown option '" .. (k or pair) .. "' (" .. table.concat(names, ", ") .. ")"
    end
    if v ~= "0" and v ~= "1" then return nil, "option " .. k .. " expects 0 or 1, got '" .. v .. "'" end
    t[k] = v == "1"
  end
  return t
end

-- DIR's parent must exist: a mistyped path is an error, not a new tree.
local function check_parent(name, dir)
  local parent = util_path.split_path((util_path.absolute(dir):gsub("/+$", "")))
  local st = core.fs_stat(parent)
  if not st then return nil, name .. ": " .. parent .. " does not exist", "ENOENT" end
  if st.kind ~= "dir" then return nil, name .. ": " .. parent .. " is not a directory", "ENOTDIR" end
  return true
end

-- Create DIR and its home/workspace/tmp subdirs on the host; returns DIR's absolute path.
local function prepare_dir(name, dir)
  local ok, perr, pcode = check_parent(name, dir)
  if not ok then return nil, perr, pcode end
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
  local t, why = M.parse(arg or "")
  if not t then return nil, name .. ": " .. why, "EINVAL" end
  local dir, err, code = prepare_dir(name, t.dir)
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
  if t.net then argv[#argv + 1] = "--share-net" end
  if not t.home then table.move({ "--tmpfs", "/sandbox/home" }, 1, 2, #argv + 1, argv) end
  local p = setmetatable({
    name = name,
    dir = dir,
    net = t.net,
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
