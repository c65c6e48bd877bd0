"""What ``busgate run`` leaves at its start, for benches that time the short-lived
commands alone: the state database and the spool, both marked as a daemon's (the
hook, ``busgate mail`` and ``busgate publish`` refuse a spool no daemon marked)."""

from __future__ import annotations

from pathlib import Path


def adopt(config_path: Path) -> Path:
    """Create and mark the state and spool that ``config_path`` names; returns the spool."""
    from gateway import config, runtime

    settings = config.load(config_path)
    store, spool = runtime.open_store(settings), runtime.open_spool(settings)
    spool.ensure()
    runtime.adopt(settings, store, spool)
    store.close()
    return settings.spool_dir
