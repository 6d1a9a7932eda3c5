"""The simulator over the fixed seed range: no violations, and every fault kind exercised."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from corral.cli.sim import cli as sim_cli
from corral.raft import Mutation
from corral.testing.sim import COVERAGE_KINDS, parse_seeds, run_seed, run_seeds

# 500 seeds in `make test`, in chunks so pytest-xdist can spread them.
CHUNKS = [(a, a + 99) for a in range(1, 501, 100)]


@pytest.mark.parametrize(("first", "last"), CHUNKS)
def test_fixed_seed_range_is_safe_live_linearizable_and_covers_faults(
    first: int, last: int
) -> None:
    summary = run_seeds(first, last)
    line = summary.line(first, last)
    print(line)
    assert not summary.failures, [(r.seed, r.violations) for r in summary.failures]
    for kind in COVERAGE_KINDS:
        assert summary.seeds_with[kind] > 0, f"no seed saw {kind}: {line}"
    assert summary.ops_checked > 20 * summary.seeds


@pytest.mark.parametrize("mutation", list(Mutation), ids=lambda m: m.value)
def test_mutant_is_caught_within_200_seeds(mutation: Mutation) -> None:
    for seed in range(1, 201):
        if not run_seed(seed, frozenset({mutation})).ok:
            return
    pytest.fail(f"mutant {mutation.value} survived 200 seeds")


def test_a_seed_replays_exactly() -> None:
    a, b = run_seed(42), run_seed(42)
    assert (a.trace, a.steps, a.virtual_ms, a.stats, a.ops_checked) == (
        b.trace,
        b.steps,
        b.virtual_ms,
        b.stats,
        b.ops_checked,
    )
    assert a.trace != run_seed(43).trace


def test_cli_prints_a_summary_line_and_exits_zero() -> None:
    res = CliRunner().invoke(sim_cli, ["--seeds", "1-3"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("seeds 1-3 (3): steps=")
    assert "violations=0" in res.output


def test_cli_reports_a_violation_with_its_replay_command() -> None:
    res = CliRunner().invoke(sim_cli, ["--seeds", "1-20", "--mutation", "vote-twice"])
    assert res.exit_code == 1
    assert "violations=1" in res.output
    assert "replay: corral sim --seeds 2-2 --verbose --mutation vote-twice" in res.output


def test_cli_rejects_a_bad_range() -> None:
    res = CliRunner().invoke(sim_cli, ["--seeds", "9-1"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    with pytest.raises(ValueError):
        parse_seeds("a-b")
