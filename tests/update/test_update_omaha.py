"""Omaha codec: every sample in both directions, update_engine's acceptance rules, hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.update import omaha
from corral.update.errors import (
    EmptyResponseError,
    OmahaError,
    ResponseInvalidError,
    VersionError,
    XmlParseError,
)
from corral.update.version import is_semver, parse_version

from .conftest import SAMPLES

REQUESTS = sorted(p.name for p in SAMPLES.glob("*request*.xml"))
RESPONSES = sorted(
    p.name for p in SAMPLES.glob("*response*.xml") if "MALFORMED" not in p.name
)


def _sample(name: str) -> bytes:
    data = (SAMPLES / name).read_bytes()
    # Nebraska's Go templates: fill appid, track, machineid.
    return data.replace(b"%s", b"e96281a6-d1af-4bde-9a0a-97b76e56dc57", 1).replace(
        b"%s", b"stable", 1).replace(b"%s", b"m1")


def test_the_samples_are_all_there() -> None:
    assert len(REQUESTS) >= 18 and len(RESPONSES) >= 20


@pytest.mark.parametrize("name", [n for n in REQUESTS if "big" not in n])
def test_request_samples_round_trip(name: str) -> None:
    parsed = omaha.parse_request(_sample(name))
    assert parsed.apps
    again = omaha.parse_request(omaha.encode_request(parsed))
    assert again == parsed


@pytest.mark.parametrize("name", [n for n in REQUESTS if n.startswith("derived_ue_")])
def test_update_engine_requests_are_written_byte_for_byte(name: str) -> None:
    data = _sample(name)
    assert omaha.encode_request(omaha.parse_request(data)) == data


@pytest.mark.parametrize("name", RESPONSES)
def test_response_samples_round_trip(name: str) -> None:
    parsed = omaha.parse_response(_sample(name))
    assert omaha.parse_response(omaha.encode_response(parsed)) == parsed


@pytest.mark.parametrize("name", [n for n in RESPONSES if n.startswith("derived_nebraska")])
def test_nebraska_shaped_responses_are_written_byte_for_byte(name: str) -> None:
    data = _sample(name)
    assert omaha.encode_response(omaha.parse_response(data)) == data


def test_update_engine_request_fields() -> None:
    req = omaha.parse_request(_sample("derived_ue_updatecheck_after_update_request.xml"))
    app = req.apps[0]
    assert req.install_source == "scheduler" and req.version == "update_engine-0.4.10"
    assert app.ping == omaha.Ping("1") and app.update_check == omaha.UpdateCheck()
    assert app.events == (omaha.Event(3, 2, None, "3493.1.0"),)
    assert app.machine_id == "8b2f6e0d4c9a4e6f9b1d3a5c7e9f1a2b"
    rollback = omaha.parse_request(
        _sample("derived_ue_updatecheck_rollback_detected_request.xml"))
    assert rollback.apps[0].events[0].masked_error_code == omaha.ErrorCode.ROLLBACK


def test_google_event_request_keeps_all_three_events() -> None:
    req = omaha.parse_request(_sample("google-omaha_doc_event_request.xml"))
    events = req.apps[0].events
    assert [(e.event_type, e.event_result) for e in events] == [(9, 1), (5, 1), (2, 4)]
    assert events[2].error_code == -2147219440


@pytest.mark.parametrize(
    ("raw", "masked"),
    [(268435465, 9), (268435496, 40), (44, 44), (0x40000000 | 0x10000000 | 10, 10)],
)
def test_error_codes_are_masked(raw: int, masked: int) -> None:
    assert omaha.mask_error_code(raw) == masked


def test_app_ids_compare_without_braces_or_case() -> None:
    ids = ["{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}", "e96281a6-d1af-4bde-9a0a-97b76e56dc57",
           " {e96281a6-d1af-4bde-9a0a-97b76e56dc57} "]
    assert {omaha.normalize_app_id(i) for i in ids} == {"e96281a6-d1af-4bde-9a0a-97b76e56dc57"}


# update_engine's own unit tests: sample → outcome.
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("update_engine_unittest_noupdate_response.xml", "noupdate"),
        ("update_engine_unittest_no_elapsed_seconds_response.xml", "noupdate"),
        ("update_engine_unittest_bad_elapsed_seconds_response.xml", "noupdate"),
        ("nebraska_updater_test_noupdate_response.xml", "noupdate"),
        ("google-omaha_doc_updatecheck_response_noupdate.xml", "noupdate"),
        ("update_engine_unittest_missing_status_response.xml", 34),
        ("update_engine_unittest_invalid_status_response.xml", 34),
        ("update_engine_unittest_missing_updatecheck_response.xml", 34),
        ("nebraska_updater_test_error_response.xml", 34),
        ("nebraska_updater_test_no_updatecheck_response.xml", 34),
        ("derived_nebraska_policy_hold_response.xml", 34),
        ("google-omaha_doc_updatecheck_response_update.xml", "noupdate"),
        ("update_engine_unittest_invalid_xml_response.txt", 31),
        ("go-omaha_fixtures_ue_no-update_response_MALFORMED.xml", 31),
        ("update_engine_unittest_empty_response.txt", 30),
    ],
)
def test_update_engine_acceptance_rules(name: str, expected: str | int) -> None:
    data = (SAMPLES / name).read_bytes()
    if expected == "noupdate":
        assert isinstance(omaha.interpret_update_check(data), omaha.NoUpdate)
    else:
        with pytest.raises(OmahaError) as info:
            omaha.interpret_update_check(data)
        assert info.value.code == expected


@pytest.mark.parametrize(
    ("name", "url", "size", "sha256"),
    [
        ("update_engine_unittest_valid_update_response.xml", "http://code/base/file.signed",
         123, "HASH1234="),
        ("update_engine_unittest_missing_optional_fields_response.xml",
         "http://missing/field/test/f", 587, "lkq34j5345"),
        ("update_engine_unittest_concat_url_slash_response.xml",
         "http://concat/url/slash/test/f", 587, "lkq34j5345"),
        ("derived_nebraska_update_response.xml",
         "https://update.release.flatcar-linux.net/amd64-usr/2191.5.0/"
         "flatcar_production_update.gz", 465881871,
         "LIkAKVZY2EJFiwTmltiJZLFLA5xT/FodbjVgqkyF/y8="),
        ("go-omaha_fixtures_ue_update_response.xml", "http://kam:8080/static/update.gz",
         67546213, "0VAlQW3RE99SGtSB5R4m08antAHO8XDoBMKDyxQT/Mg="),
    ],
)
def test_offers(name: str, url: str, size: int, sha256: str) -> None:
    offer = omaha.interpret_update_check((SAMPLES / name).read_bytes())
    assert isinstance(offer, omaha.UpdateOffer)
    assert (offer.urls[0], offer.size, offer.sha256) == (url, size, sha256)


def test_nebraska_offer_disables_payload_backoff() -> None:
    offer = omaha.interpret_update_check(_sample("derived_nebraska_update_response.xml"))
    assert isinstance(offer, omaha.UpdateOffer)
    assert offer.version == "2191.5.0" and offer.disable_payload_backoff


def test_ok_without_sha256_is_invalid() -> None:
    data = _sample("update_engine_unittest_valid_update_response.xml").replace(
        b' sha256="HASH1234="', b"")
    with pytest.raises(ResponseInvalidError):
        omaha.interpret_update_check(data)


def test_poll_interval_is_read() -> None:
    data = _sample("update_engine_unittest_noupdate_response.xml").replace(
        b'status="noupdate"', b'status="noupdate" PollInterval="120"')
    assert omaha.interpret_update_check(data) == omaha.NoUpdate(120)


# ------------------------------------------------------------------ hostile input

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<request protocol="3.0"><app appid="&lol3;"/></request>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<request protocol="3.0"><app appid="&x;"/></request>"""


