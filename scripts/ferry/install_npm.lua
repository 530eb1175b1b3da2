--- ferry.install_npm: an adapter's npm package installed where the sandbox user can write (M.body, the shell
-- ferry.install runs under its lock), and what npm's output says when that failed (M.explain).
--
-- npm's global prefix (`npm config get prefix`, e.g. /usr) is used when the user can write it; else the
-- package goes into the user prefix "$FERRY_PREFIX" as a local install (`npm install --prefix DIR PKG`), whose
-- commands land in DIR/node_modules/.bin. Any `--prefix` also moves npm's globalconfig to DIR/etc/npmrc, losing
-- its CA file, registry and proxy settings, so the install names the real one (`--globalconfig`, read before).
-- A global install that fails with EACCES/EROFS/EPERM all the same is tried again in the user prefix.
-- Without npm (or node), the adapter's own `install` command runs instead when it has one.
local core = require "ferry.core"

local M = {}

local q = core.sh_quote

--- npm's flags for every install: no audit or funding requests, and a short retry schedule, so that a
--- sandbox without network fails in seconds rather than after npm's default of about 70.
M.FLAGS = "--no-audit --no-fund --no-update-notifier --fetch-retries=2 --fetch-retry-mintimeout=2000 "
  .. "--fetch-retry-maxtimeout=10000"

-- What runs when npm or node is missing: the adapter's own install command, or exit 127.
local function without_npm(what, fallback)
  if not fallback then return "  echo 'ferry-npm: no-" .. what .. "'; exit 127" end
  return "  echo 'ferry-npm: no-" .. what .. "'\n  (\n" .. fallback .. "\n  )\n  exit $?"
end

--- The shell lines installing npm package `pkg` (run with FERRY_PREFIX set and exported). `fallback` (the
--- adapter's install command, or nil) runs when npm or node is missing. Prints "ferry-npm: global DIR" or
--- "ferry-npm: prefix DIR" before the install it runs, "ferry-npm: no-npm"/"no-node" when one is missing;
--- exits with npm's code.
---@param pkg string
---@param fallback string|nil
---@return string
function M.body(pkg, fallback)
  return table.concat({
    "ferry_pkg=" .. q(pkg) .. " ferry_flags=" .. q(M.FLAGS),
    "if ! command -v npm >/dev/null 2>&1; then",
    without_npm("npm", fallback),
    "fi",
    "if ! command -v node >/dev/null 2>&1; then",
    without_npm("node", fallback),
    "fi",
    -- npm's cache lives in $HOME/.npm: somewhere writable when HOME is not
    '{ [ -d "${HOME:-/nonexistent}" ] && [ -w "$HOME" ]; } || '
      .. '{ npm_config_cache="$FERRY_PREFIX/npm-cache"; export npm_config_cache; }',
    'mkdir -p "$FERRY_PREFIX" || exit 1',
    "ferry_g=$(npm config get prefix 2>/dev/null) || ferry_g=",
    'ferry_gl="$ferry_g/lib/node_modules"',
    '[ -d "$ferry_gl" ] || ferry_gl="$ferry_g/lib"',
    '[ -d "$ferry_gl" ] || ferry_gl=$ferry_g',
    'if [ -n "$ferry_g" ] && [ -w "$ferry_gl" ] && { [ ! -d "$ferry_g/bin" ] || [ -w "$ferry_g/bin" ]; }; then',
    '  echo "ferry-npm: global $ferry_g"',
    '  ferry_log="$FERRY_PREFIX/npm-global.log"',
    -- tee shows the output as it comes; the exit code travels in the log (no pipefail in POSIX sh)
    '  { npm install -g $ferry_flags "$ferry_pkg"; echo "ferry-npm: rc=$?"; } 2>&1 | tee "$ferry_log"',
    "  if grep -q '^ferry-npm: rc=0$' \"$ferry_log\"; then rm -f \"$ferry_log\"; exit 0; fi",
    "  if ! grep -Eq '^npm error code (EACCES|EROFS|EPERM)' \"$ferry_log\"; then",
    "    ferry_rc=$(sed -n 's/^ferry-npm: rc=//p' \"$ferry_log\"); rm -f \"$ferry_log\"; exit \"${ferry_rc:-1}\"",
    "  fi",
    '  rm -f "$ferry_log"',
    "fi",
    -- --prefix moves npm's globalconfig to DIR/etc/npmrc too (the CA file and registry set there would be
    -- lost): name the real one, read before the prefix changes
    "ferry_gc=$(npm config get globalconfig 2>/dev/null) || ferry_gc=",
    'if [ -n "$ferry_gc" ]; then set -- --globalconfig "$ferry_gc"; else set --; fi',
    'echo "ferry-npm: prefix $FERRY_PREFIX"',
    'npm install --prefix "$FERRY_PREFIX" "$@" $ferry_flags "$ferry_pkg"',
  }, "\n")
