"""etcd's v2error table: codes, messages, HTTP statuses, body shape."""

from __future__ import annotations

import json

import pytest

from corral.kv import errors
from corral.kv.errors import V2Error, error_for

RAISED_BY_ETCD_34 = [100, 101, 102, 104, 105, 107, 108, 110, 201, 202, 203, 209, 210, 211, 212,
                     300, 401]  # fmt: skip


def test_every_code_of_the_table_has_a_class_and_message() -> None:
    assert sorted(errors.MESSAGES) == [100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110,
                                       200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210,
                                       211, 212, 300, 301, 400, 401, 402, 403, 404, 500]  # fmt: skip
    for code in errors.MESSAGES:
        err = error_for(code, "c", 7)
        assert type(err) is not V2Error and err.code == code
        assert err.message == errors.MESSAGES[code]
    assert set(RAISED_BY_ETCD_34) <= set(errors.MESSAGES)


@pytest.mark.parametrize(
    ("code", "status"),
    [(100, 404), (101, 412), (102, 403), (104, 400), (105, 412), (107, 400), (108, 403),
     (110, 401), (201, 400), (209, 400), (212, 400), (300, 500), (301, 500), (401, 400)],
)  # fmt: skip
def test_http_status_map(code: int, status: int) -> None:
    assert error_for(code).http_status == status


def test_body_field_order_and_empty_cause() -> None:
    err = error_for(101, "[two != one]", 21)
    assert json.dumps(err.to_json(), separators=(",", ":")) == (
        '{"errorCode":101,"message":"Compare failed","cause":"[two != one]","index":21}'
    )
    assert list(error_for(102, "", 8).to_json()) == ["errorCode", "message", "index"]
    assert errors.EventIndexCleared().message == (
        "The event in requested index is outdated and cleared"
    )
    assert errors.RefreshTTLRequired("No TTL value set").to_json()["message"] == (
        "A TTL must be provided on refresh"
    )


def test_hierarchy_and_equality() -> None:
    err = errors.KeyNotFound("/x", 3)
    assert isinstance(err, errors.KVError) and isinstance(err, V2Error)
    assert err == error_for(100, "/x", 3) and err != error_for(100, "/y", 3)
    assert issubclass(errors.FormatError, ValueError)
    assert "100: Key not found (/x) [3]" in str(err)
    with pytest.raises(ValueError, match="unknown v2 error code 999"):
        error_for(999)
