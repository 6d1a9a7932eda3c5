"""`corral sim`: run the deterministic Raft simulator over a range of seeds."""

from __future__ import annotations

import click

from corral.raft import Mutation
from corral.testing.sim import SeedResult, parse_seeds, replay_command, run_seeds


@click.command()
@click.option("--seeds", "seeds", default="1-100", show_default=True, help="seed range A-B")
@click.option("--verbose", "-v", is_flag=True, help="print one line per seed")
@click.option(
    "--mutation",
    "mutations",
    multiple=True,
    type=click.Choice([m.value for m in Mutation]),
    help="run a deliberately broken Raft variant (to see the simulator catch it)",
)
@click.option("--keep-going", is_flag=True, help="do not stop at the first violating seed")
def cli(seeds: str, verbose: bool, mutations: tuple[str, ...], keep_going: bool) -> None:
    """Simulate Raft clusters under faults; check safety, liveness and linearizability.

    Prints one summary line; exits 1 if any seed found a violation (with the command that
    replays it).
    """
    try:
        first, last = parse_seeds(seeds)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--seeds") from None
    muts = frozenset(Mutation(m) for m in mutations)

    def show(r: SeedResult) -> None:
        if verbose:
            status = "ok" if r.ok else "VIOLATION"
            click.echo(
                f"seed {r.seed}: {status} steps={r.steps} virtual={r.virtual_ms}ms "
                f"ops={r.ops_checked} {dict(sorted(r.stats.items()))}"
            )
        elif last - first >= 2000 and r.seed % 1000 == 0:
            click.echo(f"... seed {r.seed}", err=True)  # a heartbeat for long soaks
        for v in r.violations:
            click.echo(f"seed {r.seed}: {v}", err=True)

    summary = run_seeds(first, last, muts, stop_on_failure=not keep_going, progress=show)
    click.echo(summary.line(first, last))
    if summary.failures:
        for r in summary.failures:
            click.echo(f"replay: {replay_command(r.seed, muts)}", err=True)
        raise SystemExit(1)
