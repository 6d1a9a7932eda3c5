"""Golden tests for fleet's registry layout and value formats."""

from __future__ import annotations

from typing import Any

import pytest

from corral.fleet.errors import RegistryFormatError
from corral.fleet.registry import (
    JobState,
    Keys,
    LeaseInfo,
    MachineState,
    UnitStateRecord,
    current_state,
    decode_job_object,
    decode_lease,
    decode_machine_state,
    decode_machines,
    decode_states,
    decode_unit_blob,
    decode_unit_state,
    decode_units,
    encode_job_object,
    encode_lease,
    encode_machine_state,
    encode_unit_blob,
    encode_unit_state,
    go_json,
)
from corral.fleet.unitfile import UnitFile

SLEEP = UnitFile.parse("[Service]\nExecStart=/bin/sleep 100\n")
SLEEP_HASH = "1c6fb6f3684bafb0c173d8b8b957ceff031180c1"


def test_key_paths_default_prefix() -> None:
    k = Keys()
    assert k.machines == "/_coreos.com/fleet/machines"
    assert k.machine_object("m1") == "/_coreos.com/fleet/machines/m1/object"
    assert k.machine_metadata("m1", "region") == "/_coreos.com/fleet/machines/m1/metadata/region"
    assert k.jobs == "/_coreos.com/fleet/job"
    assert k.job_object("a.service") == "/_coreos.com/fleet/job/a.service/object"
    assert k.job_target_state("a.service") == "/_coreos.com/fleet/job/a.service/target-state"
    assert k.job_target("a.service") == "/_coreos.com/fleet/job/a.service/target"
    assert k.job_heartbeat("a.service") == "/_coreos.com/fleet/job/a.service/job-state"
    assert k.unit_blob(SLEEP_HASH) == f"/_coreos.com/fleet/unit/{SLEEP_HASH}"
    assert k.unit_state("a.service", "m1") == "/_coreos.com/fleet/states/a.service/m1"
    assert k.legacy_state("a.service") == "/_coreos.com/fleet/state/a.service"
    assert k.engine_lease == "/_coreos.com/fleet/lease/engine-leader"
    assert k.engine_version == "/_coreos.com/fleet/engine/version"


@pytest.mark.parametrize("prefix", ["/corral/fleet/", "/corral/fleet", "corral/fleet/"])
def test_key_paths_custom_prefix(prefix: str) -> None:
    assert Keys(prefix).job_target("a.service") == "/corral/fleet/job/a.service/target"


def test_job_object_golden() -> None:
    value = encode_job_object("hello.service", SLEEP.hash)
    ints = ",".join(str(b) for b in bytes.fromhex(SLEEP_HASH))
    assert value == f'{{"Name":"hello.service","UnitHash":[{ints}]}}'
    assert value.startswith('{"Name":"hello.service","UnitHash":[28,111,182,243,')
    assert decode_job_object(value) == ("hello.service", SLEEP.hash)


def test_unit_blob_golden() -> None:
    assert encode_unit_blob(SLEEP) == '{"Raw":"[Service]\\nExecStart=/bin/sleep 100\\n"}'
    assert decode_unit_blob(encode_unit_blob(SLEEP)).hash == SLEEP.hash


def test_go_json_escapes_like_go() -> None:
    assert (
        go_json({"Raw": "a<b>&c\x08\t\u2028"})
        == '{"Raw":"a\\u003cb\\u003e\\u0026c\\u0008\\t\\u2028"}'
    )
    assert go_json([1, True, None, "é"]) == '[1,true,null,"é"]'


def test_machine_state_golden_and_overlay() -> None:
    ms = MachineState("c31e44e1f7f5420289a0b7f3bd65e3a9", "10.0.0.1", {"z": "1", "a": "2"})
    value = encode_machine_state(ms)
    assert value == (
        '{"ID":"c31e44e1f7f5420289a0b7f3bd65e3a9","PublicIP":"10.0.0.1",'
        '"Metadata":{"a":"2","z":"1"},"Capabilities":null,"Version":""}'
    )
    bare = encode_machine_state(MachineState("m"))
    assert bare == '{"ID":"m","PublicIP":"","Metadata":null,"Capabilities":null,"Version":""}'
    over = decode_machine_state(value, {"z": "", "b": "3"})
    assert dict(over.metadata) == {"a": "2", "b": "3"}
    assert ms.short_id == "c31e44e1"
    assert ms.match_id("c31e44e1") and ms.match_id(ms.id) and not ms.match_id("c31e44e")


def test_unit_state_golden() -> None:
    us = UnitStateRecord("loaded", "active", "running", "m1", SLEEP_HASH)
    value = encode_unit_state(us)
    assert value == (
        '{"loadState":"loaded","activeState":"active","subState":"running",'
        '"machineState":{"ID":"m1","PublicIP":"","Metadata":null,"Capabilities":null,'
        f'"Version":""}},"unitHash":"{SLEEP_HASH}"}}'
    )
    assert decode_unit_state(value) == us


