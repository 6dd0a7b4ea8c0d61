"""The client's address: one rule for the throttles, the failed-login limits and the fast path.

``REMOTE_ADDR`` is the peer that opened the connection. ``X-Forwarded-For``
is believed only from a peer in ``FORWARDED_ALLOW_IPS`` (the name gunicorn
uses for the same trust): a client that connects directly cannot choose its
identity by sending the header. Behind trusted proxies, the header is read
from the right, skipping the trusted hops, and the first address that is not
a trusted proxy is the client (the left part of the header is whatever the
client sent, so it is never taken on trust). ``*`` trusts whatever connects,
but as a proxy of unknown address: only the last hop of the header, the one
that proxy appended, is believed (reading further left would reach the part
the client wrote, as every address would count as a proxy).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import lru_cache

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """Return the networks of a list of addresses and networks (a setting's value)."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def in_networks(address: str, within: tuple[Network, ...]) -> bool:
    """Return True when ``address`` is in one of ``within``.

    An IPv4 peer on a dual-stack socket (gunicorn bound to ``[::]``) arrives
    as ``::ffff:a.b.c.d`` and counts as ``a.b.c.d``.
    """
    ip = _ip(address)
    if ip is None:
        return False
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    return any(ip in network for network in within)


def _trusted(setting: tuple[str, ...]) -> tuple[bool, tuple[Network, ...]]:
    """Return (trust everyone, networks) for a FORWARDED_ALLOW_IPS value."""
    if "*" in setting:
        return True, ()
    return False, networks(setting)


def parse_allowed(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Split FORWARDED_ALLOW_IPS ("127.0.0.1,::1", "10.0.0.0/8", "*") and check every item."""
    items = value.split(",") if isinstance(value, str) else value
    cleaned = tuple(item.strip() for item in items if item.strip())
    _trusted(cleaned)  # raises ValueError for an item that is not an address or network
    return cleaned


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def is_trusted_proxy(address: str) -> bool:
    """Return True when ``address`` is in FORWARDED_ALLOW_IPS."""
    everyone, trusted = _trusted(tuple(settings.FORWARDED_ALLOW_IPS))
    return everyone or in_networks(address, trusted)


def client_address(meta: Mapping[str, str]) -> str:
    """Return the client address for a WSGI environ or ``request.META``."""
    peer = meta.get("REMOTE_ADDR") or ""
    forwarded = meta.get("HTTP_X_FORWARDED_FOR")
    if not forwarded or not is_trusted_proxy(peer):
        return peer
    if _trusted(tuple(settings.FORWARDED_ALLOW_IPS))[0]:
        last = _ip(forwarded.rsplit(",", 1)[-1])
        return peer if last is None else str(last)
    client = peer
    for hop in reversed(forwarded.split(",")):
        ip = _ip(hop)
        if ip is None:
            # Garbage from the client's part of the header: the last hop
            # we could read stands for it.
            break
        client = str(ip)
        if not is_trusted_proxy(client):
            break
    return client
