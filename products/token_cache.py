"""DRF token authentication with the token's user and permissions cached in Redis.

DRF's TokenAuthentication reads the token and its user (one query) on every
request, and the permission check then reads the user's and the groups'
permissions (two more): three of a create's five queries (docs/performance.md).
Here a token that authenticated once is answered from one Redis round trip
until anything it depends on changes.

Correctness, the same way the product cache keeps it:

* Every entry is stored together with the *auth generation* it was read
  under, and a read only accepts an entry of the current generation.
* Any change to a token, a user, a group, a permission or their m2m links
  (receivers in :mod:`products.receivers`) sets a new random generation, at
  once and again after its transaction commits. So after the change is
  acknowledged no request authenticates with the old user or permissions.
* A fill stores its entry only if the generation is still the one seen
  before the database read (one Lua script): a request that read the old
  rows before a change committed cannot store them after the change.
* Redis down: authentication reads the database (as DRF does), fills
  nothing. A change that could not reach Redis is retried before this
  process trusts Redis again, and recorded in the database (``hooks``:
  products.outbox), so every server process retires the generation once
  Redis answers, even when the change came from a process that exits (a
  shell, a command). A server new to the cache (a restart from a snapshot,
  a failover) gets a new generation too (products.cachekeys.adopt).

Caveats: ``User.objects.update()`` and raw SQL send no signals (like the
product cache's raw SQL caveat); call :func:`invalidate` after them. Only the
default ``ModelBackend`` permissions are cached; with other authentication
backends the permissions are read as usual (the user is still cached);
ModelBackend subclasses that only change ``authenticate`` (products.authentication's
LimitedModelBackend) count as ModelBackend.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Callable
from datetime import datetime

import orjson
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from redis.exceptions import RedisError
from rest_framework import authentication

from . import cache, cachekeys, scripts, transport

logger = logging.getLogger(__name__)

# cachekeys.AUTH_TAG: the generation and every entry live in one Redis
# Cluster slot, so lua/auth_*.lua only touch keys they declare, all in one slot.

_missed_lock = threading.Lock()
_missed = False  # a change could not reach Redis: retire before trusting it

# Called when a change could not reach Redis; add_hook() in apps.ready()
# (products.outbox records it in the database for every server process).
hooks: list[Callable[[], None]] = []


def _after_fork_in_child() -> None:
    global _missed_lock
    _missed_lock = threading.Lock()  # the master's outbox applier may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def add_hook(function: Callable[[], None]) -> None:
    """Call ``function`` too when a change to tokens or permissions could not reach Redis (once, however often added)."""
    if function not in hooks:
        hooks.append(function)


def _gen_key() -> str:
    return cachekeys.auth_generation_key()


def _keys(token_key: str) -> list[str]:
    # The entry's name is a digest: a Redis dump must not hand out tokens.
    digest = hashlib.blake2b(token_key.encode(), digest_size=16).hexdigest()
    return [_gen_key(), cachekeys.auth_entry_key(digest)]


def _user_fields() -> list:
    # Everything but the password hash: it never leaves the database.
    return [f for f in get_user_model()._meta.concrete_fields if f.attname != "password"]


_PERMISSION_METHODS = ("has_perm", "get_all_permissions", "get_user_permissions", "get_group_permissions")


def _caches_permissions() -> bool:
    """Return True when every backend decides permissions exactly as ModelBackend does."""
    from django.contrib.auth.backends import ModelBackend
    from django.utils.module_loading import import_string

    for path in settings.AUTHENTICATION_BACKENDS:
        backend = import_string(path)
        if not issubclass(backend, ModelBackend) or any(
            getattr(backend, method) is not getattr(ModelBackend, method) for method in _PERMISSION_METHODS
        ):
            return False
    return True


def _dump(user, token) -> bytes:
    values = [getattr(user, f.attname) for f in _user_fields()]
    perms = sorted(user.get_all_permissions()) if _caches_permissions() else None
    return orjson.dumps({"u": values, "p": perms, "c": token.created})


def _load(token_key: str, payload: bytes, token_model):
    data = orjson.loads(payload)
    fields = _user_fields()
    values = []
    for field, value in zip(fields, data["u"], strict=True):
        if value is not None and field.get_internal_type() == "DateTimeField":
            value = datetime.fromisoformat(value)
        values.append(value)
    # from_db marks the password as deferred: a save() of this user writes
    # only the loaded fields, and reading the password loads it.
    user = get_user_model().from_db("default", [f.attname for f in fields], values)
    if data["p"] is not None:
        user._perm_cache = set(data["p"])  # what ModelBackend.has_perm reads
    token = token_model(key=token_key, user=user, created=datetime.fromisoformat(data["c"]))
    return user, token


def _retire_if_missed(client) -> None:
    global _missed
    if _missed:
        with _missed_lock:
            if _missed:
                client.set(_gen_key(), secrets.token_hex(8))
                _missed = False


def _read(keys: list[str]):
    def op(client):
        _retire_if_missed(client)
        return scripts.evalsha(client, "auth_read", keys, [])

    try:
        return transport.run(op)
    except transport.CacheUnavailable:
        return None


def _read_with(keys: list[str], count_keys: list[str]):
    def op(client):
        _retire_if_missed(client)
        if transport.is_cluster(client):  # other slots, maybe other masters: read apart
            return scripts.evalsha(client, "auth_read", keys, []), None
        counts, answer = scripts.command_then_evalsha(client, ("MGET", *count_keys), "auth_read", keys, [])
        return answer, [int(value or 0) for value in counts]

    try:
        return transport.run(op)
    except transport.CacheUnavailable:
        return None, None


class CachedTokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Token ...``, with the user and permissions cached (see the module docstring)."""

    _prefetched: tuple[str, object] | None = None

    def prefetch(self, key: str, count_keys: list[str]) -> list[int] | None:
        """Read the cached entry for ``key`` and the counters ``count_keys`` in one round trip.

        Returns the counters' values (None: not read), and keeps the entry
        for the next :meth:`authenticate_credentials` of ``key`` by this
        instance (DRF makes one per request). products.authentication reads
        the failed-login counts this way.
        """
        if not count_keys or not cache.cache_enabled() or cache.in_transaction():
            return None
        answer, counts = _read_with(_keys(key), count_keys)
        if answer is not None:
            self._prefetched = (key, answer)
        return counts

    def authenticate_credentials(self, key: str):
        if not settings.AUTH_CACHE_TIMEOUT or not cache.cache_enabled() or cache.in_transaction():
            # AUTH_CACHE_TIMEOUT=0: no token is cached (Redis refuses `SET ... EX 0`).
            return super().authenticate_credentials(key)
        keys = None
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and prefetched[0] == key:
            answer = prefetched[1]
        else:
            answer = _read(keys := _keys(key))
        if answer is not None and answer[0] == 1:
            return _load(key, answer[1], self.get_model())
        user, token = super().authenticate_credentials(key)  # raises for a bad token
        if answer is not None:
            keys = keys or _keys(key)
            payload = _dump(user, token)
            timeout = settings.AUTH_CACHE_TIMEOUT
            try:
                transport.run(lambda c: scripts.evalsha(c, "auth_fill", keys, [answer[1], payload, timeout]))
            except transport.CacheUnavailable:
                pass
        return user, token


def invalidate(record: bool = True) -> bool:
    """Make every cached token unreachable now (a new auth generation); return whether Redis took it.

    When Redis does not, this process retires the generation before it
    trusts Redis again, and (``record``) the ``hooks`` record the miss for
    every other process.
    """
    global _missed
    try:
        # Straight to Redis, past the breaker (an invalidation is never
        # skipped), and without opening it: an admin edit during an outage is
        # not what should announce the outage.
        transport.client().set(_gen_key(), secrets.token_hex(8))
        return True
    except RedisError:
        with _missed_lock:
            _missed = True
        if record:
            for hook in hooks:
                hook()
        return False


def retire() -> bool:
    """Deliver a recorded miss (products.outbox's applier): :func:`invalidate` without recording it again."""
    return invalidate(record=False)


def invalidate_on_commit(using: str | None = None) -> None:
    """Invalidate now, and again once the current transaction commits.

    A miss now is recorded inside the transaction, with the write (as the
    product cache's): it commits with it, and the attempt after the commit
    does not record it twice. A miss only after the commit is recorded then.
    """
    recorded = not invalidate()
    if transaction.get_connection(using).in_atomic_block:
        transaction.on_commit(lambda: invalidate(record=not recorded), using=using, robust=True)
