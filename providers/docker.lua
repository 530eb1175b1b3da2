--- Provider `docker:CONTAINER`: commands run in a running container with `docker exec -i CONTAINER sh -c
-- SCRIPT` (no tty, so stdin and stdout are 8-bit clean). Any docker-compatible CLI is the same one line with
-- its own name (providers/podman.lua).
return require("ferry.provider_util").container_provider("docker")
