"""Build the shared parts (store, spool) from settings, the same way for every command."""

from __future__ import annotations

from gateway.config import Settings
from gateway.signing import make_signer
from gateway.spool import Spool
from gateway.store import EnvelopeFactory, Store


def open_store(settings: Settings) -> Store:
    factory = EnvelopeFactory(
        topic_prefix=settings.topic_prefix,
        publisher=settings.publisher.name,
        username=settings.username,
        signer=make_signer(settings.signing.backend),
    )
    return Store(settings.db_path, factory)


def open_spool(settings: Settings) -> Spool:
    return Spool(settings.spool_dir)
