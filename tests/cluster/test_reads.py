"""What reads return on the minority side of a partition (`docs/guarantees.md`): a plain GET
answers from the member's local, possibly stale state; a quorum GET never returns the stale
value (it cannot reach a quorum, so it fails), and after healing the member catches up."""

from __future__ import annotations

from pathlib import Path

from corral.testing.nemesis import Nemesis, command_for, start_members
from corral.testing.servers import ServerProcess
from corral.testing.workload import converged, eventually, http_json

FAULT_ENV = {"CORRAL_FAULT_INJECTION": "1"}


def _state(member: ServerProcess) -> str:
    _, _, doc = http_json("GET", member.client_url + "/v2/stats/self")
    return str(doc["state"])


def _get(member: ServerProcess, quorum: bool, timeout: float = 5.0) -> tuple[int, object]:
    url = member.client_url + "/v2/keys/stale" + ("?quorum=true" if quorum else "")
    try:
        status, _, doc = http_json("GET", url, timeout=timeout)
    except OSError as e:  # a timeout: no answer at all
        return 0, repr(e)
    value = doc.get("node", {}).get("value") if isinstance(doc, dict) else None
    return status, value


def test_minority_member_serves_stale_plain_reads_but_no_stale_quorum_read(
    tmp_path: Path,
) -> None:
    env = {i: FAULT_ENV for i in range(3)}
    with start_members(command_for("corral"), tmp_path, env=env) as members:
        leader = eventually(
            lambda: next((m for m in members if _state(m) == "StateLeader"), None),
            what="a leader",
        )
        follower = next(m for m in members if m is not leader)
        status, _, _ = http_json("PUT", leader.client_url + "/v2/keys/stale", {"value": "old"})
        assert status in (200, 201)
        eventually(lambda: converged(members, "/"), what="old value everywhere")

        nem = Nemesis(members)
        nem.partition([members.index(follower)], one_way=False)
        try:
            status, _, _ = http_json(
                "PUT", leader.client_url + "/v2/keys/stale", {"value": "new"}, timeout=10
            )
            assert status == 200, "the majority side keeps accepting writes"
            assert _get(follower, quorum=False) == (200, "old")  # stale, as documented
            status, value = _get(follower, quorum=True, timeout=3.0)
            assert value != "old" and status != 200, (status, value)
        finally:
            nem.heal()
        assert nem.counts["partition-full"] == 1
        eventually(
            lambda: _get(follower, quorum=False) == (200, "new") or None,
            what="the healed member catches up",
        )
        assert _get(follower, quorum=True) == (200, "new")
