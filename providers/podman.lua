--- Provider `podman:CONTAINER`: commands run in a running container with `podman exec -i CONTAINER sh -c
-- SCRIPT`. Podman's exec takes the same arguments as docker's: both are ferry.provider_util's container
-- provider, so an override of one never changes the other.
return require("ferry.provider_util").container_provider("podman")
