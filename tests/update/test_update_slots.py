"""gptprio slot selection (GRUB `gptprio.next`, `cgpt prioritize`) and the directory backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.update.errors import SlotError
from corral.update.slots import (
    DirectorySlots,
    ImageSlots,
    SlotAttrs,
    SlotTable,
    initial_table,
    mark_good,
    mark_updated,
    open_slots,
    prioritize,
    select_next,
)


def table(*slots: tuple[int, int, bool]) -> SlotTable:
    return SlotTable(tuple((chr(ord("a") + i), SlotAttrs(*s)) for i, s in enumerate(slots)))


def test_highest_priority_bootable_slot_wins() -> None:
    assert select_next(table((1, 0, True), (2, 1, False)))[0] == "b"
    assert select_next(table((2, 0, True), (1, 1, False)))[0] == "a"


def test_ties_go_to_the_earlier_slot() -> None:
    assert select_next(table((2, 0, True), (2, 0, True)))[0] == "a"


def test_priority_zero_never_boots() -> None:
    with pytest.raises(SlotError, match="no such partition"):
        select_next(table((0, 5, True), (0, 0, True)))


def test_a_slot_without_tries_or_success_is_skipped() -> None:
    assert select_next(table((1, 0, True), (2, 0, False)))[0] == "a"
    with pytest.raises(SlotError):
        select_next(table((1, 0, False), (2, 0, False)))


def test_tries_are_decremented_before_boot_and_success_is_kept() -> None:
    name, after = select_next(table((1, 0, True), (2, 1, False)))
    assert name == "b" and after.get("b") == SlotAttrs(2, 0, False)
    name, after = select_next(table((2, 0, True), (1, 0, True)))
    assert after == table((2, 0, True), (1, 0, True))


def test_prioritize_two_slots() -> None:
    assert prioritize(table((1, 0, True), (0, 0, False)), "b") == table((1, 0, True),
                                                                       (2, 0, False))
    assert prioritize(table((2, 0, True), (1, 0, True)), "b") == table((1, 0, True),
                                                                      (2, 0, True))


def test_prioritize_renumbers_groups_and_keeps_zero() -> None:
    t = table((5, 0, True), (5, 0, True), (3, 0, True), (0, 0, False), (9, 0, True))
    # groups 9, 5, 3 below the new top: 4 groups → target 4, then 3, 2, 1; zero stays zero.
    assert prioritize(t, "d") == table((2, 0, True), (2, 0, True), (1, 0, True), (4, 0, False),
                                       (3, 0, True))


def test_update_then_good_boot() -> None:
    t = initial_table()
    booted, t = select_next(t)
    assert booted == "a"
    t = mark_good(t, "a")
    t = mark_updated(t, "b")
    assert t.get("b") == SlotAttrs(2, 1, False) and t.get("a") == SlotAttrs(1, 0, True)
    booted, t = select_next(t)
    assert booted == "b" and t.get("b").tries == 0
    t = mark_good(t, "b")
    assert t.get("b") == SlotAttrs(2, 0, True)
    assert select_next(t)[0] == "b"


def test_update_never_marked_good_falls_back() -> None:
    t = mark_updated(mark_good(initial_table(), "a"), "b")
    booted, t = select_next(t)
    assert booted == "b"
    # Never marked good: the next boot finds b ineligible and boots a again.
    booted, t = select_next(t)
    assert booted == "a"
    assert t.get("b") == SlotAttrs(2, 0, False)  # nothing erased
    t = mark_good(t, "a")
    assert select_next(t)[0] == "a" and t.get("a").priority == 2


def test_out_of_range_attributes_are_refused() -> None:
    with pytest.raises(SlotError):
        SlotAttrs(16, 0, False)


attrs = st.builds(SlotAttrs, st.integers(0, 15), st.integers(0, 15), st.booleans())


@given(st.lists(attrs, min_size=1, max_size=6))
def test_selection_matches_the_rule(slots: list[SlotAttrs]) -> None:
    t = SlotTable(tuple((str(i), a) for i, a in enumerate(slots)))
    eligible = [(i, a) for i, a in enumerate(slots) if a.bootable and a.priority > 0]
    if not eligible:
        with pytest.raises(SlotError):
            select_next(t)
        return
    best = max(a.priority for _, a in eligible)
    want = min(i for i, a in eligible if a.priority == best)
    name, after = select_next(t)
    assert name == str(want)
    chosen = slots[want]
    assert after.get(name).tries == max(chosen.tries - 1, 0)
    assert all(after.get(str(i)) == a for i, a in enumerate(slots) if i != want)


@given(st.lists(attrs, min_size=1, max_size=6), st.data())
def test_prioritize_puts_target_strictly_on_top(slots: list[SlotAttrs],
                                                data: st.DataObject) -> None:
    t = SlotTable(tuple((str(i), a) for i, a in enumerate(slots)))
    target = str(data.draw(st.integers(0, len(slots) - 1)))
    after = prioritize(t, target)
    top = after.get(target).priority
    assert top >= 1
    assert all(a.priority < top or top == 15 for n, a in after.slots if n != target)
    # Relative order of the others is kept; zeros stay zero.
    for (n1, a1), (_, b1) in zip(t.slots, after.slots, strict=True):
        if n1 != target and a1.priority == 0:
            assert b1.priority == 0


@pytest.mark.parametrize("kind", ["directory", "image"])
def test_backends_write_mount_and_persist(tmp_path: Path, kind: str, signed_110: bytes) -> None:
    slots = open_slots(tmp_path / "slots", kind)
    slots.ensure()
    assert slots.read_table() == initial_table()
    assert slots.slot_version("b") is None
    slots.write_slot("b", signed_110)
    assert slots.slot_version("b") == "1.1.0"
    tree = slots.mount("b")
    assert '__version__ = "1.1.0"' in (tree / "corral/__init__.py").read_text()
    t = mark_updated(initial_table(), "b")
    slots.write_table(t)
    reopened = open_slots(tmp_path / "slots")
    assert reopened.kind == kind and reopened.read_table() == t
    with pytest.raises(SlotError, match="backend"):
        open_slots(tmp_path / "slots", "directory" if kind == "image" else "image")


def test_a_damaged_image_does_not_mount(tmp_path: Path, signed_110: bytes) -> None:
    slots = ImageSlots(tmp_path)
    slots.ensure()
    slots.write_slot("a", signed_110[:-3000])
    with pytest.raises(SlotError, match="damaged"):
        slots.mount("a")
    with pytest.raises(SlotError, match="no image"):
        slots.mount("b")


def test_directory_backend_refuses_a_corrupt_table(tmp_path: Path) -> None:
    slots = DirectorySlots(tmp_path)
    slots.ensure()
    slots.table_path.write_text('{"format": 99, "slots": []}')
    with pytest.raises(SlotError, match="format"):
        slots.read_table()
    slots.table_path.write_text("{not json")
    with pytest.raises(SlotError):
        slots.read_table()
    with pytest.raises(SlotError):
        slots.slot_path("c")
    with pytest.raises(SlotError, match="unknown slot backend"):
        open_slots(tmp_path / "new", "floppy")