def test_lease_golden_and_legacy() -> None:
    assert encode_lease("m1") == '{"MachineID":"m1","Version":1}'
    assert decode_lease('{"MachineID":"m1","Version":1}') == LeaseInfo("m1", 1)
    assert decode_lease("m0") == LeaseInfo("m0", 0)


@pytest.mark.parametrize("bad", ["", "{", "[]", '{"Name":"x"}', '{"Name":"x","UnitHash":[1,2]}'])
def test_bad_job_object_is_a_clear_error(bad: str) -> None:
    with pytest.raises(RegistryFormatError, match="job object"):
        decode_job_object(bad)


def _node(key: str, value: str | None = None, nodes: list[Any] | None = None) -> dict[str, Any]:
    if nodes is not None:
        return {"key": key, "dir": True, "nodes": nodes}
    return {"key": key, "value": value}


def test_decode_units_and_schedule() -> None:
    k = Keys()
    other = UnitFile.parse("[Service]\nExecStart=/bin/true\n")
    jobs = _node(
        k.jobs,
        nodes=[
            _node(
                k.job("b.service"),
                nodes=[
                    _node(k.job_object("b.service"), encode_job_object("b.service", other.hash)),
                    _node(k.job_target_state("b.service"), "launched"),
                    _node(k.job_target("b.service"), "m1"),
                    _node(k.job_heartbeat("b.service"), "m1"),
                ],
            ),
            _node(
                k.job("a.service"),
                nodes=[
                    _node(k.job_object("a.service"), encode_job_object("a.service", SLEEP.hash)),
                    _node(k.job_target_state("a.service"), "loaded"),
                ],
            ),
            _node(  # blob missing: skipped with a problem line
                k.job("c.service"),
                nodes=[
                    _node(k.job_object("c.service"), encode_job_object("c.service", b"\x00" * 20))
                ],
            ),
        ],
    )
    blobs = _node(
        k.unit_blobs,
        nodes=[
            _node(k.unit_blob(SLEEP.hash_hex), encode_unit_blob(SLEEP)),
            _node(k.unit_blob(other.hash_hex), encode_unit_blob(other)),
        ],
    )
    units, problems = decode_units(jobs, blobs)
    assert [(u.name, u.target_state, u.target, u.heartbeat) for u in units] == [
        ("a.service", JobState.LOADED, "", ""),
        ("b.service", JobState.LAUNCHED, "m1", "m1"),
    ]
    assert units[0].unit.hash == SLEEP.hash
    assert problems == ["No Unit found in Registry for Job(c.service)"]
    assert decode_units(None, None) == ([], [])


def test_decode_machines_skips_metadata_only_entries() -> None:
    k = Keys()
    tree = _node(
        k.machines,
        nodes=[
            _node(
                k.machine("m2"),
                nodes=[
                    _node(
                        k.machine_object("m2"),
                        encode_machine_state(MachineState("m2", "", {"r": "us"})),
                    ),
                    _node(
                        k.machine("m2") + "/metadata",
                        nodes=[_node(k.machine_metadata("m2", "r"), "eu")],
                    ),
                ],
            ),
            _node(k.machine("m3"), nodes=[_node(k.machine("m3") + "/metadata", nodes=[])]),
            _node(
                k.machine("m1"),
                nodes=[_node(k.machine_object("m1"), encode_machine_state(MachineState("m1")))],
            ),
        ],
    )
    ms = decode_machines(tree)
    assert [m.id for m in ms] == ["m1", "m2"]
    assert dict(ms[1].metadata) == {"r": "eu"}


def test_current_state_derivation() -> None:
    assert current_state("", "", []) is JobState.INACTIVE
    assert current_state("m1", "", ["m2"]) is JobState.INACTIVE  # no state from the target
    assert current_state("m1", "", ["m1"]) is JobState.LOADED
    assert current_state("m1", "m2", ["m1"]) is JobState.LOADED
    assert current_state("m1", "m1", ["m1"]) is JobState.LAUNCHED


def test_decode_states() -> None:
    k = Keys()
    us = UnitStateRecord("loaded", "active", "running", "m1", SLEEP_HASH)
    tree = _node(
        k.states,
        nodes=[
            _node(
                k.states + "/a.service",
                nodes=[
                    _node(k.unit_state("a.service", "m1"), encode_unit_state(us)),
                    _node(k.unit_state("a.service", "m2"), "not json"),
                ],
            )
        ],
    )
    assert decode_states(tree) == {("a.service", "m1"): us}


def test_job_state_parse() -> None:
    assert JobState.parse("launched") is JobState.LAUNCHED
    with pytest.raises(RegistryFormatError, match="invalid value 'running' for JobState"):
        JobState.parse("running")
