"""Load ``busgate.toml`` plus ``conf.d/*.toml`` drop-ins into typed, frozen settings.

One loader, one set of defaults (the dataclass defaults, which work on one
machine with no server). Unknown keys and wrong types are errors that name the
file and the key; the command line turns them into exit code 2.

The core's own tables are the typed fields of :class:`Settings`. A source's table
(``[dak]``, ``[debbugs]``...) belongs to the source: its dataclass and its checks
come from the source registry (:mod:`gateway.sources`), which is read only when a
file has such a table or a source's settings are asked for. A file with core tables
only, and every short-lived command that reads no source's settings, never loads it.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
import sys
import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import endpoints, spool, topics
from gateway.errors import ConfigError, TopicError

CONFIG_ENV = "BUSGATE_CONFIG"


@dataclass(frozen=True)
class PublisherSettings:
    """``[publisher]``: who this publisher is on the bus."""

    #: This publisher's name: subscribers track seq_id under it and ask its replay endpoint.
    name: str = "busgate"
    #: The ``username`` field of envelopes; empty means the Unix user running busgate.
    username: str = ""


@dataclass(frozen=True)
class StateSettings:
    """``[state]``: where the state database, spool and marks live."""

    #: Directory for the SQLite state database (outbox, cursors, quarantine).
    dir: str = "var"
    #: Spool directory that short-lived commands write into; empty means ``<dir>/spool``.
    spool: str = ""
    #: How often the daemon scans the spool for new items, in milliseconds.
    spool_poll_ms: int = 5
    #: Outbox retention: published rows beyond this many newest are pruned (0: keep all).
    outbox_max_rows: int = 0
    #: Outbox retention: published rows older than this many days are pruned (0: keep all).
    outbox_max_age_days: float = 0
    #: A pruned event's key still refuses a repeat this many days after the event (dedup).
    dedup_days: float = 60
    #: Pruned keys kept for dedup (about 30 bytes each): the oldest are forgotten a run
    #: (65,536 seq_ids) at a time, once the newer runs hold this many; up to a run more.
    dedup_max_keys: int = 5_000_000


@dataclass(frozen=True)
class ZmqSettings:
    """``[zmq]``: the ZeroMQ publish and replay endpoints and their bounds."""

    #: Publish on ZeroMQ; false runs AMQP only (no socket bound, no cursor held back).
    enabled: bool = True
    #: Where the PUB socket binds.
    publish: str = "tcp://127.0.0.1:9940"
    #: Where the replay REP socket binds (empty disables replay).
    replay: str = "tcp://127.0.0.1:9941"
    #: Messages queued per subscriber before ZeroMQ would drop for it.
    sndhwm: int = 10000
    #: How long the publisher waits for a full subscriber before dropping for it (counted).
    hwm_wait_ms: int = 200
    #: Seconds between heartbeats carrying the latest seq_id (0 disables).
    heartbeat_interval: float = 5.0
    #: Largest number of messages one replay reply may carry (paged requests get the rest
    #: in further pages).
    replay_max_messages: int = 100000
    #: Most bytes of envelopes one replay reply may carry (paged like the count).
    replay_max_bytes: int = 8 * 1024 * 1024
    #: Largest replay request frame; libzmq hangs up on a larger one before allocating it.
    replay_max_request_bytes: int = 65536
    #: Bytes one replay connection may send in all before it is hung up on.
    replay_max_peer_bytes: int = 1024 * 1024
    #: Replay connections at once; the newest past it are hung up on.
    replay_max_peers: int = 256
    #: Largest subscription frame a subscriber may send (a topic is at most 255 bytes).
    max_subscription_bytes: int = 1024
    #: Subscription bytes one subscriber may send (plus 64 a second connected) before it
    #: is hung up on; its subscriptions are freed with it.
    max_peer_subscription_bytes: int = 16384
    #: Subscription bytes all subscribers together may send; past it the biggest senders
    #: are hung up on.
    max_total_subscription_bytes: int = 512 * 1024
    #: Subscribers at once; the newest past it are hung up on.
    max_subscribers: int = 1000


@dataclass(frozen=True)
class AmqpSettings:
    """``[amqp]``: the optional RabbitMQ transport."""

    #: Publish every outbox event to RabbitMQ too (fedora-messaging's wire format).
    enabled: bool = False
    #: Broker URL, ``amqp://user:password@host:port/vhost`` or ``amqps://`` (TLS).
    url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    #: Virtual host; empty means the one in ``url`` (``/`` when the URL names none).
    vhost: str = ""
    #: CA bundle to verify the broker's certificate (amqps); empty means the system's.
    tls_ca_file: str = ""
    #: Client certificate and key for amqps (EXTERNAL or mutual TLS); empty means none.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: Exchange messages are published to, routing key = topic (fedora-messaging's).
    exchange: str = "amq.topic"
    #: Where a message no queue is bound for goes: an exchange busgate publishes the
    #: returned message to, and the durable queue bound to it (kept, counted).
    alternate_exchange: str = "busgate.unroutable"
    unroutable_queue: str = "busgate.unroutable"
    #: Only check (passively) that the exchanges and the queue exist instead of declaring
    #: them: for a broker whose topology the operator owns.
    passive: bool = False
    #: Messages published and not yet confirmed at most (pipelined publisher confirms).
    confirm_window: int = 1000
    #: Reconnect back-off: first wait and longest wait, in seconds (doubling, jittered).
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    #: Seconds to connect and open the channel before counting a failed attempt.
    connect_timeout: float = 10.0
    #: AMQP heartbeat in seconds (0 disables it).
    heartbeat: int = 60
    #: Consumers (``busgate tail --amqp``, the AMQP subscriber): unacked messages at once,
    #: and the largest message body taken (a larger one is rejected without requeue).
    prefetch: int = 100
    max_message_bytes: int = 1048576


@dataclass(frozen=True)
class DiscoverySettings:
    """``[discovery]``: the other publishers subscribers connect to."""

    #: Text file of other publishers, one ``name pub-url replay-url`` a line.
    endpoints_file: str = ""
    #: Domains whose ``_busgate._tcp`` (then ``_fedmsg._tcp``) SRV records list publishers.
    srv_domains: list[str] = field(default_factory=list)
    #: DNS server for SRV look-ups as ``host`` or ``host:port``; empty uses the system resolver.
    nameserver: str = ""
    #: Whether ``busgate tail`` also subscribes to this gateway's own endpoints.
    include_self: bool = True


#: Values of ``signing.backend`` and ``signing.hash``.
SIGNING_BACKENDS = ("none", "x509", "openpgp")
SIGNING_HASHES = ("sha1", "sha256")


@dataclass(frozen=True)
class SigningSettings:
    """``[signing]``: how stored envelopes are signed and verified."""

    #: How this publisher signs what it stores: ``none``, ``x509`` (fedmsg-compatible) or
    #: ``openpgp`` (detached signature over the whole envelope).
    backend: str = "none"
    #: x509: this publisher's certificate (PEM).
    cert: str = ""
    #: x509: its private key (unencrypted PEM); openpgp: the secret key file (TSK).
    key: str = ""
    #: x509: digest of the RSA PKCS#1 v1.5 signature; ``sha1`` is what stock fedmsg checks.
    hash: str = "sha1"
    #: Subscribers: refuse invalid, unsigned or out-of-policy messages whenever a trust
    #: anchor (``ca`` or ``keyring``) is set; ``false`` is the explicit opt-out.
    validate_signatures: bool = True
    #: x509: CA certificates (PEM bundle) a publisher's certificate must be issued by.
    ca: str = ""
    #: x509: the CA's certificate revocation list (PEM or DER); re-read when it changes.
    crl: str = ""
    #: openpgp: keyring files (binary or armored) of the publishers' keys; re-read on change.
    keyring: list[str] = field(default_factory=list)
    #: TOML file mapping topic prefixes to the identities (certificate CN, OpenPGP
    #: fingerprint) allowed to sign them; empty allows any valid signer on any topic.
    routing_policy: str = ""
    #: Refuse a topic the routing policy does not cover (fedmsg's ``routing_nitpicky``).
    routing_nitpicky: bool = False
    #: Seconds a live message may be older than its ``timestamp`` (a validly signed message
    #: sent again much later is refused; replayed messages are exempt); 0 disables.
    max_age: float = 86400.0


@dataclass(frozen=True)
class MailSettings:
    """``[mail]``: mail input bounds."""

    #: Largest mail accepted for parsing, in bytes; larger mail goes to quarantine.
    max_size: int = spool.MAIL_MAX_SIZE
    #: Longest single header (name and folded value) parsed, in bytes; a mail with a longer
    #: one is quarantined before any header is decoded.
    max_header_bytes: int = 65536


@dataclass(frozen=True)
class IngestSettings:
    """``[ingest]``: what the spool worker reads at most (shared with ``publish``)."""

    #: Largest ``events`` spool item (``busgate publish``, git hook) read, in bytes; a larger
    #: one is quarantined as oversize without being read.
    max_item_bytes: int = 64 * 1024 * 1024
    #: Deepest nesting of arrays/objects accepted in a JSON event body.
    max_json_depth: int = 64
    #: Worker deaths (crash, OOM kill, kill -9) while ingesting one item before it is
    #: quarantined as ``crashed`` instead of being parsed again.
    max_crashes: int = 2
    #: Most spool items whose events the worker commits in one transaction (group
    #: commit: one fsync for many small items); 1 commits item by item.
    group_items: int = 500
    #: Most bytes of spool items held in memory for one group (one larger item is
    #: committed alone).
    group_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class QuarantineSettings:
    """``[quarantine]``: how much refused input is kept."""

    #: Most quarantined inputs kept; beyond it a new one is only logged and counted.
    max_items: int = 10000
    #: Most raw bytes kept over all quarantined inputs; beyond it a new one keeps its
    #: reason and size but not its bytes (counted as quarantine.raw_dropped).
    max_bytes: int = 256 * 1024 * 1024
    #: Bytes kept from the head of an input over its size limit.
    oversize_keep_bytes: int = spool.OVERSIZE_KEEP


@dataclass(frozen=True)
class SmtpSettings:
    """``[smtp]``: the optional SMTP listener."""

    #: Run the SMTP listener inside ``busgate run``.
    enabled: bool = False
    #: Address the listener binds.
    host: str = "127.0.0.1"
    #: TCP port the listener binds.
    port: int = 8025
    #: Recipient addresses accepted (case-insensitive); any other gets 550.
    recipients: list[str] = field(default_factory=list)
    #: Name in the greeting and EHLO reply; empty means this machine's host name (no DNS look-up).
    hostname: str = ""
    #: Seconds a client may stay idle before the listener hangs up.
    timeout: float = 300.0
    #: Seconds one connection may last in all; then 421 and hang up.
    session_timeout: float = 1800.0
    #: Simultaneous connections; one more gets 421 and is closed.
    max_connections: int = 100
    #: Recipients in one mail; the next RCPT gets 452 (RFC 5321 4.5.3.1.10).
    max_recipients: int = 100
    #: Times one command may be sent in one connection; then 421 and hang up.
    max_commands: int = 1000
    #: Bytes of unfinished mails all sessions together may hold in spool/tmp.
    max_inflight_bytes: int = 268435456
    #: File descriptors kept free for the rest of the daemon; fewer sessions if the limit is low.
    fd_reserve: int = 128


#: Values of ``[log] format``.
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class MetricsSettings:
    """``[metrics]``: the Prometheus and health endpoints."""

    #: Serve Prometheus ``/metrics`` and ``/live`` ``/ready`` inside ``busgate run``.
    enabled: bool = False
    #: Address the metrics server binds (keep it local: the numbers name sources).
    host: str = "127.0.0.1"
    #: TCP port the metrics server binds.
    port: int = 9942


#: ``[history]`` live-stream keys and their ranges (check-config names the one outside).
STREAM_RANGES = (("stream_stall", 0.05, 60), ("stream_keepalive", 1, 300),
                 ("stream_resume", 1, 100_000), ("chart_refresh", 5, 3600))
#: Most concurrent transactions a PostgreSQL batch is written in (``history.write_parts``).
MAX_WRITE_PARTS = 16


@dataclass(frozen=True)
class HistorySettings:
    """``[history]``: the recorder and its web API."""

    #: Run the recorder (``busgate record``) inside ``busgate run``.
    enabled: bool = False
    #: The history database: a path (SQLite) or a ``postgresql://`` URL; empty means
    #: ``<state.dir>/history.sqlite``.
    database: str = ""
    #: PostgreSQL history only: the recorder's position file; empty means
    #: ``<state.dir>/history-position.sqlite`` (SQLite keeps it in the history itself).
    position: str = ""
    #: PostgreSQL history only: most connections one process opens to it.
    pool_size: int = 4
    #: PostgreSQL history only: concurrent transactions (server backends) a recorder's
    #: batch of 500+ is written in; at most ``pool_size``.
    write_parts: int = 2
    #: Publishers to record, each ``PUB[,REPLAY]``; empty means discovery's (this
    #: gateway's own endpoints, ``[discovery]``).
    endpoints: list[str] = field(default_factory=list)
    #: Record from this durable RabbitMQ queue (``[amqp]`` url) instead of ZeroMQ.
    amqp_queue: str = ""
    #: ``busgate web``: address and port the datagrepper-compatible API binds.
    host: str = "127.0.0.1"
    port: int = 9943
    #: ``busgate web``: seconds one query may run before it is cut off (503).
    query_timeout: float = 5.0
    #: ``busgate web``: highest ``page`` served (page * rows_per_page rows are skipped:
    #: deeper paging goes through the ``cursor`` the answer gives).
    max_page: int = 100
    #: ``busgate web``: most values of one repeatable parameter (``topic``, ``user``...).
    max_values: int = 50
    #: Recorder: messages per transaction (with their position), and the longest a
    #: batch waits for more, in milliseconds (1 = a transaction per message).
    batch_messages: int = 1000
    batch_ms: int = 100
    #: SQLite page cache of the recorder's connection, in MiB.
    cache_mb: int = 64
    #: ``/raw``: ``total`` is counted exactly up to this many matches, then given as
    #: this number with ``total_capped: true`` (a count of a million rows is slow).
    count_limit: int = 10000
    #: ``/raw`` (SQLite and PostgreSQL): milliseconds the count may run (0: up to
    #: ``query_timeout``); past it ``total`` is the lower bound the page proves, with
    #: ``total_capped: true`` (a frequent word's count cost 270-414 ms at
    #: a million on PostgreSQL, a frequent user's with a topic 1.3 s on SQLite).
    count_budget_ms: int = 150
    #: Outbox retention keeps rows the recorder (``enabled = true``) has not stored.
    retain_unrecorded: bool = True
    #: ``busgate web``: most live dashboard streams (``/v2/stream``) open at once (503 past).
    max_streams: int = 100
    #: ``busgate web``: messages queued per live stream; a client that falls this far
    #: behind is cut off (its browser reconnects and resumes) instead of slowing others.
    stream_queue: int = 256
    #: ``busgate web``: seconds a live stream whose queue is full gets to make room before
    #: it is cut off (the longest one stalled reader delays the others, once).
    stream_stall: float = 1.0
    #: ``busgate web``: seconds of silence after which a live stream sends a keep-alive
    #: comment (proxies close idle connections).
    stream_keepalive: float = 15.0
    #: ``busgate web``: most messages a reconnecting stream is sent from before it
    #: connected (``Last-Event-ID``); further behind, it is told of the gap instead.
    stream_resume: int = 1000
    #: ``busgate web``: seconds between the dashboard's re-reads of its charts
    #: (``/v2/activity``); live messages update the current bar in between.
    chart_refresh: float = 60.0


@dataclass(frozen=True)
class LogSettings:
    """``[log]``: the log format, or a logging configuration file."""

    #: ``text`` (one human line per record) or ``json`` (one JSON object per line);
    #: ``busgate run --log-format`` overrides it.
    format: str = "text"
    #: A logging configuration file (``.json``/``.toml``: logging.config.dictConfig;
    #: anything else: fileConfig INI) used instead of ``format``; empty: none.
    config: str = ""


@dataclass(frozen=True)
class IrcRoute:
    """One row of ``busgate irc``'s routing table: messages matching every non-empty filter
    go to ``channels`` (topics are prefixes, with or without ``org.<d>.<env>.``)."""

    channels: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class IrcSettings:
    """``busgate irc``: the IRC server, who the relay is there, where lines go, how fast."""

    host: str = "127.0.0.1"
    port: int = 6667
    tls: bool = False
    #: Verify the server's certificate (with ``tls``); off only for a private test server.
    tls_verify: bool = True
    nick: str = "busgate"
    #: Nicks tried in turn when the server says the nick is taken (433); after them,
    #: ``nick`` with a growing ``_`` suffix.
    alt_nicks: list[str] = field(default_factory=list)
    #: A server password (PASS); empty: none.
    password: str = ""
    #: Channels joined (every route's channels are joined too).
    channels: list[str] = field(default_factory=list)
    #: The routing table; without routes, every message goes to every channel.
    routes: list[IrcRoute] = field(default_factory=list)
    #: Lines each channel may receive per minute (sustained) ...
    lines_per_minute: int = 12
    #: ... and at once after a quiet spell.
    burst: int = 4
    #: Lines a channel may hold waiting for its budget; past that, one "N more messages"
    #: line stands for the rest.
    queue_lines: int = 8
    #: Lines per minute the whole connection may send (all channels): kept under the
    #: server's flood limit, so the relay is never disconnected or banned for flooding.
    server_lines_per_minute: int = 30
    #: Lines the connection may send at once after a quiet spell.
    server_burst: int = 4
    #: Longest text of a line, in UTF-8 bytes: with ``PRIVMSG <channel> :`` and the
    #: ``:nick!user@host`` prefix the server adds for readers (up to ~100 bytes), a
    #: line must stay within IRC's 512, or the server cuts it (and maybe the link).
    max_line_bytes: int = 350
    #: Reconnect back-off: first wait, and longest wait, in seconds.
    reconnect_min: float = 2.0
    reconnect_max: float = 300.0
    #: Seconds to wait for the server's welcome before counting the attempt failed.
    connect_timeout: float = 20.0


@dataclass(frozen=True)
class Settings:
    """The whole configuration: core tables, then the sources' (``sources``)."""

    #: Second topic token: ``org.<distribution>``.
    distribution: str = "debian"
    #: Third topic token.
    env: str = "dev"
    #: Allowed values of ``env``.
    envs: list[str] = field(default_factory=lambda: list(topics.DEFAULT_ENVS))
    publisher: PublisherSettings = field(default_factory=PublisherSettings)
    state: StateSettings = field(default_factory=StateSettings)
    zmq: ZmqSettings = field(default_factory=ZmqSettings)
    amqp: AmqpSettings = field(default_factory=AmqpSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    signing: SigningSettings = field(default_factory=SigningSettings)
    mail: MailSettings = field(default_factory=MailSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    quarantine: QuarantineSettings = field(default_factory=QuarantineSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    history: HistorySettings = field(default_factory=HistorySettings)
    irc: IrcSettings = field(default_factory=IrcSettings)
    #: The sources' tables (``settings.section("debbugs")``, or ``settings.debbugs``).
    sources: SourceSections = field(default_factory=lambda: SourceSections())
    #: Files the settings were read from, in order (not a TOML key).
    loaded_from: tuple[str, ...] = field(default=(), compare=False)

    def __getattr__(self, name: str) -> Any:
        """``settings.<table>`` of a source (only reached when no field has the name)."""
        sections = self.__dict__.get("sources")
        if name.startswith("_") or sections is None:
            raise AttributeError(name)
        try:
            return sections[name]
        except KeyError:
            raise AttributeError(f"no setting or source table named {name!r}") from None

    def section(self, name: str) -> Any:
        """The settings of table ``name``: a core table or a source's (KeyError if none)."""
        if name in _CORE_TABLES:
            return getattr(self, name)
        return self.sources[name]

    def with_section(self, name: str, **changes: Any) -> Settings:
        """These settings with keys of table ``name`` changed (``dataclasses.replace`` for
        a table, core or source); an unknown key raises TypeError as ``replace`` does."""
        table = dataclasses.replace(self.section(name), **changes)
        if name in _CORE_TABLES:
            return dataclasses.replace(self, **{name: table})
        return dataclasses.replace(self, sources=self.sources.with_table(name, table))

    @property
    def topic_prefix(self) -> str:
        return f"org.{self.distribution}.{self.env}"

    @property
    def state_dir(self) -> Path:
        return Path(self.state.dir)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "busgate.sqlite"

    @property
    def history_path(self) -> Path:
        return Path(self.history.database) if self.history.database \
            else self.state_dir / "history.sqlite"

    @property
    def spool_dir(self) -> Path:
        return Path(self.state.spool) if self.state.spool else self.state_dir / "spool"

    @property
    def username(self) -> str:
        return self.publisher.username or _unix_user()


class SourceSections(Mapping[str, Any]):
    """The sources' tables by name: those the files set, else each source's defaults,
    built on first use (which reads the registry). Equal when every table is equal."""

    def __init__(self, tables: Mapping[str, Any] | None = None,
                 unread: Mapping[str, Any] | None = None,
                 origin: Mapping[str, str] | None = None):
        self._tables = dict(tables or {})
        self._defaults: dict[str, Any] = {}
        #: Tables of the files not built yet (``load(sources=False)``), built on first use.
        self._unread = dict(unread or {})
        self._origin = dict(origin or {}) if unread else {}

    def _read(self) -> None:
        if self._unread:
            self._tables.update(_build_sources(self._unread, self._origin))
            self._unread.clear()

    @property
    def explicit(self) -> dict[str, Any]:
        """The tables the configuration files set."""
        self._read()
        return dict(self._tables)

    def __getitem__(self, name: str) -> Any:
        self._read()
        if name in self._tables:
            return self._tables[name]
        if name not in self._defaults:
            from gateway import sources

            source = sources.by_section(name)
            if source is None:
                raise KeyError(name)
            self._defaults[name] = source.settings()
        return self._defaults[name]

    def _names(self) -> list[str]:
        from gateway import sources

        self._read()
        names = list(sources.sections())
        return names + [n for n in self._tables if n not in names]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SourceSections):
            return NotImplemented
        self._read()
        other._read()
        if self._tables.keys() == other._tables.keys():
            return self._tables == other._tables
        return dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SourceSections({self._tables!r})"

    def with_table(self, name: str, table: Any) -> SourceSections:
        self._read()
        return SourceSections({**self._tables, name: table})


def _core_tables() -> frozenset[str]:
    tables = set()
    for f in dataclasses.fields(Settings):
        factory = f.default_factory
        if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory()):
            tables.add(f.name)
    return frozenset(tables)


#: The core's tables (typed fields of Settings); every other table is a source's.
_CORE_TABLES = _core_tables()
#: Fields of Settings that are not keys of a file.
_NOT_KEYS = frozenset(("sources", "loaded_from"))
#: Top-level keys of the core (tables and plain values).
_CORE_FIELDS = frozenset(f.name for f in dataclasses.fields(Settings)) - _NOT_KEYS


def enabled_transports(settings: Settings) -> list[str]:
    """The transports ``busgate run`` publishes on (each has its outbox cursor)."""
    return [name for name, on in (("zmq", settings.zmq.enabled),
                                  ("amqp", settings.amqp.enabled)) if on]


def _unix_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def load(path: str | os.PathLike[str] | None = None, *, sources: bool = True) -> Settings:
    """Settings from ``path`` (or ``$BUSGATE_CONFIG``) and its ``conf.d/``, else defaults.

    ``sources=False`` leaves the sources' tables unread until one is asked for (then
    built and type-checked, without their ``validate``): for a command that needs
    none of them and must not pay for the registry (the MTA pipe)."""
    chosen = path if path is not None else os.environ.get(CONFIG_ENV) or None
    if chosen is None:
        return Settings()
    main = Path(chosen)
    files = [main]
    dropins = main.parent / "conf.d"
    if dropins.is_dir():
        files += sorted(p for p in dropins.glob("*.toml") if p.is_file())
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for file in files:
        _merge(merged, _read(file), origin, str(file), prefix="")
    core = {k: v for k, v in merged.items() if k in _CORE_FIELDS}
    settings = _build(Settings, core, origin, "")
    raw = {k: v for k, v in merged.items() if k not in _CORE_FIELDS}
    files_read = tuple(str(f) for f in files)
    if not sources:
        settings = dataclasses.replace(settings, sources=SourceSections(unread=raw,
                                                                        origin=origin),
                                       loaded_from=files_read)
        _check(settings, origin)
        return settings
    tables = _build_sources(raw, origin)
    settings = dataclasses.replace(settings, sources=SourceSections(tables),
                                   loaded_from=files_read)
    _check(settings, origin)
    check_sources(settings, origin, names=list(tables))
    return settings


def _read(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("file not found", path=str(file)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(file)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=str(file)) from None


def _merge(into: dict[str, Any], new: dict[str, Any], origin: dict[str, str], file: str,
           prefix: str) -> None:
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, origin, file, f"{dotted}.")
        else:
            into[key] = value
            origin[dotted] = file
            if isinstance(value, dict):
                for sub in _walk(value, f"{dotted}."):
                    origin[sub] = file


def _walk(table: dict[str, Any], prefix: str) -> list[str]:
    keys = []
    for key, value in table.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys += _walk(value, f"{prefix}{key}.")
    return keys


#: Annotation strings (``from __future__ import annotations``) of setting fields -> type.
_SCALARS: dict[str, Any] = {"bool": bool, "int": int, "float": float, "str": str,
                            "list[str]": list[str]}
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """Field name -> type of a settings dataclass. The usual annotations are resolved by
    name (``typing.get_type_hints`` evaluates each string on every load: a cost the git
    hook pays on every push); anything else goes to ``get_type_hints``."""
    hints = _HINTS.get(cls)
    if hints is None:
        scope = vars(sys.modules[cls.__module__])
        hints = {}
        for f in dataclasses.fields(cls):
            kind = f.type
            if isinstance(kind, str):
                kind = _SCALARS.get(kind) or scope.get(kind)
            if kind is None:
                hints = typing.get_type_hints(cls)
                break
            hints[f.name] = kind
        _HINTS[cls] = hints
    return hints


def _build(cls: type, table: dict[str, Any], origin: dict[str, str], prefix: str) -> Any:
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - (_NOT_KEYS if cls is Settings else set())
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            valid = ", ".join(sorted(names))
            raise ConfigError(f"unknown key (valid here: {valid})", path=origin.get(dotted),
                              key=dotted)
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, _table(value, origin, dotted), origin,  # type: ignore[arg-type]
                                 f"{dotted}.")
        elif _table_list(kind):
            kwargs[key] = _build_list(kind.__args__[0], value, origin, dotted)
        else:
            kwargs[key] = _coerce(kind, value, origin.get(dotted), dotted)
    return cls(**kwargs)


