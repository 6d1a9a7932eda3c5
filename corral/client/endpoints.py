"""Which endpoint gets the next request: a small deterministic pool (no I/O).

The pool keeps the endpoints in the order the user (or `/v2/members`) gave them and a
*pinned* one: requests go to the pinned endpoint first and, when the retry policy allows
(`protocol.may_retry`), on to the others in order. A success pins the endpoint that
answered, so a client sticks to a working member the way the Go v2 client does.
Discovery replaces the list with the members' advertised client URLs, keeping the pin
when that URL is still listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from corral.client.errors import UsageError

__all__ = ["EndpointPool", "normalize_endpoint"]


def normalize_endpoint(url: str) -> str:
    """`http://host:port` without a trailing slash; a missing scheme means http."""
    url = url.strip()
    if not url:
        raise UsageError("empty endpoint")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid endpoint {url!r}: need http://host:port")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise UsageError(f"invalid port in endpoint {url!r}") from None
    return f"{parts.scheme}://{parts.netloc}"


class EndpointPool:
    """An ordered set of endpoints with one pinned as the first to try."""

    def __init__(self, endpoints: Iterable[str]) -> None:
        self._endpoints: list[str] = []
        self._pinned = 0
        self.replace(endpoints)

    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    @property
    def pinned(self) -> str:
        return self._endpoints[self._pinned]

    def order(self) -> list[str]:
        """The endpoints in the order to try them: the pinned one, then the rest."""
        n = len(self._endpoints)
        return [self._endpoints[(self._pinned + i) % n] for i in range(n)]

    def succeeded(self, endpoint: str) -> None:
        if endpoint in self._endpoints:
            self._pinned = self._endpoints.index(endpoint)

    def replace(self, endpoints: Iterable[str]) -> None:
        fresh: list[str] = []
        for e in endpoints:
            n = normalize_endpoint(e)
            if n not in fresh:
                fresh.append(n)
        if not fresh:
            raise UsageError("no endpoints")
        pinned = self._endpoints[self._pinned] if self._endpoints else None
        self._endpoints = fresh
        self._pinned = fresh.index(pinned) if pinned in fresh else 0