@pytest.mark.parametrize("body", [BOMB, XXE], ids=["billion-laughs", "external-entity"])
def test_entity_tricks_are_refused(body: bytes) -> None:
    with pytest.raises(XmlParseError):
        omaha.parse_request(body)
    with pytest.raises(XmlParseError):
        omaha.parse_response(body.replace(b"request", b"response"))


def test_oversized_bodies_are_refused_before_parsing() -> None:
    big = (SAMPLES / "nebraska_test_big_omaha_request_TEMPLATE.xml").read_bytes()
    assert len(big) > omaha.MAX_REQUEST_BYTES
    with pytest.raises(XmlParseError, match="limit"):
        omaha.parse_request(big)
    huge = b'<response protocol="3.0">' + b" " * omaha.MAX_RESPONSE_BYTES + b"</response>"
    with pytest.raises(XmlParseError, match="limit"):
        omaha.interpret_update_check(huge)


@pytest.mark.parametrize(
    "body",
    [
        b'<request protocol="2.0"><app appid="x"/></request>',
        b'<request><app appid="x"/></request>',
        b'<other protocol="3.0"/>',
        b'<request protocol="3.0"><app/></request>',
        b'<request protocol="3.0"><app appid="x"><event eventtype="three"/></app></request>',
        b"\xff\xfe<request",
        b"<request protocol='3.0'>",
    ],
)
def test_bad_requests_raise_codec_errors(body: bytes) -> None:
    with pytest.raises(XmlParseError):
        omaha.parse_request(body)