def _table_list(kind: Any) -> bool:
    """``list[SomeSettings]``: an array of tables (``[[irc.routes]]``)."""
    return getattr(kind, "__origin__", None) is list and dataclasses.is_dataclass(
        kind.__args__[0])


def _build_list(cls: type, value: Any, origin: dict[str, str], key: str) -> list[Any]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError("must be an array of tables", path=origin.get(key), key=key)
    return [_build(cls, item, origin, f"{key}.") for item in value]


def _table(value: Any, origin: dict[str, str], key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError("must be a table", path=origin.get(key), key=key)
    return value


def _build_sources(tables: dict[str, Any], origin: dict[str, str]) -> dict[str, Any]:
    """The sources' tables the files set, each built as its source's dataclass (an
    unknown table names the valid ones)."""
    if not tables:
        return {}
    from gateway import sources

    known = sources.sections()
    built: dict[str, Any] = {}
    for name, value in tables.items():
        if name in _CORE_TABLES:
            raise sources.RegistryError(f"a source claims the core table [{name}]")
        source = known.get(name)
        if source is None:
            valid = ", ".join(sorted(_CORE_FIELDS | set(known)))
            raise ConfigError(f"unknown key (valid here: {valid})", path=origin.get(name),
                              key=name)
        built[name] = _build(source.settings, _table(value, origin, name), origin, f"{name}.")
    return built


def _coerce(kind: Any, value: Any, path: str | None, key: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"must be true or false, not {value!r}", path=path, key=key)
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"must be an integer, not {value!r}", path=path, key=key)
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"must be a number, not {value!r}", path=path, key=key)
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"must be a string, not {value!r}", path=path, key=key)
    if getattr(kind, "__origin__", None) is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError("must be a list of strings", path=path, key=key)
    raise ConfigError(f"unsupported setting type {kind!r}", path=path, key=key)


