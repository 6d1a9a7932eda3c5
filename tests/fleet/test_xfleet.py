"""[X-Fleet] parsing, specifiers, Go globs and fleet's validation strings."""

from __future__ import annotations

import pytest

from corral.fleet.errors import RequirementsError, UnitFileError
from corral.fleet.unitfile import UnitFile
from corral.fleet.xfleet import (
    glob_match,
    is_truthy,
    parse_multivalue,
    requirements,
    unrecognized_keys,
    validate_options,
)


def xf(body: str) -> UnitFile:
    return UnitFile.parse("[Service]\nExecStart=/bin/true\n\n[X-Fleet]\n" + body)


@pytest.mark.parametrize(
    ("line", "values"),
    [
        ('"bar" "ping" "pong"', ["bar", "ping", "pong"]),
        ('"bar"', ["bar"]),
        ("", [""]),
        ('""', [""]),
        ('"bar', ['"bar']),
        ('bar"', ['bar"']),
        ('foo\\"bar', ['foo\\"bar']),
        ('"bar" "', ["bar", ""]),
        ('"foo\\"bar"', ["foo\\bar"]),
        ('"a b"', ["a b"]),
        ("a b", ["a b"]),
    ],
)
def test_parse_multivalue(line: str, values: list[str]) -> None:
    assert parse_multivalue(line) == values


def test_specifiers_in_order_and_only_four() -> None:
    u = xf("Conflicts=%n %N %p %i %m %%\nMachineOf=%p-db@%i.service\n")
    req = requirements(u, "web@blue.service")
    assert req.conflicts == ("web@blue.service", "web@blue", "web", "blue", "%m", "%%")
    assert req.peers == ("web-db@blue.service",)
    # Validation (no name) sees the text unexpanded.
    assert requirements(u, None).peers == ("%p-db@%i.service",)


def test_machine_id_first_value_and_fallbacks() -> None:
    assert requirements(xf("MachineID=abc\nMachineID=def\n"), "a.service").machine_id == "abc"
    assert requirements(xf("X-ConditionMachineID=old\n"), "a.service").machine_id == "old"
    assert requirements(xf("X-ConditionMachineBootID=boot\n"), "a.service").machine_id == "boot"
    both = xf("X-ConditionMachineID=old\nMachineID=new\n")
    assert requirements(both, "a.service").machine_id == "new"
    assert requirements(xf("Global=true\n"), "a.service").machine_id is None


def test_metadata_or_within_key_and_silent_ignores() -> None:
    u = xf(
        'MachineMetadata="region=us" "region=eu"\nMachineMetadata=disk=ssd\n'
        "X-ConditionMachineMetadata=role=web\nMachineMetadata=bad\nMachineMetadata=a=b=c\n"
        "MachineMetadata==x\nMachineMetadata=y=\n"
    )
    req = requirements(u, "a.service")
    assert req.metadata_map == {
        "region": frozenset({"us", "eu"}),
        "disk": frozenset({"ssd"}),
        "role": frozenset({"web"}),
    }
    assert req.metadata_ok({"region": "eu", "disk": "ssd", "role": "web", "x": "1"})
    assert not req.metadata_ok({"region": "asia", "disk": "ssd", "role": "web"})
    assert not req.metadata_ok({"region": "us", "disk": "ssd"})  # missing key fails
    assert requirements(xf("Global=1\n"), "a.service").metadata_ok({})


def test_conflicts_split_on_whitespace_replaces_not() -> None:
    req = requirements(xf("Conflicts=a*.service b.service\nX-Conflicts=c.service\n"), "z.service")
    assert req.conflicts == ("c.service", "a*.service", "b.service")
    req = requirements(xf("Replaces=a.service b.service\n"), "z.service")
    assert req.replaces == ("a.service b.service",)


def test_global_last_value_wins_and_truthiness() -> None:
    assert requirements(xf("Global=true\nGlobal=false\n"), "a.service").is_global is False
    assert requirements(xf("Global=no\nGlobal=ON\n"), "a.service").is_global is True
    assert [is_truthy(v) for v in ["true", "YES", "1", "on", "T", "y", "2", ""]] == [
        True,
        True,
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_unrecognized_keys_are_case_sensitive() -> None:
    u = xf("global=true\nMachineId=x\nX-Global=1\nGlobal=1\nSpread=true\n")
    assert unrecognized_keys(u) == ["global", "MachineId", "X-Global"]
    # Unknown keys are ignored, never fatal.
    assert requirements(u, "a.service").is_global is True


@pytest.mark.parametrize(
    ("pattern", "name", "hit"),
    [
        ("foo*", "foo@1.service", True),
        ("*.service", "a.service", True),
        ("*", "a/b", False),
        ("?.service", "a.service", True),
        ("[a-c].service", "b.service", True),
        ("[^a-c].service", "b.service", False),
        ("[!a].service", "!.service", True),  # Go negates with ^ only
        ("\\*.service", "*.service", True),
        ("[", "[", False),  # malformed: never matches
        ("[]a]", "a", False),
        ("web@*.service", "web@.service", True),
        ("a.service", "a.service", True),
        ("a.service", "b.service", False),
    ],
)
def test_go_path_match(pattern: str, name: str, hit: bool) -> None:
    assert glob_match(pattern, name) is hit


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "MachineOf=db.service\nConflicts=db*\n",
            'unresolvable requirements: peer "db.service" matches conflict "db*"',
        ),
        (
            "MachineOf=db.service\nReplaces=d?.service\n",
            'unresolvable requirements: peer "db.service" matches replace "d?.service"',
        ),
        ("MachineID=abc\nMachineOf=db.service\n", "MachineID cannot be used with Peers"),
        ("MachineID=abc\nConflicts=x*\n", "MachineID cannot be used with Conflicts"),
        ("MachineID=abc\nGlobal=true\n", "MachineID cannot be used with Global"),
        ("MachineID=abc\nReplaces=x.service\n", "MachineID cannot be used with Replaces"),
        ("Global=true\nMachineOf=db.service\n", "Global cannot be used with Peers"),
        ("Global=true\nReplaces=x.service\n", "Global cannot be used with Replaces"),
        ("Conflicts=x*\nReplaces=y.service\n", "Conflicts cannot be used with Replaces"),
    ],
)
def test_validation_strings(body: str, message: str) -> None:
    with pytest.raises(RequirementsError) as exc:
        validate_options(xf(body))
    assert str(exc.value) == message


@pytest.mark.parametrize(
    "body",
    [
        "Global=true\nConflicts=x*\n",
        "Global=true\nMachineMetadata=a=b\n",
        "MachineID=abc\nMachineMetadata=a=b\n",
        "MachineOf=a.service\nConflicts=b*\n",
        "Global=false\nMachineOf=db.service\n",  # not global after all
        "Replaces=a.service\n",
    ],
)
def test_validation_allows(body: str) -> None:
    validate_options(xf(body))


def test_validation_rechecks_line_length() -> None:
    from corral.fleet.unitfile import UnitOption

    u = UnitFile.from_options([UnitOption("Service", "ExecStart", "x" * 3000)])
    with pytest.raises(UnitFileError, match="line too long"):
        validate_options(u)


def test_spread_hint() -> None:
    u = xf("Spread=true\n")
    assert requirements(u, "web@3.service").spread == ("web@*.service",)
    assert requirements(u, "plain.service").spread == ()  # truthy only means "my siblings"
    assert requirements(xf("Spread=db@*.service cache*\n"), "a.service").spread == (
        "db@*.service",
        "cache*",
    )
    assert requirements(xf("Spread=false\n"), "web@1.service").spread == ()
