--- Provider `podman:CONTAINER`: commands run in a running container with `podman exec -i CONTAINER sh -c
-- SCRIPT`. Podman's exec takes the same arguments as docker's: this is the docker provider for another CLI.
local policy = require "ferry.policy"

local docker, err = policy.load("providers", "docker")
if not docker then error("podman: cannot load the docker provider it is built on: " .. tostring(err), 0) end

return docker.engine("podman")