def _check(settings: Settings, origin: dict[str, str]) -> None:
    """Cross-field checks that types alone cannot express."""
    try:
        topics.prefix(settings.distribution, settings.env, settings.envs)
    except TopicError as exc:
        key = "distribution" if "distribution" in str(exc) else "env"
        raise ConfigError(str(exc), path=origin.get(key), key=key) from None
    positive = {
        "zmq.sndhwm": settings.zmq.sndhwm,
        "zmq.replay_max_messages": settings.zmq.replay_max_messages,
        "zmq.replay_max_bytes": settings.zmq.replay_max_bytes,
        "zmq.replay_max_request_bytes": settings.zmq.replay_max_request_bytes,
        "zmq.replay_max_peer_bytes": settings.zmq.replay_max_peer_bytes,
        "zmq.replay_max_peers": settings.zmq.replay_max_peers,
        "zmq.max_subscription_bytes": settings.zmq.max_subscription_bytes,
        "zmq.max_peer_subscription_bytes": settings.zmq.max_peer_subscription_bytes,
        "zmq.max_total_subscription_bytes": settings.zmq.max_total_subscription_bytes,
        "zmq.max_subscribers": settings.zmq.max_subscribers,
        "mail.max_size": settings.mail.max_size,
        "mail.max_header_bytes": settings.mail.max_header_bytes,
        "ingest.max_item_bytes": settings.ingest.max_item_bytes,
        "ingest.max_json_depth": settings.ingest.max_json_depth,
        "ingest.max_crashes": settings.ingest.max_crashes,
        "ingest.group_items": settings.ingest.group_items,
        "ingest.group_bytes": settings.ingest.group_bytes,
        "quarantine.max_items": settings.quarantine.max_items,
        "quarantine.max_bytes": settings.quarantine.max_bytes,
        "quarantine.oversize_keep_bytes": settings.quarantine.oversize_keep_bytes,
        "state.spool_poll_ms": settings.state.spool_poll_ms,
        "amqp.confirm_window": settings.amqp.confirm_window,
        "amqp.reconnect_min": settings.amqp.reconnect_min,
        "amqp.connect_timeout": settings.amqp.connect_timeout,
        "amqp.prefetch": settings.amqp.prefetch,
        "amqp.max_message_bytes": settings.amqp.max_message_bytes,
        "history.query_timeout": settings.history.query_timeout,
        "history.max_page": settings.history.max_page,
        "history.max_values": settings.history.max_values,
        "history.count_limit": settings.history.count_limit,
        "history.pool_size": settings.history.pool_size,
        "history.max_streams": settings.history.max_streams,
        "history.stream_queue": settings.history.stream_queue,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"must be greater than 0, not {value}", path=origin.get(key),
                              key=key)
    _check_signing(settings, origin)
    if not 0 < settings.metrics.port < 65536:
        raise ConfigError("must be a TCP port (1-65535)", path=origin.get("metrics.port"),
                          key="metrics.port")
    if settings.log.format not in LOG_FORMATS:
        raise ConfigError(f"must be one of {', '.join(LOG_FORMATS)}",
                          path=origin.get("log.format"), key="log.format")
    if settings.history.count_budget_ms < 0:
        raise ConfigError(f"must be 0 or more, not {settings.history.count_budget_ms}",
                          path=origin.get("history.count_budget_ms"),
                          key="history.count_budget_ms")
    for key in ("outbox_max_rows", "outbox_max_age_days", "dedup_days", "dedup_max_keys"):
        value = getattr(settings.state, key)
        if value < 0:
            raise ConfigError(f"must be 0 or more, not {value}", path=origin.get(f"state.{key}"),
                              key=f"state.{key}")
    if not 0 < settings.history.port < 65536:
        raise ConfigError("must be a TCP port (1-65535)", path=origin.get("history.port"),
                          key="history.port")
    for key, low, high in (("batch_messages", 1, 100_000), ("batch_ms", 1, 5000),
                           ("cache_mb", 1, 4096), ("write_parts", 1, MAX_WRITE_PARTS),
                           *STREAM_RANGES):
        value = getattr(settings.history, key)
        if not low <= value <= high:
            raise ConfigError(f"must be {low}-{high}, not {value}",
                              path=origin.get(f"history.{key}"), key=f"history.{key}")
    # a part is a pool connection: the default 2 with a pool of 1 writes in one part (the
    # store caps it), a value set above the pool is refused
    if settings.history.write_parts > settings.history.pool_size \
            and origin.get("history.write_parts") is not None:
        raise ConfigError(f"must be at most history.pool_size ({settings.history.pool_size}):"
                          " each part is a connection of the pool",
                          path=origin.get("history.write_parts"), key="history.write_parts")
    for spec in settings.history.endpoints:
        for url in spec.split(",", 1):
            problem = endpoints.problem(url)
            if problem:
                raise ConfigError(problem, path=origin.get("history.endpoints"),
                                  key="history.endpoints")
    if not 0 < settings.smtp.port < 65536:
        raise ConfigError("must be a TCP port (1-65535)", path=origin.get("smtp.port"),
                          key="smtp.port")
    if not settings.publisher.name or any(c.isspace() for c in settings.publisher.name):
        raise ConfigError("must be a non-empty name without spaces",
                          path=origin.get("publisher.name"), key="publisher.name")
    _check_enabled(settings, origin)
    _check_amqp(settings, origin)
    _check_irc(settings, origin)
    for key, url in (("zmq.publish", settings.zmq.publish), ("zmq.replay", settings.zmq.replay)):
        problem = endpoints.problem(url, bind=True) if url or key == "zmq.publish" else None
        if problem:
            raise ConfigError(problem, path=origin.get(key), key=key)


