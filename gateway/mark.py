"""The daemon's mark on its spool and state directory.

A short-lived command (``busgate mail``, ``publish``, ``git-hook``) writes into
a spool and exits 0; if no daemon reads that spool, the event is lost silently.
So ``busgate run`` marks the spool and the state directory it serves when it
starts, and the short-lived commands refuse a spool without that mark (exit 75,
the MTA keeps the mail) instead of creating one. The state mark also records
the identity (device, inode) of the database the daemon opened, so a spool
worker restarted after the file was deleted or replaced notices instead of
writing to a new file the publisher never reads.

Checking a spool mark (:meth:`gateway.spool.Spool.is_marked`) costs one
``os.stat``: ``busgate mail --spool`` starts on every archive mail.
"""

from __future__ import annotations

import os

from gateway.spool import MARK as SPOOL_MARK  # Spool.is_marked checks it

STATE_MARK = ".busgate-state"


def unmarked_spool_message(spool_root: str | os.PathLike[str]) -> str:
    return (f"{os.path.abspath(spool_root)} is not the spool of a busgate daemon (no "
            f"{SPOOL_MARK}): start `busgate run` once with the same configuration (it marks "
            "its spool), or point --config / $BUSGATE_CONFIG / --spool at the daemon's")


def write(directory: str | os.PathLike[str], name: str, info: dict[str, object]) -> None:
    """Atomically (re)write a mark: tmp file, fsync, rename."""
    import json

    path = os.path.join(os.fspath(directory), name)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(info, out, indent=1, sort_keys=True)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def read_state(state_dir: str | os.PathLike[str]) -> dict[str, object] | None:
    """The state mark's content, or ``None`` when the directory carries no mark."""
    import json

    try:
        with open(os.path.join(os.fspath(state_dir), STATE_MARK), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def unmarked_state_message(state_dir: str | os.PathLike[str]) -> str:
    return (f"{os.path.abspath(state_dir)} holds no busgate state (no {STATE_MARK}): "
            "`busgate run` has never started with this configuration; pass --config or set "
            "$BUSGATE_CONFIG to the daemon's configuration")
