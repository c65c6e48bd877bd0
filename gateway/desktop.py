"""Desktop notifications: one ``org.freedesktop.Notifications.Notify`` call on the session bus.

The client is jeepney (pure Python, no C extension, no GLib main loop, maintained and
used by ``keyring``/``secretstorage``): its blocking connection fits the consumer's
synchronous loop, and it installs anywhere busgate does. Every failure (no session bus,
no notification server on it, a server that does not answer in time, a bus that went
away) is one :class:`DesktopError` with a sentence a person can act on; the caller
decides when to try again, and the next call reconnects.
"""

from __future__ import annotations

import contextlib
import html
import os
from dataclasses import dataclass

#: The freedesktop notification service (Desktop Notifications Specification 1.2).
SERVICE = "org.freedesktop.Notifications"
OBJECT_PATH = "/org/freedesktop/Notifications"
#: ``urgency`` hint values.
LOW, NORMAL, CRITICAL = 0, 1, 2
URGENCIES = {"low": LOW, "normal": NORMAL, "critical": CRITICAL}
#: Seconds a Notify call may take before the server counts as not answering.
CALL_TIMEOUT = 5.0
#: Longest summary and body sent, in characters (servers show a few lines anyway; the
#: D-Bus message stays far below the bus's own limit).
MAX_SUMMARY_CHARS = 200
MAX_BODY_CHARS = 1000


class DesktopError(Exception):
    """A notification could not be shown; the message says why, for a person."""


@dataclass(frozen=True)
class Notification:
    """What one Notify call shows."""

    summary: str
    body: str = ""
    urgency: int = NORMAL
    #: Replace this earlier notification (its id from the server), 0 for a new one.
    replaces: int = 0
    #: Milliseconds on screen; -1 is the server's default.
    expire_ms: int = -1


class Notifier:
    """A connection to the session bus that sends Notify calls (reconnecting as needed)."""

    def __init__(self, app_name: str = "busgate", address: str | None = None,
                 timeout: float = CALL_TIMEOUT):
        self.app_name = app_name
        self.address = address
        self.timeout = timeout
        self._conn: object | None = None
        #: The server's capabilities (``GetCapabilities``), asked once per connection.
        self._caps: frozenset[str] | None = None

    def _connect(self):  # type: ignore[no-untyped-def]
        from jeepney.io.blocking import open_dbus_connection

        where = self.address or os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        if not where:
            raise DesktopError("no session bus: DBUS_SESSION_BUS_ADDRESS is not set "
                               "(run busgate notify inside your desktop session)")
        try:
            self._conn = open_dbus_connection(bus=where)
        except Exception as exc:  # OSError, AuthenticationError, a malformed address
            raise DesktopError(f"cannot connect to the session bus at {where}: "
                               f"{exc or type(exc).__name__}") from None
        return self._conn

    def notify(self, note: Notification) -> int:
        """Show ``note`` (plain text: escaped when the server reads markup, so '<' and
        '&' show as themselves); return the server's id for it (for ``replaces``)."""
        if self._caps is None:
            caps = self._call("GetCapabilities", "", ())
            self._caps = frozenset(c for c in (caps[0] if caps else ()) if isinstance(c, str))
        body = note.body[:MAX_BODY_CHARS]
        if "body-markup" in self._caps:
            body = html.escape(body, quote=False)
        reply = self._call("Notify", "susssasa{sv}i", (
            self.app_name, note.replaces & 0xFFFFFFFF, "", note.summary[:MAX_SUMMARY_CHARS],
            body, [], {"urgency": ("y", note.urgency)}, note.expire_ms))
        return int(reply[0]) if reply and isinstance(reply[0], int) else 0

    @property
    def capabilities(self) -> frozenset[str]:
        """What the server said it can do (empty before the first call)."""
        return self._caps or frozenset()

    def _call(self, method: str, signature: str, args: tuple[object, ...]) -> tuple:
        from jeepney import DBusAddress, DBusErrorResponse, MessageType, new_method_call

        conn = self._conn or self._connect()
        address = DBusAddress(OBJECT_PATH, bus_name=SERVICE, interface=SERVICE)
        call = new_method_call(address, method, signature or None, args)
        try:
            reply = conn.send_and_get_reply(call, timeout=self.timeout)  # type: ignore[attr-defined]
        except TimeoutError:
            self.close()  # a late reply must not be taken for the next call's
            raise DesktopError(f"the notification server did not answer within "
                               f"{self.timeout:g} s") from None
        except (OSError, ConnectionError, EOFError) as exc:
            self.close()
            raise DesktopError(f"lost the session bus: {exc or type(exc).__name__}") from None
        if reply.header.message_type == MessageType.error:
            error = DBusErrorResponse(reply)
            if error.name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                              "org.freedesktop.DBus.Error.NameHasNoOwner"):
                raise DesktopError(f"no notification server on the session bus (nothing owns "
                                   f"{SERVICE}; is a desktop or notification daemon such as "
                                   f"dunst running?)")
            raise DesktopError(f"the notification server refused: {error.name}: "
                               f"{' '.join(map(str, error.data))[:300]}")
        return tuple(reply.body)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._caps = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()  # type: ignore[attr-defined]