def _check_irc(settings: Settings, origin: dict[str, str]) -> None:
    """``[irc]``: a server, a nick and channels IRC accepts, budgets that bound the rate."""
    conf = settings.irc

    def fail(key: str, why: str) -> None:
        raise ConfigError(why, path=origin.get(f"irc.{key}") or origin.get("irc"),
                          key=f"irc.{key}")

    if not conf.host or any(c.isspace() for c in conf.host):
        fail("host", "must be a host name or address")
    if not 0 < conf.port < 65536:
        fail("port", "must be a TCP port (1-65535)")
    for key, nick in [("nick", conf.nick)] + [("alt_nicks", n) for n in conf.alt_nicks]:
        if not IRC_NICK.fullmatch(nick):
            fail(key, f"{nick!r} is not an IRC nick (a letter or []\\`_^{{|}}, then those, "
                      "digits or -; at most 30)")
    routed = [("channels", c) for c in conf.channels] + [
        (f"routes[{i}].channels", c) for i, r in enumerate(conf.routes) for c in r.channels]
    for key, channel in routed:
        if not IRC_CHANNEL.fullmatch(channel):
            fail(key, f"{channel!r} is not an IRC channel (# or & then no space, comma or "
                      "control character; at most 50)")
    for number, route in enumerate(conf.routes):
        if not route.channels:
            fail(f"routes[{number}].channels", "a route needs at least one channel")
    for key in ("lines_per_minute", "burst", "queue_lines", "server_lines_per_minute",
                "server_burst", "reconnect_min", "reconnect_max", "connect_timeout"):
        if getattr(conf, key) <= 0:
            fail(key, f"must be greater than 0, not {getattr(conf, key)}")
    if conf.reconnect_max < conf.reconnect_min:
        fail("reconnect_max", "must be at least reconnect_min")
    if not 100 <= conf.max_line_bytes <= 400:
        fail("max_line_bytes", "must be 100-400 (an IRC line is 512 bytes with the command, "
                               "the channel and the sender's prefix)")


