"""HTTP conditional requests for product representations: ETags and their matching."""

from __future__ import annotations

import hashlib

from django.utils.http import parse_etags


def make_etag(data: bytes) -> str:
    """Return a strong ETag for a product representation."""
    return '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'


def etag_matches(header: str | None, etag: str, *, weak: bool = True) -> bool:
    """Return True when an If-None-Match (weak) or If-Match (``weak=False``) header names ``etag``.

    ``*`` matches any existing product. If-Match compares strongly (RFC 9110):
    a ``W/`` tag never matches there.
    """
    if not header:
        return False
    tags = parse_etags(header)
    return "*" in tags or etag in tags or (weak and f"W/{etag}" in tags)
