"""Build the shared parts (store, spool) from settings, the same way for every command.

The store's modules (sqlite3, envelopes, signing) are imported when a store is opened:
``busgate publish`` opens only the spool and must not pay for them at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.spool import Spool

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.messages import TypeIndex
    from gateway.store import Store


def type_index(settings: Settings) -> TypeIndex:
    """The message types of every registered source, with this deployment's topic
    tokens: what the envelope factory, ingest and the API look events up in."""
    from gateway import sources

    return sources.type_index(settings)


def open_store(settings: Settings, *, create: bool = True,
               index: TypeIndex | None = None) -> Store:
    """The state database with its envelope factory. ``index`` (default: the
    registry's, :func:`type_index`) gives every event its message type: the
    envelope's headers, and the schema ingest validates bodies against."""
    from gateway.envelope import EnvelopeFactory
    from gateway.signing import make_signer
    from gateway.store import Store

    factory = EnvelopeFactory(
        topic_prefix=settings.topic_prefix,
        publisher=settings.publisher.name,
        username=settings.username,
        signer=make_signer(settings.signing),
        index=type_index(settings) if index is None else index,
    )
    return Store(settings.db_path, factory, create=create)


def open_daemon_store(settings: Settings) -> Store:
    """The daemon's state database, for a command that writes into it or reads it beside
    the daemon (``poll``, ``reprocess``): never a new one. Raises :class:`StoreError`
    naming the place when ``busgate run`` has never marked this state directory."""
    from gateway import mark
    from gateway.errors import StoreError

    if mark.read_state(settings.state_dir) is None:
        raise StoreError(mark.unmarked_state_message(settings.state_dir))
    return open_store(settings, create=False)


def open_spool(settings: Settings) -> Spool:
    return Spool(settings.spool_dir)


def adopt(settings: Settings, store: Store, spool: Spool) -> None:
    """Mark the spool and state directory as this daemon's (see :mod:`gateway.mark`).
    Raises ``OSError``."""
    import os
    import time

    from gateway import mark

    info = {
        "daemon": "busgate run",
        "pid": os.getpid(),
        "started": int(time.time()),
        "config": [str(p) for p in settings.loaded_from],
        "state_dir": os.path.abspath(settings.state_dir),
        "database": os.path.abspath(settings.db_path),
        "database_identity": list(store.identity) if store.identity else None,
        "spool": os.path.abspath(settings.spool_dir),
    }
    mark.write(settings.state_dir, mark.STATE_MARK, info)
    mark.write(spool.root, mark.SPOOL_MARK, info)