#: A nick IRC servers accept (RFC 2812, with the usual 30-character limit).
IRC_NICK = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]{0,29}")
#: A channel name (RFC 2812: no space, comma, BEL, NUL, CR or LF; at most 50).
IRC_CHANNEL = re.compile(r"[#&][^\x00-\x20,\x7f]{1,49}")


def _check_signing(settings: Settings, origin: dict[str, str]) -> None:
    """The ``[signing]`` keys a backend or a validating subscriber needs (the files are read
    by :mod:`gateway.signing` and :mod:`gateway.verify`, which name any that fails)."""
    conf = settings.signing
    for key, value, allowed in (("signing.backend", conf.backend, SIGNING_BACKENDS),
                                ("signing.hash", conf.hash, SIGNING_HASHES)):
        if value not in allowed:
            raise ConfigError(f"must be one of {', '.join(allowed)}, not {value!r}",
                              path=origin.get(key), key=key)
    if conf.max_age < 0:
        raise ConfigError(f"must be 0 (off) or more, not {conf.max_age}",
                          path=origin.get("signing.max_age"), key="signing.max_age")
    needs = {"x509": ("signing.cert", "signing.key"), "openpgp": ("signing.key",)}
    for key in needs.get(conf.backend, ()):
        if not getattr(conf, key.split(".")[1]).strip():
            raise ConfigError(f"the {conf.backend} signing backend needs this file",
                              path=origin.get(key) or origin.get("signing.backend"), key=key)
    files = [("signing.cert", conf.cert), ("signing.key", conf.key), ("signing.ca", conf.ca),
             ("signing.crl", conf.crl), ("signing.routing_policy", conf.routing_policy)]
    files += [("signing.keyring", ring) for ring in conf.keyring]
    for key, file in files:
        if file and not os.path.isfile(file):
            raise ConfigError(f"file {file!r} does not exist", path=origin.get(key), key=key)
    if conf.crl and not conf.ca:
        raise ConfigError("a CRL needs the CA that signed it (signing.ca)",
                          path=origin.get("signing.crl"), key="signing.crl")


