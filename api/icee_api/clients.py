"""Who a request comes from: its API token when tokens are on, else its address.

The address is the TCP peer's, or, when the peer is one of the configured trusted
proxies, the right-most ``X-Forwarded-For`` hop that is not itself a trusted proxy
(anything further left was written by the client and proves nothing).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "127.0.0.1"]`` as networks; ValueError names a bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {value[:64]!r}") from None
    return tuple(networks)


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in net for net in trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address, honouring X-Forwarded-For from trusted proxies only."""
    address = peer or "unknown"
    if not forwarded_for or not trusted:
        return address
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    while hops and _trusted(address, trusted):
        hop = hops.pop()
        if _ip(hop) is None:
            break  # garbage from a proxy we trust: keep the last address we could check
        address = str(_ip(hop))
    return address


@dataclass(frozen=True, slots=True)
class Client:
    """One quota holder: ``kind`` is "token" (its name) or "address"."""

    kind: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        """A label value for the CodeSession: stable, 32 hex chars, reveals nothing."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:32]

    def __str__(self) -> str:
        return self.key
