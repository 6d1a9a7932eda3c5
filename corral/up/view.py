"""The rich rendering of a cluster's status (members, leader, term, index, health, fleet)."""

from __future__ import annotations

from rich.table import Table

from .cluster import MachineStatus
from .plan import ClusterPlan

__all__ = ["status_table"]


def status_table(plan: ClusterPlan, rows: list[MachineStatus]) -> Table:
    table = Table(title=f"corral cluster in {plan.directory}", caption=(
        f"update server {plan.update_url} · endpoints {plan.endpoints}"))
    for col in ("machine", "KV port", "node", "health", "raft", "term", "index",
                "members", "fleet", "version"):
        table.add_column(col, no_wrap=True)
    for m, s in zip(plan.machines, rows, strict=True):
        table.add_row(
            s.name, str(m.client_port),
            "[green]up[/]" if s.running else "[red]down[/]",
            "[green]ok[/]" if s.healthy else "[red]no[/]",
            "[bold]leader[/]" if s.leader else ("follower" if s.healthy else "-"),
            "-" if s.term is None else str(s.term),
            "-" if s.index is None else str(s.index),
            str(s.members), str(s.fleet_machines), s.version,
        )
    return table