def _check_enabled(settings: Settings, origin: dict[str, str]) -> None:
    """What an enabled core part needs before ``busgate run`` can start it (a source's
    needs are its ``validate``'s)."""
    if not settings.zmq.enabled and not settings.amqp.enabled:
        raise ConfigError("no transport is enabled: set zmq.enabled or amqp.enabled to true "
                          "(both may run)", key="zmq.enabled",
                          path=_where(settings, origin, "zmq.enabled"))
    if settings.smtp.enabled and not any(r.strip() for r in settings.smtp.recipients):
        raise ConfigError("the SMTP listener is enabled but accepts no recipient (list at "
                          "least one address)", key="smtp.recipients",
                          path=_where(settings, origin, "smtp.recipients"))


def check_sources(settings: Settings, origin: dict[str, str] | None = None,
                  names: list[str] | None = None) -> None:
    """Run the checks of the sources' tables ``names`` (default: the registry's own
    consistency, then every registered source's table, set or default): a poller's
    ``interval`` and ``schedule``, then the source's own ``validate``. A
    :class:`ConfigError` names the file and the key."""
    from gateway import sources

    origin = origin if origin is not None else {}
    if names is None:
        sources.check(settings)
    table_names = names if names is not None else list(sources.sections())
    for name in table_names:
        source = sources.sections()[name]
        table = settings.sources[name]
        try:
            if source.poller is not None:
                _check_polled(name, table)
            if source.validate is not None:
                source.validate(table, settings)
        except ConfigError as exc:
            if exc.path is not None or exc.key is None:
                raise
            raise ConfigError(exc.message, path=_where(settings, origin, exc.key),
                              key=exc.key) from None


