"""The IRC side of ``busgate irc``: one connection, kept up, fed at a safe rate.

Library: jaraco's ``irc`` (PyPI ``irc``), the long-maintained IRC client for Python
(regular releases, typed, used by many bots). Its select-based :class:`irc.client.Reactor`
runs in the same thread as the bus consumer, one short slice at a time, so there is no
thread and no lock between the two; it answers the server's PINGs itself, parses
numerics (433 "nickname in use") into events, and refuses to send a line with CR/LF or
over 512 bytes. The asyncio clients (``pydle``, ``bottom``) would need an event loop the
rest of the consumer does not have.

What this module adds to it:

* reconnect with back-off (``reconnect_min`` doubling to ``reconnect_max``, with some
  jitter so several relays do not come back together), after a refused connection, a
  drop, or a server that never welcomes us within ``connect_timeout``;
* nick collision: on 433 the next of ``alt_nicks``, then ``nick`` with growing ``_``;
  after :data:`MAX_NICK_TRIES` the attempt counts as failed and backs off;
* a keepalive: a PING after :data:`KEEPALIVE` s of silence, a new connection after
  :data:`SILENCE` s (a server gone without closing the connection);
* flood control (:mod:`gateway.ircflood`): lines wait while disconnected or before a
  channel is joined, within the same bounded queues.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import irc.client
import irc.connection

from gateway.ircflood import Throttle

log = logging.getLogger(__name__)

#: Nicks tried on one connection before giving up on it (then back off and retry).
MAX_NICK_TRIES = 10
#: Seconds without a line from the server before the relay PINGs it (a server that
#: vanished without closing the TCP connection is otherwise never noticed).
KEEPALIVE = 60.0
#: Seconds without a line from the server (PINGs unanswered) before the connection is
#: dropped and a new one made.
SILENCE = 180.0
#: Nick length servers accept at least (RFC 2812 says 9; every current network allows 30).
MAX_NICK_CHARS = 30


class Relay:
    """Keep a connection to ``conf``'s server, join the channels, send what is due."""

    def __init__(self, conf: Any, channels: list[str], *,
                 clock: Callable[[], float] = time.monotonic):
        self.conf = conf
        self.channels = channels
        self.clock = clock
        now = clock()
        self.throttle = Throttle(lines_per_minute=conf.lines_per_minute, burst=conf.burst,
                                 queue_lines=conf.queue_lines,
                                 server_lines_per_minute=conf.server_lines_per_minute,
                                 server_burst=conf.server_burst, now=now)
        self.reactor = irc.client.Reactor()
        self.connection: irc.client.ServerConnection | None = None
        self.welcomed = False
        self.joined: set[str] = set()
        self.failures = 0
        self.connects = 0
        self.next_attempt = now
        self.welcome_deadline: float | None = None
        self.nicks_tried: list[str] = []
        self.keepalive = KEEPALIVE
        self.silence = SILENCE
        self.last_heard = now
        self.last_ping = now
        self.reactor.add_global_handler("all_raw_messages", self._on_any, -20)
        for event, handler in (("welcome", self._on_welcome),
                               ("nicknameinuse", self._on_nick_taken),
                               ("nickcollision", self._on_nick_taken),
                               ("unavailresource", self._on_nick_taken),
                               ("join", self._on_join),
                               ("kick", self._on_kick),
                               ("disconnect", self._on_disconnect)):
            self.reactor.add_global_handler(event, handler)

    # -- public ----------------------------------------------------------------------------
    @property
    def nick(self) -> str | None:
        return self.connection.get_nickname() if self.connection else None

    def offer(self, channel: str, text: str) -> None:
        self.throttle.offer(channel.lower(), text, self.clock())

    def step(self, timeout: float = 0.05) -> None:
        """Read the server for up to ``timeout`` s, reconnect when due, send what may go."""
        now = self.clock()
        if self.connection is None and now >= self.next_attempt:
            self._connect()
        elif (self.connection is not None and not self.welcomed
              and self.welcome_deadline is not None and now >= self.welcome_deadline):
            log.warning("irc: no welcome from %s:%s within %s s", self.conf.host,
                        self.conf.port, self.conf.connect_timeout)
            self._drop("no welcome")
        elif self.connection is not None and self.welcomed:
            self._keep_alive(now)
        self.reactor.process_once(timeout)
        self._pump()

    def close(self, message: str = "busgate irc stopping") -> None:
        if self.connection is not None:
            connection, self.connection = self.connection, None
            with contextlib.suppress(irc.client.ServerNotConnectedError):
                connection.quit(message)
            connection.close()

    # -- connection --------------------------------------------------------------------------
    def _connect(self) -> None:
        conf = self.conf
        self.welcomed = False
        self.joined.clear()
        self.nicks_tried = [conf.nick]
        connection = self.reactor.server()
        try:
            connection.connect(conf.host, conf.port, conf.nick,
                               password=conf.password or None, username="busgate",
                               ircname="busgate bus relay",
                               connect_factory=irc.connection.Factory(wrapper=self._wrap))
        except (irc.client.ServerConnectionError, OSError) as exc:
            self._failed(f"cannot connect: {exc}")
            return
        self.connection = connection
        self.connects += 1
        self.last_heard = self.last_ping = self.clock()
        self.welcome_deadline = self.clock() + conf.connect_timeout
        log.info("irc: connected to %s:%s as %s", conf.host, conf.port, conf.nick)

    def _wrap(self, sock: socket.socket) -> socket.socket:
        """Bound the TCP connect (the library would wait forever) and add TLS."""
        sock.settimeout(self.conf.connect_timeout)
        if not self.conf.tls:
            return sock
        context = ssl.create_default_context()
        if not self.conf.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context.wrap_socket(sock, server_hostname=self.conf.host)

    def _keep_alive(self, now: float) -> None:
        quiet = now - self.last_heard
        if quiet >= self.silence:
            self._drop(f"the server said nothing for {quiet:.0f} s")
        elif quiet >= self.keepalive and now - self.last_ping >= self.keepalive:
            self.last_ping = now
            with contextlib.suppress(irc.client.ServerNotConnectedError):
                self.connection.ping("busgate")  # type: ignore[union-attr]

    def _failed(self, why: str) -> None:
        self.failures += 1
        wait = min(self.conf.reconnect_max,
                   self.conf.reconnect_min * 2 ** min(self.failures - 1, 30))
        wait *= 1 + random.uniform(0, 0.1)
        self.next_attempt = self.clock() + wait
        log.warning("irc: %s:%s: %s; retrying in %.1f s (failure %d in a row)",
                    self.conf.host, self.conf.port, why, wait, self.failures)

    def _drop(self, why: str) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()  # no "disconnect" handler run: we count it here
        self.welcomed = False
        self._failed(why)

    # -- events --------------------------------------------------------------------------------
    def _on_any(self, connection: Any, event: Any) -> None:
        self.last_heard = self.clock()

    def _on_welcome(self, connection: Any, event: Any) -> None:
        self.welcomed = True
        self.failures = 0
        self.welcome_deadline = None
        log.info("irc: welcomed as %s; joining %s", connection.get_nickname(),
                 ", ".join(self.channels))
        for channel in self.channels:
            connection.join(channel)

    def _on_nick_taken(self, connection: Any, event: Any) -> None:
        if self.welcomed:  # a later NICK change refused: keep the nick we have
            return
        if len(self.nicks_tried) >= MAX_NICK_TRIES:
            self._drop(f"nicks {', '.join(self.nicks_tried)} all taken")
            return
        nick = self._next_nick()
        log.warning("irc: nick %s is taken; trying %s", self.nicks_tried[-1], nick)
        self.nicks_tried.append(nick)
        connection.nick(nick)

    def _next_nick(self) -> str:
        for alt in self.conf.alt_nicks:
            if alt not in self.nicks_tried:
                return alt
        base = self.conf.nick
        suffix = "_" * (len(self.nicks_tried) - len(self.conf.alt_nicks))
        nick = (base + suffix)[:MAX_NICK_CHARS]
        if nick in self.nicks_tried:  # no room for more "_": vary the last characters
            nick = f"{base[:MAX_NICK_CHARS - 3]}{len(self.nicks_tried):03d}"
        return nick

    def _on_join(self, connection: Any, event: Any) -> None:
        if irc.client.NickMask(event.source).nick == connection.get_nickname():
            self.joined.add(event.target.lower())

    def _on_kick(self, connection: Any, event: Any) -> None:
        if event.arguments and event.arguments[0] == connection.get_nickname():
            channel = event.target.lower()
            self.joined.discard(channel)
            log.warning("irc: kicked from %s; rejoining", event.target)
            connection.join(event.target)

    def _on_disconnect(self, connection: Any, event: Any) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        self.welcomed = False
        self.joined.clear()
        self._failed(f"disconnected ({' '.join(event.arguments) or 'connection closed'})")

    # -- sending ---------------------------------------------------------------------------------
    def _pump(self) -> None:
        if self.connection is None or not self.welcomed:
            return
        connection = self.connection
        for channel, text in self.throttle.due(self.clock(), self.joined):
            try:
                connection.privmsg(channel, text)
            except irc.client.ServerNotConnectedError:
                return
            except (irc.client.InvalidCharacters, irc.client.MessageTooLong) as exc:
                log.warning("irc: line for %s not sent: %s", channel, exc)
