"""Test tools shipped with corral (as trio ships `trio.testing`).

`ports` hands out free loopback ports; `servers` starts real etcd-compatible servers (the
real etcd 3.4 or `corral etcd`) as processes; the Raft simulator, the linearizability checker
and the fault tools live here too.
"""