def _check_polled(name: str, table: Any) -> None:
    """What the core schedules a poller by: ``interval`` and ``schedule``."""
    interval = getattr(table, "interval", None)
    if interval is not None and not interval > 0:
        raise ConfigError(f"must be greater than 0, not {interval}", key=f"{name}.interval")
    schedule = getattr(table, "schedule", "")
    if schedule:
        try:
            cron_trigger(schedule)
        except ValueError as exc:
            raise ConfigError(f"not a crontab line ({exc})", key=f"{name}.schedule") from None


def _where(settings: Settings, origin: dict[str, str], key: str) -> str | None:
    """The file to blame for ``key``: the one setting it, else the one that set its
    table's ``enabled`` (or any key of the table), else the main file."""
    table = key.split(".")[0]
    if key in origin:
        return origin[key]
    if f"{table}.enabled" in origin:
        return origin[f"{table}.enabled"]
    for dotted, file in origin.items():
        if dotted == table or dotted.startswith(f"{table}."):
            return file
    return _first(settings)


def _check_amqp(settings: Settings, origin: dict[str, str]) -> None:
    conf = settings.amqp
    problems = {
        "amqp.url": None if conf.url.startswith(("amqp://", "amqps://"))
        else f"must be an amqp:// or amqps:// URL, not {conf.url!r}",
        "amqp.reconnect_max": None if conf.reconnect_max >= conf.reconnect_min
        else "must be at least amqp.reconnect_min",
        "amqp.heartbeat": None if 0 <= conf.heartbeat <= 65535 else "must be 0-65535 seconds",
        "amqp.exchange": None if conf.exchange and len(conf.exchange.encode()) <= 255
        else "must be an exchange name of 1-255 bytes",
        "amqp.alternate_exchange": None if conf.alternate_exchange
        and len(conf.alternate_exchange.encode()) <= 255 else "must be a name of 1-255 bytes",
        "amqp.unroutable_queue": None if conf.unroutable_queue
        and len(conf.unroutable_queue.encode()) <= 255 else "must be a name of 1-255 bytes",
    }
    tls = conf.url.startswith("amqps://")
    for key, file in (("amqp.tls_ca_file", conf.tls_ca_file),
                      ("amqp.tls_cert_file", conf.tls_cert_file),
                      ("amqp.tls_key_file", conf.tls_key_file)):
        if conf.enabled and file and not os.path.isfile(file):
            problems[key] = f"file {file!r} does not exist"
        elif file and not tls:
            problems[key] = "is for an amqps:// url only"
    if conf.tls_key_file and not conf.tls_cert_file:
        problems["amqp.tls_key_file"] = "needs amqp.tls_cert_file"
    for key, problem in problems.items():
        if problem:
            raise ConfigError(problem, path=origin.get(key), key=key)


