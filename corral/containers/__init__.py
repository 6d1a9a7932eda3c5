"""Containers for corral units: drivers (podman, runc, docker), images, Quadlet-style units.

Theory of operation:

* A machine's container settings live in its root folder (`etc/corral/containers.yaml`), not in
  code; `settings` turns them into a corral-owned podman configuration (`containers.conf`,
  `storage.conf` under the machine root) so every machine has its own storage and state.
* `drivers` gives one small interface (`run_argv`, `stop`, `remove`, `state`) over podman, runc
  (OCI bundles built from imported images) and docker (only when a Docker engine answers).
* `corral containers …` is a docker-like CLI over the machine's driver; an Exec line that
  calls `docker` or `/usr/bin/docker` is mapped onto it (`dockercompat`), so fleet-era units
  run unchanged and no host binary is replaced.
* `quadlet` turns a `[Container]` section into a service the way Podman's Quadlet generator
  does (reference: containers.md §2.3), adapted to a runner without systemd: the container
  runs in the foreground and stop removes the container itself.
"""
