"""fleet's unit model: go-systemd lexer quirks, canonical text, SHA-1 vectors, names."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.fleet.errors import UnitFileError, UnitNameError
from corral.fleet.unitfile import (
    UnitFile,
    UnitNameInfo,
    UnitOption,
    deserialize,
    mangle_name,
    serialize,
    short_hash,
    validate_name,
)

HELLO = (
    "[Unit]\nDescription=Hello World\n\n[Service]\n"
    'ExecStart=/bin/bash -c "while true; do echo \\"Hello, world\\"; sleep 1; done"\n'
)


@pytest.mark.parametrize(
    ("text", "digest"),
    [
        ("", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        ("[Unit]\nDescription=some description\n", "a0f275d46bc6ee0eca06be7c339913c07d99c0c7"),
        ("[Service]\nExecStart=/bin/sleep 100\n", "1c6fb6f3684bafb0c173d8b8b957ceff031180c1"),
        (HELLO, "e55c0aeb44ba0b68004ceb8a200e685194448b45"),
    ],
)
def test_hash_vectors(text: str, digest: str) -> None:
    u = UnitFile.parse(text)
    assert u.hash_hex == digest
    assert u.hash == bytes.fromhex(digest)
    assert u.text == text


def test_short_hash() -> None:
    assert short_hash(UnitFile.parse("[Service]\nExecStart=/bin/sleep 100\n").hash_hex) == "1c6fb6f"


def test_canonical_text_drops_comments_and_spacing() -> None:
    raw = "# header\n\n[Unit]\n  Description = Foo  \n; c\n\n\n[Service]\nExecStart=/bin/true\n"
    u = UnitFile.parse(raw)
    assert u.text == "[Unit]\nDescription=Foo\n\n[Service]\nExecStart=/bin/true\n"
    # The hash is of the canonical text, so formatting differences do not matter.
    assert u.hash == UnitFile.parse(u.text).hash
    assert u.hash == hashlib.sha1(u.text.encode()).digest()


def test_deserialize_fleet_vector() -> None:
    raw = (
        "\nThis=Ignored\n[Unit]\n;ignore this guy\nDescription = Foo\n\n[Service]\n"
        'ExecStart=echo "ping";\nExecStop=echo "pong"\n# ignore me, too\nExecStop=echo post\n\n'
        "[X-Fleet]\nMachineMetadata=foo=bar\nMachineMetadata=baz=qux\n"
    )
    u = UnitFile.parse(raw)
    assert u.contents == {
        "Unit": {"Description": ("Foo",)},
        "Service": {"ExecStart": ('echo "ping";',), "ExecStop": ('echo "pong"', "echo post")},
        "X-Fleet": {"MachineMetadata": ("foo=bar", "baz=qux")},
    }


def test_garbage_before_sections_and_odd_keys() -> None:
    raw = "\n>>>>>>>>>>>>>\n[Service]\nExecStart=jim\n<<<<<<<<<<<=bar\n"
    assert UnitFile.parse(raw).contents == {
        "Service": {"ExecStart": ("jim",), "<<<<<<<<<<<": ("bar",)}
    }


def test_continuations_keep_backslash_and_newline() -> None:
    raw = (
        '\n[Service]\nExecStart=echo \\\n  "pi\\\n  ng"\nExecStop=\\\necho "po\\\nng"\n'
        "# comments within continuation should not be ignored\n"
        "ExecStopPre=echo\\\n#pang\nExecStopPost=echo\\\n#peng\\\npung\n"
    )
    assert UnitFile.parse(raw).contents["Service"] == {
        "ExecStart": ('echo \\\n  "pi\\\n  ng"',),
        "ExecStop": ('\\\necho "po\\\nng"',),
        "ExecStopPre": ("echo\\\n#pang",),
        "ExecStopPost": ("echo\\\n#peng\\\npung",),
    }


def test_continuation_ended_by_blank_line_keeps_trailing_newline() -> None:
    u = UnitFile.parse("[Service]\nA=x\\\n\nB=y\n")
    assert u.options == (UnitOption("Service", "A", "x\\\n"), UnitOption("Service", "B", "y"))


def test_comment_continuation_swallows_next_line() -> None:
    u = UnitFile.parse("[Unit]\n# comment \\\nDescription=hidden\nAfter=x\n")
    assert u.options == (UnitOption("Unit", "After", "x"),)


def test_duplicate_sections_merge_in_first_seen_order() -> None:
    u = UnitFile.parse("[B]\nx=1\n[A]\ny=2\n[B]\nz=3\n")
    assert u.text == "[B]\nx=1\nz=3\n\n[A]\ny=2\n"


def test_empty_value_and_crlf() -> None:
    u = UnitFile.parse("[Service]\r\nEnvironment=\r\nExecStart=/bin/true\r\n")
    assert u.options == (
        UnitOption("Service", "Environment", ""),
        UnitOption("Service", "ExecStart", "/bin/true"),
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("\n[Unit]\n\n[Service]\n<<<<<<<<<<<<<<<<\n", "unexpected newline"),
        ("\n[Unit]\nnonsense upon stilts\n", "unexpected newline"),
        ("[Unit\nDescription=x\n", "unable to find end of section"),
        ("[Unit] trailing\n", "found garbage after section name"),
        ("[Unit]\nDescription", "unexpected end of file"),
        ("[Unit]\nDescription=" + "x" * 2048 + "\n", "line too long (max 2048 bytes)"),
    ],
)
def test_bad_units_fail_with_clear_errors(raw: str, message: str) -> None:
    with pytest.raises(UnitFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        UnitFile.parse(raw)


def test_line_limit_is_in_bytes() -> None:
    ok = "[Unit]\nDescription=" + "x" * (2047 - len("Description=")) + "\n"
    UnitFile.parse(ok)
    with pytest.raises(UnitFileError):
        UnitFile.parse("[Unit]\nDescription=" + "é" * 1020 + "\n")


def test_invalid_utf8_is_an_error() -> None:
    with pytest.raises(UnitFileError, match="UTF-8"):
        UnitFile.parse(b"[Unit]\nDescription=\xff\n")


def test_description() -> None:
    assert UnitFile.parse("[Unit]\nDescription = Foo\n").description == "Foo"
    assert UnitFile.parse("[Unit]\n\n[Service]\nExecStart=x\n").description == ""


_key = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij-_", min_size=1, max_size=10)
_value = st.text(
    alphabet=st.characters(blacklist_characters="\\\r\n", blacklist_categories=["Cs"]),
    max_size=30,
).map(str.strip)
_section = st.sampled_from(["Unit", "Service", "X-Fleet", "Install"])


@given(st.lists(st.tuples(_section, _key, _value), max_size=12))
def test_serialize_then_parse_is_identity(opts: list[tuple[str, str, str]]) -> None:
    options = [UnitOption(s, k, v) for s, k, v in opts]
    text = serialize(options)
    reparsed = deserialize(text)
    grouped = sorted(options, key=lambda o: [o.section for o in options].index(o.section))
    assert reparsed == grouped
    assert serialize(reparsed) == text


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "unit name cannot be empty"),
        ("a" * 250 + ".service", "unit name exceeds maximum length (256)"),
        ("foo", 'unit name must contain "."'),
        ("foo.", 'unit name cannot end in "."'),
        ("foo.bar", 'invalid unit type: "bar"'),
        ("foo@1.mount", 'invalid unit type for template: "mount"'),
        ("fo%o.service", "invalid character '%' in unit name"),
        ("@foo.service", 'unit name cannot start in "@"'),
    ],
)
def test_validate_name_messages(name: str, message: str) -> None:
    with pytest.raises(UnitNameError) as exc:
        validate_name(name)
    assert str(exc.value) == message


@pytest.mark.parametrize(
    "name", ["foo.service", "foo@.service", "foo@1.socket", "a:b\\x2d_c.d-e.timer", "x.busname"]
)
def test_validate_name_accepts(name: str) -> None:
    validate_name(name)


@pytest.mark.parametrize(
    ("full", "name", "prefix", "template", "instance", "is_inst", "is_tmpl"),
    [
        ("foo.service", "foo", "foo", "", "", False, False),
        ("foo@.service", "foo@", "foo", "foo@.service", "", False, True),
        ("foo@bar.service", "foo@bar", "foo", "foo@.service", "bar", True, False),
        ("foo@bar@baz.service", "foo@bar@baz", "foo", "foo@.service", "bar@baz", True, False),
        ("foo.1@.service", "foo.1@", "foo.1", "foo.1@.service", "", False, True),
        ("foo.1@2.service", "foo.1@2", "foo.1", "foo.1@.service", "2", True, False),
        ("ssh@.socket", "ssh@", "ssh", "ssh@.socket", "", False, True),
        ("ssh@1.socket", "ssh@1", "ssh", "ssh@.socket", "1", True, False),
    ],
)
def test_unit_name_info(
    full: str, name: str, prefix: str, template: str, instance: str, is_inst: bool, is_tmpl: bool
) -> None:
    info = UnitNameInfo.of(full)
    assert info is not None
    assert (info.name, info.prefix, info.template, info.instance) == (
        name,
        prefix,
        template,
        instance,
    )
    assert (info.is_instance, info.is_template) == (is_inst, is_tmpl)


def test_unit_name_info_needs_a_dot() -> None:
    assert UnitNameInfo.of("foo") is None
    assert UnitNameInfo.of("bar@baz") is None


@pytest.mark.parametrize(
    ("arg", "name"),
    [
        ("foo", "foo.service"),
        ("foo.1", "foo.1.service"),
        ("dir/bar.socket", "bar.socket"),
        ("foo.service", "foo.service"),
        ("foo.link", "foo.link.service"),
        ("x/y/z.timer", "z.timer"),
    ],
)
def test_fleetctl_name_mangling(arg: str, name: str) -> None:
    assert mangle_name(arg) == name