def _first(settings: Settings) -> str | None:
    return settings.loaded_from[0] if settings.loaded_from else None


def check_writable(settings: Settings) -> None:
    """Refuse (ConfigError naming the key) a state or spool directory ``busgate run`` could
    not write. Creates nothing: a missing directory is judged by its nearest existing parent."""
    origin = settings.loaded_from[0] if settings.loaded_from else None
    for key, directory in (("state.dir", settings.state_dir), ("state.spool", settings.spool_dir)):
        problem = _unwritable(directory)
        if problem:
            raise ConfigError(problem, path=origin, key=key)


def _unwritable(directory: Path) -> str | None:
    path = directory.absolute()
    while not path.exists():
        if path.parent == path:
            return f"{directory}: no existing parent directory"
        path = path.parent
    if not path.is_dir():
        return f"{directory}: {path} is not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        what = "directory" if path == directory.absolute() else "nearest existing parent"
        return f"{directory} is not writable by this user ({what} {path})"
    return None


def cron_trigger(line: str):  # type: ignore[no-untyped-def]
    """APScheduler's trigger for a crontab line (ValueError when it is not one)."""
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(line)


def to_toml(settings: Settings) -> str:
    """Render the effective settings as TOML (what ``busgate check-config`` prints): the
    core's keys and tables, then every registered source's table."""
    top: list[str] = []
    tables: list[str] = []
    values = [(f.name, getattr(settings, f.name)) for f in dataclasses.fields(settings)
              if f.name not in _NOT_KEYS]
    for name, value in values + list(settings.sources.items()):
        if dataclasses.is_dataclass(value):
            lines = [f"{sub.name} = {toml_value(getattr(value, sub.name))}"
                     for sub in dataclasses.fields(value)]
            tables.append(f"[{name}]\n" + "\n".join(lines))
        else:
            top.append(f"{name} = {toml_value(value)}")
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def toml_value(value: Any) -> str:
    """One TOML value (str, bool, number, list) as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if dataclasses.is_dataclass(value):  # an inline table (one of [[irc.routes]])
        return "{" + ", ".join(f"{f.name} = {toml_value(getattr(value, f.name))}"
                               for f in dataclasses.fields(value)) + "}"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
