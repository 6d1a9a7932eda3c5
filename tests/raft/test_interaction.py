"""Scripted interaction scenarios with checked-in expected output (etcd-io/raft datadriven).

Each `testdata/*.txt` file is a list of blocks::

    command arg key=value
    ----
    expected output

Run with `CORRAL_REWRITE=1` to regenerate the expected output after a deliberate change,
then review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    EntryType,
    StateType,
    decode_conf_change,
)
from corral.testing.sim.memnet import MemNetwork

DATA = Path(__file__).parent / "testdata"
REWRITE = os.environ.get("CORRAL_REWRITE") == "1"


def parse(text: str) -> list[tuple[str, str, str]]:
    """Blocks of (comment lines before it, command line, expected output)."""
    blocks: list[tuple[str, str, str]] = []
    lines = text.splitlines()
    i = 0
    comments: list[str] = []
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if line.startswith("#"):
            comments.append(line)
            continue
        if not line:
            continue
        if i >= len(lines) or lines[i].strip() != "----":
            raise ValueError(f"line {i}: expected ---- after {line!r}")
        i += 1
        out: list[str] = []
        while i < len(lines) and lines[i].strip() != "":
            out.append(lines[i])
            i += 1
        blocks.append(("".join(c + "\n" for c in comments), line, "\n".join(out)))
        comments = []
    return blocks


class Env:
    def __init__(self) -> None:
        self.net: MemNetwork | None = None

    @property
    def n(self) -> MemNetwork:
        assert self.net is not None, "add-nodes first"
        return self.net

    def status(self) -> str:
        rows = []
        for i, node in sorted(self.n.nodes.items()):
            r = node.raft
            rows.append(
                f"{i}: {r.state.name} term={r.term} vote={r.vote} lead={r.lead} "
                f"commit={r.log.committed} applied={r.log.applied} last={r.log.last_index()}"
            )
        return "\n".join(rows)

    def run(self, line: str) -> str:
        cmd, *args = line.split()
        pos = [a for a in args if "=" not in a]
        kw = dict(a.split("=", 1) for a in args if "=" in a)
        if cmd == "add-nodes":
            ids = list(range(1, int(pos[0]) + 1))
            pre = kw.get("pre-vote", "true") == "true"
            cq = kw.get("check-quorum", "true") == "true"
            self.net = MemNetwork(ids, lambda i: Config(id=i, pre_vote=pre, check_quorum=cq))
            return self.status()
        n = self.n
        if cmd == "campaign":
            n.campaign(int(pos[0]))
        elif cmd == "propose":
            n.propose(int(pos[0]), pos[1].encode())
        elif cmd == "tick":
            count = int(pos[1]) if len(pos) > 1 else 1
            n.tick(int(pos[0]), count)
            n.stabilize()
        elif cmd == "tick-all":
            for _ in range(int(pos[0])):
                for i in list(n.nodes):
                    n.tick(i)
                n.stabilize()
        elif cmd == "isolate":
            n.isolate(int(pos[0]))
        elif cmd == "recover":
            n.recover()
        elif cmd == "stabilize":
            n.stabilize()
        elif cmd == "transfer-leader":
            n.nodes[int(pos[0])].transfer_leader(int(pos[1]))
            n.stabilize()
        elif cmd == "read-index":
            n.nodes[int(pos[0])].read_index(pos[1].encode())
            n.stabilize()
            return " ".join(
                f"{rs.request_ctx.decode()}@{rs.index}" for rs in n.read_states[int(pos[0])]
            )
        elif cmd == "compact":
            i = int(pos[0])
            st = n.storage[i]
            applied = n.nodes[i].raft.log.applied
            st.create_snapshot(applied, n.conf[i], b"snap")
            st.compact(applied)
            return f"snapshot at {applied}, first index {st.first_index()}"
        elif cmd == "add-node":
            new = int(pos[0])
            n.add(new, ConfState(voters=tuple(sorted(n.conf[int(pos[1])].voters))))
            n.nodes[int(pos[1])].propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, new))
            n.stabilize()
        elif cmd == "remove-node":
            n.nodes[int(pos[1])].propose_conf_change(
                ConfChange(ConfChangeType.REMOVE_NODE, int(pos[0]))
            )
            n.stabilize()
        elif cmd == "raft-log":
            log = n.nodes[int(pos[0])].raft.log
            rows = []
            for e in log.slice(log.first_index(), log.last_index() + 1):
                if e.type == EntryType.CONF_CHANGE:
                    cc = decode_conf_change(e.data)
                    rows.append(f"{e.index}/{e.term} conf {cc.type.name} {cc.node_id}")
                else:
                    rows.append(f"{e.index}/{e.term} data {e.data.decode()!r}")
            return "\n".join(rows) or "(empty)"
        elif cmd == "applied":
            return " ".join(d.decode() for d in n.applied[int(pos[0])]) or "(none)"
        elif cmd == "leader":
            lead = n.leader()
            return (
                f"leader {lead}"
                if lead and n.nodes[lead].raft.state == StateType.LEADER
                else "none"
            )
        elif cmd != "status":
            raise ValueError(f"unknown command {cmd!r}")
        return self.status()


@pytest.mark.parametrize("path", sorted(DATA.glob("*.txt")), ids=lambda p: p.stem)
def test_scenario(path: Path) -> None:
    env = Env()
    blocks = parse(path.read_text())
    got = [(note, cmd, env.run(cmd)) for note, cmd, _ in blocks]
    if REWRITE:
        path.write_text("\n\n".join(f"{n}{cmd}\n----\n{out}" for n, cmd, out in got) + "\n")
        return
    for (_, cmd, want), (_, _, out) in zip(blocks, got, strict=True):
        assert out == want, f"{path.name}: {cmd}"