def test_empty_request_is_an_empty_error() -> None:
    with pytest.raises(EmptyResponseError):
        omaha.parse_request(b"  \n")


def test_unknown_elements_and_attributes_are_tolerated() -> None:
    body = (b'<request protocol="3.0" future="1"><hw sse2="1"/><app appid="a" x="y">'
            b'<newthing/><ping active="1"/><updatecheck/></app><extra/></request>')
    req = omaha.parse_request(body)
    assert req.apps[0].ping == omaha.Ping("1") and req.apps[0].update_check is not None


text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), include_characters="\t\n"),
    max_size=12,
)


@settings(max_examples=40)
@given(
    app_id=text.filter(lambda s: s.strip() != ""),
    version=st.none() | text,
    machine=st.none() | text,
    events=st.lists(
        st.builds(omaha.Event, st.integers(0, 900), st.integers(0, 10),
                  st.none() | st.integers(-(2**31), 2**31 - 1), st.none() | text),
        max_size=3,
    ),
    ping=st.booleans(),
    check=st.booleans(),
)
def test_any_request_round_trips(app_id: str, version: str | None, machine: str | None,
                                 events: list[omaha.Event], ping: bool, check: bool) -> None:
    req = omaha.Request(apps=(omaha.AppRequest(
        app_id=app_id, version=version, machine_id=machine, events=tuple(events),
        ping=omaha.Ping("1") if ping else None,
        update_check=omaha.UpdateCheck() if check else None),), os=omaha.Os())
    assert omaha.parse_request(omaha.encode_request(req)) == req


# ------------------------------------------------------------------ versions


def test_semver_ordering() -> None:
    v = parse_version
    assert v("2247.99.0") > v("2247.2.0")
    assert v("1.0.0-alpha") < v("1.0.0-alpha.1") < v("1.0.0-alpha.beta") < v("1.0.0-beta")
    assert v("1.0.0-beta.2") < v("1.0.0-beta.11") < v("1.0.0-rc.1") < v("1.0.0")
    assert v("1.0.0+build.5") == v("1.0.0")
    assert str(v("1.2.3-rc.1+b")) == "1.2.3-rc.1+b"


@pytest.mark.parametrize("bad", ["ForcedUpdate", "1.2", "1.2.3.4", "01.2.3", "1.2.3-01", ""])
def test_non_semver_is_refused(bad: str) -> None:
    assert not is_semver(bad)
    with pytest.raises(VersionError):
        parse_version(bad)
