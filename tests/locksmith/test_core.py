"""The locksmith pure core: semaphore rules and JSON, CAS protocol, windows, strategies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.locksmith import (
    SEMAPHORE_KEY,
    ConfigError,
    CorruptSemaphore,
    DaemonSettings,
    DeadHolderReaper,
    HolderExists,
    HolderNotExist,
    Lock,
    Periodic,
    Semaphore,
    SemaphoreError,
    SemaphoreFull,
    SetMax,
    Strategy,
    Unlock,
    cas_step,
    parse_env_file,
    parse_strategy,
    semaphore_key,
)

# --- the value --------------------------------------------------------------------------------


def test_fresh_semaphore_json_is_locksmiths() -> None:
    assert Semaphore().to_json() == '{"semaphore":1,"max":1,"holders":null}'


def test_keys() -> None:
    assert semaphore_key() == SEMAPHORE_KEY == "coreos.com/updateengine/rebootlock/semaphore"
    assert semaphore_key("web tier/a") == (
        "coreos.com/updateengine/rebootlock/groups/web+tier%2Fa/semaphore"
    )


def test_lock_unlock_roundtrip_matches_locksmith() -> None:
    s = Semaphore().set_max(3)
    assert s.to_json() == '{"semaphore":3,"max":3,"holders":null}'
    s = s.lock("c").lock("a").lock("b")
    assert s.to_json() == '{"semaphore":0,"max":3,"holders":["a","b","c"]}'
    with pytest.raises(SemaphoreFull, match=r"^semaphore is at 0$"):
        s.lock("d")
    # capacity is checked before membership: a holder re-locking a full semaphore
    with pytest.raises(SemaphoreFull):
        s.lock("a")
    s = s.unlock("b").unlock("a").unlock("c")
    assert s.to_json() == '{"semaphore":3,"max":3,"holders":[]}'
    with pytest.raises(HolderNotExist, match=r"^holder does not exist$"):
        s.unlock("a")
    with pytest.raises(HolderExists, match=r"^holder exists$"):
        s.lock("a").lock("a")


def test_set_max_can_go_negative_and_keeps_holders() -> None:
    s = Semaphore().set_max(2).lock("a").lock("b").set_max(1)
    assert (s.semaphore, s.max, s.holders) == (-1, 1, ("a", "b"))
    with pytest.raises(SemaphoreFull, match="semaphore is at -1"):
        s.lock("c")


def test_decode_is_tolerant_like_go_but_rejects_garbage() -> None:
    assert Semaphore.from_json('{"semaphore":2,"max":2,"holders":[],"x":1}') == Semaphore(2, 2, ())
    assert Semaphore.from_json("{}") == Semaphore(0, 0, None)
    for bad in ("nope", "[]", '{"semaphore":"1"}', '{"holders":[1]}'):
        with pytest.raises(CorruptSemaphore):
            Semaphore.from_json(bad)


ops = st.lists(
    st.one_of(
        st.builds(Lock, st.sampled_from("abcdef")),
        st.builds(Unlock, st.sampled_from("abcdef")),
        st.builds(SetMax, st.integers(0, 4)),
    ),
    max_size=40,
)


@settings(max_examples=50)
@given(ops)
def test_invariants_under_any_operation_sequence(seq: list[Lock | Unlock | SetMax]) -> None:
    # semaphore + holders == max always; holders sorted and unique; a lock never takes the
    # holder count above max.
    s = Semaphore()
    for op in seq:
        try:
            w = cas_step(op, s.to_json(), 7)
        except SemaphoreError:
            continue
        assert w.prev_index == 7
        if isinstance(op, Lock):
            assert len(w.after.holder_list) <= w.after.max
        s = Semaphore.from_json(w.value)
        hs = s.holder_list
        assert list(hs) == sorted(set(hs))
        assert s.semaphore + len(hs) == s.max


# --- the CAS protocol on a model store, every interleaving ------------------------------------


class ModelStore:
    """An etcd key in memory: value + modifiedIndex, CAS on the index."""

    def __init__(self) -> None:
        self.value: str | None = None
        self.index = 0

    def write(self, prev_index: int | None, value: str) -> bool:
        if (prev_index is None and self.value is not None) or (
            prev_index is not None and prev_index != self.index
        ):
            return False
        self.index += 1
        self.value = value
        return True


@settings(max_examples=100)
@given(
    max_=st.integers(1, 3),
    schedule=st.lists(st.integers(0, 5), min_size=1, max_size=80),
)
def test_cas_races_never_double_grant(max_: int, schedule: list[int]) -> None:
    """Six lockers interleave GET and PUT in any order: never more than `max` holders."""
    store = ModelStore()
    store.write(None, Semaphore().set_max(max_).to_json())
    seen: dict[int, tuple[str | None, int]] = {}
    holding: set[str] = set()
    for who in schedule:
        name = f"m{who}"
        if who not in seen:  # GET
            seen[who] = (store.value, store.index)
            continue
        value, index = seen.pop(who)  # PUT based on what it saw
        op = Unlock(name) if name in holding else Lock(name)
        try:
            w = cas_step(op, value, index)
        except SemaphoreError:
            continue
        if store.write(w.prev_index, w.value):
            (holding.discard if isinstance(op, Unlock) else holding.add)(name)
        assert store.value is not None
        stored = Semaphore.from_json(store.value)
        assert set(stored.holder_list) == holding
        assert len(holding) <= max_


def test_cas_step_on_missing_key_creates_fresh() -> None:
    w = cas_step(Lock("a"), None, None)
    assert w.prev_index is None and w.before == Semaphore()
    assert w.value == '{"semaphore":0,"max":1,"holders":["a"]}'


# --- windows (locksmith's pkg/timeutil tables, PDT = UTC-7) -----------------------------------

PDT = timezone(timedelta(hours=-7), "PDT")


def _t(month: int, day: int, h: int, m: int, s: int) -> datetime:
    return datetime(2015, month, day, h, m, s, tzinfo=PDT)


@pytest.mark.parametrize(
    ("start", "length"),
    [
        ("25:00", "1h"),
        ("23:61", "1h"),
        ("14", "1h"),
        ("foo 14:00", "1h"),
        ("sat 14:00", "1j"),
        ("sat 14:00", "-1h"),
        ("sat 14:00 1234", "1h"),
        ("sat", "1h"),
        ("14:00", "24h"),
        ("mon 14:00", "168h"),
    ],
)
def test_bad_windows_are_rejected(start: str, length: str) -> None:
    with pytest.raises(ConfigError):
        Periodic.parse(start, length)


H, M, S = timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)


@pytest.mark.parametrize(
    ("start", "length", "now", "to_start"),
    [
        ("00:15", "10s", _t(5, 21, 0, 0, 0), 15 * M),
        ("00:00", "1h", _t(5, 21, 0, 0, 0), timedelta(0)),
        ("00:00", "1h", _t(5, 21, 0, 0, 1), -S),
        ("02:33", "10h", _t(5, 21, 12, 33, 0), -10 * H),
        ("02:33", "10h", _t(5, 21, 12, 33, 1), 13 * H + 59 * M + 59 * S),
        ("23:05", "11h", _t(5, 21, 9, 33, 1), -(10 * H + 28 * M + S)),
        ("Thu 00:15", "10s", _t(5, 21, 0, 0, 0), 15 * M),
        ("Thu 00:00", "1h", _t(5, 21, 0, 0, 0), timedelta(0)),
        ("Sun 00:00", "1h", _t(5, 17, 0, 0, 1), -S),
        ("Sun 02:33", "10h", _t(5, 17, 12, 33, 0), -10 * H),
        ("Sat 23:05", "11h", _t(5, 17, 9, 33, 1), -(10 * H + 28 * M + S)),
        ("Mon 9:00", "1h", _t(5, 30, 23, 0, 0), 34 * H),
        ("Sun 23:00", "4h", _t(6, 1, 1, 0, 0), -2 * H),
    ],
)
def test_duration_to_start_tables(
    start: str, length: str, now: datetime, to_start: timedelta
) -> None:
    p = Periodic.parse(start, length)
    assert p.duration_to_start(now) == to_start
    assert p.in_window(now) == (to_start <= timedelta(0))


def test_next_window_on_a_virtual_clock() -> None:
    p = Periodic.parse("wed 02:00", "30m")
    now = _t(5, 18, 12, 0, 0)  # a Monday
    w = p.next_window(now)
    assert (w.start, w.end) == (_t(5, 20, 2, 0, 0), _t(5, 20, 2, 30, 0))
    # step a virtual clock minute by minute through a week: inside exactly 31 minutes
    inside = 0
    t = now
    while t < now + timedelta(days=7):
        if p.in_window(t):
            inside += 1
            assert p.next_window(t).start <= t <= p.next_window(t).end
        else:
            assert p.next_window(t).start > t
        t += M
    assert inside == 31


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(0, 6),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 600),
)
def test_windows_properties(naive: datetime, dow: int, hh: int, mm: int, minutes: int) -> None:
    now = naive.replace(tzinfo=UTC)
    day = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"][dow]
    p = Periodic.parse(f"{day} {hh}:{mm:02d}", f"{minutes}m")
    w = p.next_window(now)
    assert w.end - w.start == timedelta(minutes=minutes)
    assert w.start.weekday() == (dow - 1) % 7 and (w.start.hour, w.start.minute) == (hh, mm)
    assert (now in w) == p.in_window(now)
    assert now <= w.end and w.start - now <= timedelta(days=7)


# --- strategies and settings ------------------------------------------------------------------


def test_strategies() -> None:
    assert parse_strategy("", kv_configured=False) == (Strategy.REBOOT, ())
    assert parse_strategy("etcd-lock", kv_configured=False) == (Strategy.ETCD_LOCK, ())
    assert parse_strategy("off", kv_configured=True) == (Strategy.OFF, ())
    s, warnings = parse_strategy("best-effort", kv_configured=True)
    assert s is Strategy.ETCD_LOCK and "deprecated" in warnings[0]
    assert parse_strategy("best-effort", kv_configured=False)[0] is Strategy.REBOOT
    with pytest.raises(ConfigError, match="unknown strategy: sometimes"):
        parse_strategy("sometimes", kv_configured=True)


def test_daemon_settings_from_env() -> None:
    d = DaemonSettings.from_env(
        {
            "REBOOT_STRATEGY": "etcd-lock",
            "REBOOT_WINDOW_START": "Thu 04:00",
            "LOCKSMITHD_REBOOT_WINDOW_LENGTH": "1h",
            "LOCKSMITHD_GROUP": "web",
            "LOCKSMITHD_ENDPOINT": "http://127.0.0.1:1,http://127.0.0.1:2",
        }
    )
    assert d.strategy is Strategy.ETCD_LOCK and d.group == "web"
    assert d.window == Periodic(4, 4, 0, timedelta(hours=1))
    assert d.endpoints == ("http://127.0.0.1:1", "http://127.0.0.1:2")
    assert DaemonSettings.from_env({}).strategy is Strategy.REBOOT
    with pytest.raises(ConfigError, match="Either both or neither"):
        DaemonSettings.from_env({"REBOOT_WINDOW_START": "04:00"})
    with pytest.raises(ConfigError, match="Error parsing reboot window: unable to parse start"):
        DaemonSettings.from_env({"REBOOT_WINDOW_START": "noon", "REBOOT_WINDOW_LENGTH": "1h"})


# --- dead holders -----------------------------------------------------------------------------


def test_reaper_releases_only_after_continuous_absence() -> None:
    r = DeadHolderReaper(grace=30)
    assert r.observe(0, ["a", "b"], ["a", "b"]) == []
    assert r.observe(10, ["a", "b"], ["a"]) == []  # b missing since 10
    assert r.observe(39, ["a", "b"], ["a"]) == []
    assert r.observe(35, ["a", "b"], ["a", "b"]) == []  # b back: clock restarts
    assert r.observe(50, ["a", "b"], ["a"]) == []
    (rel,) = r.observe(80, ["a", "b"], ["a"])
    assert (rel.holder, rel.missing_since, rel.released_at) == ("b", 50, 80)
    r.released("b")
    assert r.observe(81, ["a"], []) == []  # a newly missing
    assert [x.holder for x in r.observe(111, ["a"], [])] == ["a"]


def test_update_conf_written_by_cloud_config_drives_the_daemon() -> None:
    from corral.cloudinit import parse, update_conf

    cfg = parse("#cloud-config\ncoreos:\n  update:\n    reboot-strategy: off\n")
    conf = update_conf(cfg, "# comment\nGROUP='beta'\nSERVER=\"https://u\"\n")
    assert conf is not None
    env = parse_env_file(conf)
    assert env == {"GROUP": "beta", "SERVER": "https://u", "REBOOT_STRATEGY": "off"}
    assert DaemonSettings.from_env(env).strategy is Strategy.OFF
