"""The per-unit journal: timestamps, bounded size, -n and -f."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from click.testing import CliRunner

from corral.cli.units import cli
from corral.units.journal import Journal
from corral.units.supervisor import Layout


def test_lines_are_timestamped_and_tail_counts(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    for i in range(5):
        j.write("a.service", "app", 42, f"line {i}")
    j.write("a.service", "app", 42, "two\nlines")
    tail = j.tail("a.service", 3)
    assert [t.split(": ", 1)[1] for t in tail] == ["line 4", "two", "lines"]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00 app\[42\]: line 4$", tail[0])
    assert j.tail("a.service", 0) == []
    assert len(j.tail("a.service")) == 7
    assert j.tail("other.service") == []
    assert (tmp_path / "VERSION").read_text() == "1\n"


def test_size_is_bounded_with_one_rotation(tmp_path: Path) -> None:
    j = Journal(tmp_path, max_bytes=1000)
    for i in range(500):
        j.write("b.service", "x", 1, f"message number {i}")
    files = sorted(tmp_path.glob("b.service.log*"))
    assert [f.name for f in files] == ["b.service.log", "b.service.log.1"]
    assert all(f.stat().st_size <= 1000 for f in files)
    assert j.tail("b.service", 1)[0].endswith("message number 499")


def test_follow_yields_new_lines(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.write("c.service", "x", 1, "old")

    def writer() -> None:
        for i in range(3):
            time.sleep(0.05)
            j.write("c.service", "x", 1, f"new {i}")

    t = threading.Thread(target=writer)
    t.start()
    got: list[str] = []
    for line in j.follow("c.service", poll=0.01, stop_after=5):
        got.append(line.split(": ", 1)[1])
        if len(got) == 3:
            break
    t.join()
    assert got == ["new 0", "new 1", "new 2"]


def test_cli_journal_n_and_follow(tmp_path: Path) -> None:
    j = Journal(Layout(tmp_path).journal)
    for i in range(4):
        j.write("d.service", "d", 7, f"entry {i}")
    r = CliRunner().invoke(cli, ["--root", str(tmp_path), "journal", "d", "-n", "2"])
    assert [x.split(": ", 1)[1] for x in r.output.splitlines()] == ["entry 2", "entry 3"]
    r = CliRunner().invoke(
        cli, ["--root", str(tmp_path), "journal", "d", "-f", "-n", "1", "--follow-for", "0.2"]
    )
    assert r.exit_code == 0 and r.output.endswith("entry 3\n")
