"""The cluster simulator: N real Raft cores over a simulated network, disks and clock.

Theory of operation (FoundationDB / TigerBeetle-VOPR style, layer 1 of the testing design):
one seed derives every option (cluster size, fault rates, message size limits, snapshot
cadence) and every random choice, so a run is a pure function of (seed, code). Virtual time
advances from event to event in a heap: ticks (every `tick_ms`), message deliveries, client
operations and their time-outs, faults and restarts. After each event the touched node's
`Ready` is processed exactly as a server does it — persist (to a `SimDisk` that loses
unsynced writes on a crash) → send (through `SimNetwork`) → apply → `advance()` — and the
`InvariantChecker` is fed what happened.

A run has a fault phase (drops, duplicates, delays, partitions, crashes — some timed right
after an unsynced write —, membership changes, leader transfers; snapshots happen as logs
are compacted) and a liveness phase (network healed, every node restarted): the cluster
must converge within `liveness_ms`, every member's state machine must agree, and the
client history must be linearizable (per key; unknown outcomes allowed).
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from corral.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    EntryType,
    Message,
    MessageType,
    Mutation,
    ProposalDroppedError,
    RaftError,
    RawNode,
    Snapshot,
    SnapshotMetadata,
    StateType,
    decode_conf_change,
)
from corral.raft.storage import MemoryStorage
from corral.testing.linearizability import (
    UNKNOWN,
    KVInput,
    KVModel,
    Operation,
    Verdict,
    check_operations,
)
from corral.testing.sim.disk import SimDisk
from corral.testing.sim.invariants import InvariantChecker
from corral.testing.sim.kv import KVStateMachine, encode_command
from corral.testing.sim.network import NetworkOptions, SimNetwork

__all__ = ["COVERAGE_KINDS", "SeedResult", "SimOptions", "Simulation", "run_seed"]

#: Fault/protocol events whose coverage `make test` asserts on the fixed seed range.
COVERAGE_KINDS = (
    "leader_change",
    "crash_lost_unsynced",
    "partition",
    "snapshot_install",
    "membership_change",
    "read_index",
)

_TICK, _DELIVER, _CLIENT, _FAULT, _RESTART, _TIMEOUT, _HEAL, _END_FAULTS, _CHECK = range(9)


@dataclass(frozen=True, slots=True)
class SimOptions:
    nodes: int = 3
    spare: int = 2
    tick_ms: int = 10
    election_tick: int = 10
    heartbeat_tick: int = 2
    fault_ms: int = 3000
    liveness_ms: int = 4000
    clients: int = 3
    keys: int = 2
    op_timeout_ms: int = 300
    think_ms: int = 15
    fault_every_ms: int = 120
    crash_after_ready: float = 0.004
    snap_every: int = 10
    snap_keep: int = 2
    max_size_per_msg: int = 1 << 20
    max_inflight: int = 64
    pre_vote: bool = True
    network: NetworkOptions = field(default_factory=NetworkOptions)

    @classmethod
    def from_seed(cls, seed: int) -> SimOptions:
        r = random.Random(f"options-{seed}")
        return cls(
            nodes=r.choice((3, 3, 5)),
            snap_every=r.choice((6, 10, 25)),
            snap_keep=r.choice((0, 2, 5)),
            max_size_per_msg=r.choice((1, 100, 1 << 20)),
            max_inflight=r.choice((1, 4, 64)),
            pre_vote=r.random() < 0.8,
            network=NetworkOptions(
                drop=r.uniform(0.0, 0.08),
                duplicate=r.uniform(0.0, 0.05),
                max_delay=r.randint(3, 20),
            ),
        )


@dataclass(slots=True)
class SeedResult:
    seed: int
    steps: int = 0
    virtual_ms: int = 0
    stats: Counter[str] = field(default_factory=Counter)
    ops_checked: int = 0
    #: Digest of every event and message: equal across runs of one seed (determinism).
    trace: int = 0
    verdict: str = "ok"
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass(slots=True)
class _Op:
    op_id: int
    client: int
    inp: KVInput
    call: int
    node: int


class _Node:
    def __init__(self, node_id: int) -> None:
        self.id = node_id
        self.disk = SimDisk()
        self.raw: RawNode | None = None
        self.storage = MemoryStorage()
        self.kv = KVStateMachine()
        self.applied = 0
        self.commit = 0
        self.conf = ConfState()
        self.reads: dict[bytes, _Op] = {}
        self.read_waiting: list[tuple[int, _Op]] = []


class _Stop(Exception):
    pass


class Simulation:
    def __init__(
        self,
        seed: int,
        options: SimOptions | None = None,
        mutations: frozenset[Mutation] = frozenset(),
    ) -> None:
        self.seed = seed
        self.opts = options or SimOptions.from_seed(seed)
        self.mutations = mutations
        self.rng = random.Random(seed)
        self.net = SimNetwork(random.Random(self.rng.getrandbits(64)), self.opts.network)
        self.inv = InvariantChecker()
        self.now = 0
        self._seq = 0
        self._queue: list[tuple[int, int, int, Any]] = []
        self.nodes: dict[int, _Node] = {}
        self.result = SeedResult(seed)
        self.stats = self.result.stats
        self.history: list[Operation] = []
        self.inflight: dict[int, _Op] = {}
        self.busy: dict[int, _Op | None] = {}
        self._next_op = 1
        self._next_id = self.opts.nodes + 1
        self.faults_on = True
        self.clients_on = True
        self.written: dict[str, list[str]] = {}
        self._conf_indexes: set[int] = set()
        self._first_applied: dict[int, int] = {}  # op id → virtual time of first apply
        self._unknown: list[_Op] = []
        self._trace = 0

    # --- plumbing --------------------------------------------------------------------------
    def _push(self, at: int, kind: int, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, payload))

    def _config(self, node_id: int) -> Config:
        o = self.opts
        return Config(
            id=node_id,
            election_tick=o.election_tick,
            heartbeat_tick=o.heartbeat_tick,
            max_size_per_msg=o.max_size_per_msg,
            max_inflight_msgs=o.max_inflight,
            pre_vote=o.pre_vote,
            check_quorum=True,
            mutations=self.mutations,
        )

    def _start(self, n: _Node, bootstrap: list[int] | None) -> None:
        storage, snap = n.disk.load()
        n.storage = storage
        n.kv = KVStateMachine.decode(snap.data) if snap.data else KVStateMachine()
        n.applied = snap.metadata.index
        n.commit = storage.hard_state.commit
        n.conf = snap.metadata.conf_state
        n.reads = {}
        n.read_waiting = []
        cfg = self._config(n.id)
        if n.applied:
            cfg = Config(**{**_asdict(cfg), "applied": n.applied})
        n.raw = RawNode(cfg, storage, random.Random(self.rng.getrandbits(64)))
        if bootstrap:
            n.raw.bootstrap(bootstrap)
        self._process(n)

    def _alive(self) -> list[_Node]:
        return [n for n in self.nodes.values() if n.raw is not None]

    def _leader(self) -> _Node | None:
        best: _Node | None = None
        for n in self._alive():
            assert n.raw is not None
            r = n.raw.raft
            if r.state == StateType.LEADER and (best is None or r.term > best.raw.raft.term):  # type: ignore[union-attr]
                best = n
        return best

    # --- the Ready loop (persist → send → apply → advance) ---------------------------------
    def _process(self, n: _Node) -> None:
        raw = n.raw
        inv = self.inv
        while raw is not None and raw.has_ready():
            rd = raw.ready()
            r = raw.raft
            if rd.soft_state is not None:
                if rd.soft_state.raft_state == StateType.LEADER:
                    # The first election is not a change of leader.
                    self.stats["elections_won"] += 1
                    if self.stats["elections_won"] > 1:
                        self.stats["leader_change"] += 1
                    inv.on_leader(self.now, n.id, r)
                elif rd.soft_state.raft_state == StateType.CANDIDATE:
                    inv.on_vote(self.now, n.id, r.term, n.id)
            # 1. persist
            if rd.snapshot is not None:
                self.stats["snapshot_install"] += 1
            n.disk.save(rd.snapshot, rd.entries, rd.hard_state, rd.must_sync)
            if rd.snapshot is not None:
                n.storage.apply_snapshot(rd.snapshot)
            if rd.entries:
                n.storage.append(rd.entries)
                inv.on_append(self.now, n.id, r, rd.entries, n.commit)
            if rd.hard_state is not None:
                n.storage.set_hard_state(rd.hard_state)
                if rd.hard_state.commit > n.commit:
                    inv.on_commit(self.now, n.id, r, n.commit, rd.hard_state.commit)
                    n.commit = rd.hard_state.commit
            # 2. send
            for m in rd.messages:
                self._send(m)
            # 3. apply
            if rd.snapshot is not None:
                n.kv = KVStateMachine.decode(rd.snapshot.data)
                n.applied = rd.snapshot.metadata.index
                n.conf = rd.snapshot.metadata.conf_state
            for e in rd.committed_entries:
                if e.index <= n.applied:
                    continue
                inv.on_apply(self.now, n.id, r, e, n.applied)
                n.applied = e.index
                if e.type == EntryType.CONF_CHANGE:
                    cc = decode_conf_change(e.data)
                    n.conf = raw.apply_conf_change(cc)
                    if e.term > 1 and e.index not in self._conf_indexes:
                        # Counted once per change, not once per node applying it.
                        self._conf_indexes.add(e.index)
                        self.stats["membership_change"] += 1
                        if cc.type == ConfChangeType.ADD_LEARNER:
                            self.stats["learner_added"] += 1
                elif e.data:
                    res = n.kv.apply(e.data)
                    if res is not None:
                        self._first_applied.setdefault(res[0], self.now)
                        op = self.inflight.get(res[0])
                        if op is not None and op.node == n.id:
                            self._complete(op, res[1])
            for rs in rd.read_states:
                op = n.reads.pop(rs.request_ctx, None)
                if op is not None:
                    n.read_waiting.append((rs.index, op))
            if n.read_waiting:
                self._serve_reads(n)
            raw.advance()
            inv.on_log_check(self.now, n.id, r)
            if inv.violations:
                raise _Stop
            self._maybe_compact(n)
            if (
                self.faults_on
                and not rd.must_sync
                and n.disk.dirty
                and self.rng.random() < self.opts.crash_after_ready
            ):
                self._crash(n, "crash_after_ready")
                return

    def _serve_reads(self, n: _Node) -> None:
        keep = []
        for idx, op in n.read_waiting:
            if n.applied >= idx:
                if self.inflight.get(op.op_id) is op:
                    self.stats["read_index"] += 1
                    self._complete(op, n.kv.read(op.inp.key))
            else:
                keep.append((idx, op))
        n.read_waiting = keep

    def _maybe_compact(self, n: _Node) -> None:
        st = n.storage
        if n.applied - (st.first_index() - 1) < self.opts.snap_every:
            return
        if n.applied > st.last_index():
            return
        snap = st.create_snapshot(n.applied, n.conf, n.kv.encode())
        n.disk.save_snapshot(snap)
        keep_from = n.applied - self.opts.snap_keep
        if keep_from > st.first_index() - 1:
            st.compact(keep_from)

    def _send(self, m: Message) -> None:
        if m.type == MessageType.SNAP:
            m = self._merged_snapshot(m)
        if m.type == MessageType.VOTE_RESP and not m.reject:
            self.inv.on_vote(self.now, m.from_, m.term, m.to)
        delays = self.net.deliveries(m.from_, m.to)
        if m.type == MessageType.SNAP and not delays:
            self._push(self.now + 1, _DELIVER, ("snap-failed", m))
        for d in delays:
            self._push(self.now + d, _DELIVER, m)

    def _merged_snapshot(self, m: Message) -> Message:
        """Send the sender's current state instead of its last stored snapshot.

        As etcd's server does (`createMergedSnapshotMessage`): the stored snapshot may
        predate the recipient's own admission to the cluster, which it would refuse.
        """
        n = self.nodes[m.from_]
        st = n.storage
        if m.snapshot is None or n.applied <= m.snapshot.metadata.index:
            return m
        if n.applied > st.last_index():
            return m
        meta = SnapshotMetadata(n.applied, st.term(n.applied), n.conf)
        return dataclasses.replace(m, snapshot=Snapshot(meta, n.kv.encode()))

    # --- clients ---------------------------------------------------------------------------
    def _next_input(self, client: int) -> KVInput:
        r = self.rng
        key = f"k{r.randrange(self.opts.keys)}"
        x = r.random()
        if x < 0.35:
            return KVInput("read", key)
        value = f"v{self._next_op}"
        seen = self.written.get(key) or ["none"]
        expected = seen[-1] if r.random() < 0.7 else r.choice(seen)
        if x < 0.65:
            self.written.setdefault(key, []).append(value)
            return KVInput("set", key, value)
        if x < 0.85:
            self.written.setdefault(key, []).append(value)
            return KVInput("cas", key, value, expected)
        if x < 0.95:
            return KVInput("cad", key, None, expected)
        return KVInput("delete", key)

    def _client(self, client: int) -> None:
        if not self.clients_on or self.busy.get(client) is not None:
            return
        alive = self._alive()
        if not alive:
            self._push(self.now + self.opts.think_ms, _CLIENT, client)
            return
        n = self.rng.choice(alive)
        assert n.raw is not None
        inp = self._next_input(client)
        op = _Op(self._next_op, client, inp, self.now, n.id)
        self._next_op += 1
        try:
            if inp.kind == "read":
                ctx = op.op_id.to_bytes(8, "big")
                n.raw.read_index(ctx)
                n.reads[ctx] = op
            else:
                n.raw.propose(encode_command(op.op_id, inp))
        except ProposalDroppedError:
            self.stats["ops_dropped"] += 1
            self._push(self.now + self.opts.think_ms, _CLIENT, client)
            return
        self.inflight[op.op_id] = op
        self.busy[client] = op
        self._push(self.now + self.opts.op_timeout_ms, _TIMEOUT, op)
        self._process(n)

    def _complete(self, op: _Op, output: Any) -> None:
        del self.inflight[op.op_id]
        self.busy[op.client] = None
        self.history.append(Operation(op.client, op.inp, op.call, output, self.now))
        self.stats["ops_ok"] += 1
        self._push(self.now + self.rng.randint(1, self.opts.think_ms), _CLIENT, op.client)

    def _timeout(self, op: _Op) -> None:
        if self.inflight.get(op.op_id) is not op:
            return
        del self.inflight[op.op_id]
        self.busy[op.client] = None
        if op.inp.kind != "read":
            # The write may or may not have happened: its outcome is unknown.
            self._unknown.append(op)
            self.stats["ops_unknown"] += 1
        self._push(self.now + self.opts.think_ms, _CLIENT, op.client)

    # --- faults ----------------------------------------------------------------------------
    def _crash(self, n: _Node, why: str) -> None:
        if n.raw is None:
            return
        n.raw = None
        self.stats["crash"] += 1
        if n.disk.crash():
            self.stats["crash_lost_unsynced"] += 1
        self._push(self.now + self.rng.randint(20, 400), _RESTART, n.id)

    def _fault(self) -> None:
        if not self.faults_on:
            return
        r = self.rng
        self._push(self.now + r.randint(1, 2 * self.opts.fault_every_ms), _FAULT)
        kind = r.choices(("partition", "crash", "member", "transfer"), weights=(4, 3, 2, 1))[0]
        alive = self._alive()
        leader = self._leader()
        ids = sorted(self.nodes)
        if kind == "partition":
            self.stats["partition"] += 1
            shape = r.random()
            if shape < 0.4:
                victim = leader.id if leader and r.random() < 0.6 else r.choice(ids)
                self.net.isolate(victim, ids)
            elif shape < 0.8:
                shuffled = ids[:]
                r.shuffle(shuffled)
                cut = r.randint(1, len(ids) // 2)
                self.net.split(shuffled[:cut], shuffled[cut:])
            else:
                a, b = r.sample(ids, 2)
                self.net.one_way(a, b)
            self._push(self.now + r.randint(50, 500), _HEAL)
        elif kind == "crash" and alive:
            target = leader if leader and r.random() < 0.4 else r.choice(alive)
            self._crash(target, "crash")
        elif kind == "member" and leader is not None and leader.raw is not None:
            voters = leader.raw.raft.trk.voters
            learners = leader.raw.raft.trk.learners
            if learners and len(voters) < 5:
                # Promote a learner (it has been catching up without a vote).
                cc = ConfChange(ConfChangeType.ADD_NODE, min(learners))
            elif len(voters) < 5 and self._next_id <= self.opts.nodes + self.opts.spare:
                learner = r.random() < 0.5
                cct = ConfChangeType.ADD_LEARNER if learner else ConfChangeType.ADD_NODE
                cc = ConfChange(cct, self._next_id)
                new = _Node(self._next_id)
                self.nodes[new.id] = new
                self._next_id += 1
                self._start(new, None)
            elif len(voters) > 3:
                cc = ConfChange(ConfChangeType.REMOVE_NODE, r.choice(sorted(voters)))
            else:
                return
            try:
                leader.raw.propose_conf_change(cc)
            except ProposalDroppedError:
                return
            self._process(leader)
        elif kind == "transfer" and leader is not None and leader.raw is not None:
            others = sorted(v for v in leader.raw.raft.trk.voters if v != leader.id)
            if others:
                self.stats["transfer"] += 1
                leader.raw.transfer_leader(r.choice(others))
                self._process(leader)

    def _end_faults(self) -> None:
        self.faults_on = False
        self.net.heal()
        self.net.reliable = True
        for n in self.nodes.values():
            if n.raw is None:
                self._start(n, None)
        self._push(self.now + 50, _CHECK)

    def _converged(self) -> bool:
        leader = self._leader()
        if leader is None or leader.raw is None:
            return False
        r = leader.raw.raft
        if r.log.zero_term_on_range_err(r.log.committed) != r.term:
            return False
        for v in r.trk.voters:
            n = self.nodes.get(v)
            if n is None or n.raw is None or n.applied != r.log.committed:
                return False
        return True

    # --- the run ---------------------------------------------------------------------------
    def run(self) -> SeedResult:
        o = self.opts
        res = self.result
        voters = list(range(1, o.nodes + 1))
        try:
            for v in voters:
                self.nodes[v] = _Node(v)
            for v in voters:
                self._start(self.nodes[v], voters)
            self._push(o.tick_ms, _TICK)
            for c in range(o.clients):
                self.busy[c] = None
                self._push(self.rng.randint(1, 50), _CLIENT, c)
            self._push(self.rng.randint(50, 2 * o.fault_every_ms), _FAULT)
            self._push(o.fault_ms, _END_FAULTS)
            self._loop(o.fault_ms + o.liveness_ms)
        except _Stop:
            pass
        except RaftError as exc:
            self.inv.fail(self.now, f"core raised {type(exc).__name__}: {exc}")
        res.violations.extend(self.inv.violations)
        res.virtual_ms = self.now
        res.trace = self._trace
        self.stats["dropped"] = self.net.dropped
        self.stats["duplicated"] = self.net.duplicated
        if res.violations:
            res.verdict = "violation"
            return res
        self._final_checks()
        return res

    def _loop(self, deadline: int) -> None:
        q = self._queue
        while q:
            at, _seq, kind, payload = heapq.heappop(q)
            if at > deadline:
                self.inv.fail(at, "liveness: the cluster did not converge after faults stopped")
                break
            self.now = at
            self.result.steps += 1
            self._trace = hash((self._trace, at, kind))
            if kind == _TICK:
                for n in list(self.nodes.values()):
                    if n.raw is not None:
                        n.raw.tick()
                        self._process(n)
                self._push(at + self.opts.tick_ms, _TICK)
            elif kind == _DELIVER:
                self._deliver(payload)
            elif kind == _CLIENT:
                self._client(payload)
            elif kind == _TIMEOUT:
                self._timeout(payload)
            elif kind == _FAULT:
                self._fault()
            elif kind == _HEAL:
                if self.faults_on:
                    self.net.heal()
            elif kind == _RESTART:
                n = self.nodes[payload]
                if n.raw is None:
                    self._start(n, None)
            elif kind == _END_FAULTS:
                self._end_faults()
            elif kind == _CHECK:
                if at >= self.opts.fault_ms + 200 and self._converged():
                    self.clients_on = False
                    if not self.inflight:
                        break
                self._push(at + 50, _CHECK)

    def _deliver(self, payload: Any) -> None:
        if isinstance(payload, tuple):
            _, failed = payload
            sender = self.nodes.get(failed.from_)
            if sender is not None and sender.raw is not None:
                sender.raw.report_snapshot(failed.to, False)
                self._process(sender)
            return
        m: Message = payload
        self._trace = hash((self._trace, m.type, m.from_, m.to, m.term, m.index, m.commit))
        n = self.nodes.get(m.to)
        if n is None or n.raw is None:
            if m.type == MessageType.SNAP:
                self._deliver(("snap-failed", m))
            return
        self.stats["messages"] += 1
        n.raw.step(m)
        self._process(n)
        if m.type == MessageType.SNAP:
            sender = self.nodes.get(m.from_)
            if sender is not None and sender.raw is not None:
                sender.raw.report_snapshot(m.to, True)
                self._process(sender)

    def _final_checks(self) -> None:
        res = self.result
        leader = self._leader()
        if leader is not None and leader.raw is not None:
            states = {
                v: self.nodes[v].kv.data
                for v in leader.raw.raft.trk.voters
                if v in self.nodes and self.nodes[v].raw is not None
            }
            first = states.get(leader.id)
            for v, data in states.items():
                if data != first:
                    res.violations.append(
                        f"state machines differ after convergence: {leader.id} vs {v}"
                    )
                    break
        self.history.extend(self._patched_unknown_ops())
        check = check_operations(KVModel(), self.history, max_steps=1_000_000)
        res.ops_checked = len(self.history)
        if check.verdict is Verdict.ILLEGAL:
            res.violations.append(
                f"linearizability: history of key {check.failed_partition[0].input.key} "
                f"is not linearizable ({len(check.failed_partition)} ops)"
            )
        elif check.verdict is Verdict.UNKNOWN:
            res.violations.append("linearizability: checker ran out of budget (unknown)")
        if res.violations:
            res.verdict = "violation"


    def _patched_unknown_ops(self) -> list[Operation]:
        """Timed-out writes, bounded by what the replicas show (etcd's history patching).

        An unknown write that no replica ever applied cannot have taken effect (a committed
        entry is applied everywhere by convergence), so it is dropped; one that was applied
        took effect no later than its first application anywhere. Its output stays unknown.
        Reads that observed a value still need a write that explains it, so a lost or
        invented write is still caught.
        """
        out = []
        for op in self._unknown:
            first = self._first_applied.get(op.op_id)
            if first is not None:
                out.append(Operation(op.client, op.inp, op.call, UNKNOWN, max(first, op.call)))
        return out


def _asdict(cfg: Config) -> dict[str, Any]:
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


def run_seed(
    seed: int, mutations: frozenset[Mutation] = frozenset(), options: SimOptions | None = None
) -> SeedResult:
    """Run one seed of the simulator and return its result (never raises for a bug found)."""
    return Simulation(seed, options, mutations).run()
