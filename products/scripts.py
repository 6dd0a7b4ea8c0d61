"""The product cache's Lua scripts: loaded from ``lua/<name>.lua``, run by EVALSHA.

As django-cacheops does: the scripts live in files, this module loads them
once per process and runs them on a client from :mod:`products.transport`,
one at a time, pipelined, or on one raw connection (inside connect()).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError, RedisError, ResponseError

from .transport import Client, Connection, is_cluster

_LUA_DIR = Path(__file__).resolve().parent / "lua"
# The scripts that answer with what is cached, each run after the check that
# the user may run the writers' commands (lua/writers_allowed.lua says why).
_AFTER_WRITERS_ALLOWED = frozenset({"read", "proof"})
_sources: dict[str, str] = {}
_scripts: dict[str, Any] = {}


def source(name: str) -> str:
    """Return ``lua/<name>.lua``; ``"a+b"`` is a.lua followed by b.lua (read once per process).

    ``read`` and ``proof`` come after ``writers_allowed``. A part's ``#!lua``
    line (Redis 7's script flags) goes first, once.
    """
    text = _sources.get(name)
    if text is None:
        names = []
        for part in name.split("+"):
            names += ["writers_allowed", part] if part in _AFTER_WRITERS_ALLOWED else [part]
        parts = [(_LUA_DIR / f"{part}.lua").read_text() for part in names]
        shebangs = {part.partition("\n")[0] for part in parts if part.startswith("#!")}
        if len(shebangs) > 1:  # pragma: no cover - scripts of different flags cannot share a run
            raise ValueError(f"{name}: its parts declare different flags: {sorted(shebangs)}")
        bodies = [part.partition("\n")[2] if part.startswith("#!") else part for part in parts]
        text = _sources[name] = "\n".join([*shebangs, *bodies])
    return text


def script(redis_client: Client, name: str) -> Any:
    """Return redis-py's Script for :func:`source` ``name``; it reloads itself after NOSCRIPT."""
    # One per process: a Script runs on whatever client each call passes
    # (django-redis has a client per thread), the SHA is the same everywhere.
    found = _scripts.get(name)
    if found is None:
        found = _scripts[name] = redis_client.register_script(source(name))
    return found


def evalsha(redis_client: Client, name: str, keys: list, args: list) -> Any:
    """Run script ``name`` with one EVALSHA.

    On one server: the command redis-py's Script sends, without its per-call
    wrapping (about a tenth of a cached hit's CPU); a NOSCRIPT reply (Redis
    restarted or flushed its scripts) goes through Script, which loads it. On
    a cluster, Script routes by the first key and follows MOVED/ASK.
    """
    loaded = script(redis_client, name)
    if is_cluster(redis_client):
        return loaded(keys=keys, args=args, client=redis_client)
    pool = redis_client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_command("EVALSHA", loaded.sha, len(keys), *keys, *args)
        reply = connection.read_response()
    except NoScriptError:
        pool.release(connection)
        connection = None
        return loaded(keys=keys, args=args, client=redis_client)
    except BaseException:
        connection.disconnect()
        raise
    finally:
        if connection is not None:
            pool.release(connection)
    return reply


@contextmanager
def _borrowed(redis_client: Client) -> Iterator[Connection]:
    """Lend one pooled connection of a single server; one that raised is dropped, not reused.

    An error may leave replies unread on it, so it goes back disconnected.
    """
    pool = redis_client.connection_pool
    connection = pool.get_connection()
    try:
        yield connection
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)


def command_then_evalsha(redis_client: Client, command: tuple, name: str, keys: list, args: list) -> tuple:
    """Send ``command`` and script ``name`` in one round trip; return both replies.

    One server only (on a cluster they may belong to two masters). A NOSCRIPT
    reply runs the script again through :func:`evalsha`, which loads it.
    """
    loaded = script(redis_client, name)
    with _borrowed(redis_client) as connection:
        connection.send_packed_command(
            connection.pack_commands([command, ("EVALSHA", loaded.sha, len(keys), *keys, *args)])
        )
        first = connection.read_response()
        try:
            reply = connection.read_response()
        except NoScriptError:
            reply = NoScriptError
    if reply is NoScriptError:
        reply = evalsha(redis_client, name, keys, args)
    return first, reply


def pipelined(redis_client: Client, commands: tuple[tuple, ...] | list[tuple]) -> list:
    """Send ``commands`` in one write on one pooled connection of a single server; return the replies.

    What a non-transactional redis-py pipeline does, without its per-call
    objects and callbacks (replies are as the parser gives them). An error
    reply raises it, after the connection is dropped (its other replies are
    unread).
    """
    with _borrowed(redis_client) as connection:
        connection.send_packed_command(connection.pack_commands(commands))
        return [connection.read_response() for _ in commands]


def eval_many(redis_client: Client, name: str, calls: list[tuple[list, list]]) -> list:
    """Run script ``name`` once per ``(keys, args)``, pipelined; return the replies in order.

    A cluster pipeline refuses scripts, so there the calls are pipelined per
    master; a call a master refuses (MOVED/ASK during a resharding) is sent
    again alone through the cluster client, which follows the redirection.
    """
    loaded = script(redis_client, name)
    if not is_cluster(redis_client):
        pipe = redis_client.pipeline(transaction=False)
        for keys, args in calls:
            loaded(keys=keys, args=args, client=pipe)
        return pipe.execute()
    by_node: dict[str, list[int]] = {}
    for index, (keys, _) in enumerate(calls):
        by_node.setdefault(redis_client.get_node_from_key(keys[0]).name, []).append(index)
    replies: list = [None] * len(calls)
    for node_name, indexes in by_node.items():
        node_client = redis_client.get_redis_connection(redis_client.get_node(node_name=node_name))
        pipe = node_client.pipeline(transaction=False)
        for index in indexes:
            keys, args = calls[index]
            loaded(keys=keys, args=args, client=pipe)
        for index, reply in zip(indexes, pipe.execute(raise_on_error=False)):
            if isinstance(reply, RedisError):
                keys, args = calls[index]
                reply = loaded(keys=keys, args=args, client=redis_client)
            replies[index] = reply
    return replies


def eval_on_connection(connection: Connection, name: str, calls: list[tuple[list, list]]) -> list:
    """Run script ``name`` once per ``(keys, args)`` on one raw connection, pipelined.

    For :func:`register_adopt` functions, which run inside connect(). Returns
    the replies in order; a refused call (MOVED: a key of another cluster
    master) is returned as its ResponseError.
    """
    connection.send_command("SCRIPT", "LOAD", source(name))
    sha = connection.read_response()
    sha = sha.decode() if isinstance(sha, bytes) else sha
    commands = [("EVALSHA", sha, len(keys), *keys, *args) for keys, args in calls]
    connection.send_packed_command(connection.pack_commands(commands))
    replies: list = []
    for _ in commands:
        try:
            replies.append(connection.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies


def in_turn(redis_client: Client, commands: tuple[tuple, ...] | list[tuple]) -> list:
    """Send ``commands`` one after the other on one pooled connection of a single server; return the replies.

    Each command is written only once the previous reply has been read (one
    round trip each, in order, as separate ``execute_command`` calls make
    them), without redis-py's per-call wrapping and without taking a pooled
    connection for each. An error reply raises it, after the connection is
    dropped.
    """
    replies = []
    with _borrowed(redis_client) as connection:
        for command in commands:
            connection.send_command(*command)
            replies.append(connection.read_response())
    return replies