end

--- The user prefix an install went to, from the install's output: the dir of the last "ferry-npm: prefix DIR"
--- line, when npm ran there (nil after a global install or none).
---@param output string
---@return string|nil
function M.prefix_used(output)
  local dir
  for line in output:gmatch("[^\n]+") do
    local d = line:match("^ferry%-npm: prefix (.+)$")
    if d then dir = d end
    if line:match("^ferry%-npm: global ") then dir = nil end
  end
  return dir
end

-- npm's error codes of a registry that cannot be reached, and of one whose certificate is not trusted.
local NETWORK = { ECONNREFUSED = true, EAI_AGAIN = true, ENOTFOUND = true, ETIMEDOUT = true, ECONNRESET = true,
  FETCH_ERROR = true, ENETUNREACH = true, EHOSTUNREACH = true, ERR_SOCKET_TIMEOUT = true, EPIPE = true }
local TLS = { SELF_SIGNED_CERT_IN_CHAIN = true, UNABLE_TO_GET_ISSUER_CERT_LOCALLY = true,
  UNABLE_TO_VERIFY_LEAF_SIGNATURE = true, DEPTH_ZERO_SELF_SIGNED_CERT = true, CERT_HAS_EXPIRED = true,
  ERR_TLS_CERT_ALTNAME_INVALID = true }
local PERMISSION = { EACCES = true, EPERM = true, EROFS = true }
-- The header lines of npm's error report, before the line that says what happened.
local HEADER = { code = true, syscall = true, errno = true, path = true, dest = true }

--- The last error npm reported in `output`: its code ("ECONNREFUSED") and the line saying what happened
--- ("npm error FetchError: request to ... failed, reason: connect ECONNREFUSED 127.0.0.1:9"), or nil.
---@param output string
---@return string|nil code, string|nil line
function M.last_error(output)
  local lines = {}
  for line in output:gmatch("[^\r\n]+") do lines[#lines + 1] = line end
  for i = #lines, 1, -1 do
    local code = lines[i]:match("^npm error code (%S+)%s*$") or lines[i]:match("^npm ERR! code (%S+)%s*$")
    if code then
      for j = i + 1, #lines do
        local word, rest = lines[j]:match("^npm e%a+!? (%S+)(.*)$")
        if not word then break end
        if not HEADER[word] and (word .. rest):match("%S") then return code, (lines[j]:gsub("%s+$", "")) end
      end
      return code, lines[i]
    end
  end
  return nil
end

--- The warning for a failed npm install, from its output; nil when npm did not say why (the caller then
--- quotes the output's tail). `pkg` names the package. The second result is "network" when the registry
--- could not be reached.
---@param output string
---@param pkg string
---@return string|nil warning, string|nil kind
function M.explain(output, pkg)
  local code, line = M.last_error(output)
  if not code then return nil end
  if NETWORK[code] then
    return "the sandbox cannot reach the npm registry (" .. code .. "): " .. line, "network"
  end
  if TLS[code] then
    return "the sandbox does not trust the npm registry's TLS certificate (" .. code .. "): " .. line
  end
  if PERMISSION[code] then return "npm cannot write where it installs (" .. code .. "): " .. line end
  return "npm install " .. pkg .. " failed (" .. code .. "): " .. line
end

--- What the install found missing ("npm" or "node", from its "ferry-npm: no-..." line), in words.
---@param missing string
---@return string
function M.why_missing(missing)
  if missing == "npm" then return "npm is not installed in the sandbox" end
  return "node is not installed in the sandbox (npm needs it)"
end

--- The warning when npm or node is missing and nothing was installed: `fallback_warning` is how the adapter's
--- own install command failed, when it ran instead.
---@param missing string  "npm" | "node"
---@param pkg string
---@param fallback_warning string|nil
---@return string
function M.missing(missing, pkg, fallback_warning)
  if fallback_warning then
    return M.why_missing(missing) .. "; the adapter's own install ran instead and " .. fallback_warning
  end
  return M.why_missing(missing) .. "; cannot install " .. pkg
end

return M
