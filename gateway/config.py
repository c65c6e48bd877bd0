"""Load ``busgate.toml`` plus ``conf.d/*.toml`` drop-ins into typed, frozen settings.

One loader, one set of defaults (the dataclass defaults below, which work on one
machine with no server). Unknown keys and wrong types are errors that name the
file and the key; the command line turns them into exit code 2.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import endpoints, spool, topics
from gateway.errors import ConfigError, TopicError

CONFIG_ENV = "BUSGATE_CONFIG"
#: Values of ``dak.signatures``.
DAK_SIGNATURE_MODES = ("require", "mark", "ignore")


@dataclass(frozen=True)
class PublisherSettings:
    #: This publisher's name: subscribers track seq_id under it and ask its replay endpoint.
    name: str = "busgate"
    #: The ``username`` field of envelopes; empty means the Unix user running busgate.
    username: str = ""


@dataclass(frozen=True)
class StateSettings:
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
    #: Most pruned keys kept for dedup (oldest forgotten first; about 40 bytes each).
    dedup_max_keys: int = 5_000_000


@dataclass(frozen=True)
class ZmqSettings:
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
class DiscoverySettings:
    #: Text file of other publishers, one ``name pub-url replay-url`` a line.
    endpoints_file: str = ""
    #: Domains whose ``_busgate._tcp`` (then ``_fedmsg._tcp``) SRV records list publishers.
    srv_domains: list[str] = field(default_factory=list)
    #: DNS server for SRV look-ups as ``host`` or ``host:port``; empty uses the system resolver.
    nameserver: str = ""
    #: Whether ``busgate tail`` also subscribes to this gateway's own endpoints.
    include_self: bool = True


@dataclass(frozen=True)
class SigningSettings:
    #: ``none`` (default); ``x509`` and ``ed25519`` are planned.
    backend: str = "none"


@dataclass(frozen=True)
class MailSettings:
    #: Largest mail accepted for parsing, in bytes; larger mail goes to quarantine.
    max_size: int = spool.MAIL_MAX_SIZE
    #: Longest single header (name and folded value) parsed, in bytes; a mail with a longer
    #: one is quarantined before any header is decoded.
    max_header_bytes: int = 65536


@dataclass(frozen=True)
class DakSettings:
    #: dak mails whose OpenPGP signature is not a good one by a key in ``keyring``:
    #: ``require`` (quarantined), ``mark`` (published, ``signature.status`` says why) or
    #: ``ignore`` (not checked).
    signatures: str = "require"
    #: Keyring files (gpgv format) holding the key dak signs its mails with.
    keyring: list[str] = field(default_factory=list)
    #: The gpgv program (name on PATH or absolute path).
    gpgv: str = "gpgv"
    #: Seconds gpgv may take for one mail.
    verify_timeout: float = 10.0


@dataclass(frozen=True)
class IngestSettings:
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
    #: Most quarantined inputs kept; beyond it a new one is only logged and counted.
    max_items: int = 10000
    #: Most raw bytes kept over all quarantined inputs; beyond it a new one keeps its
    #: reason and size but not its bytes (counted as quarantine.raw_dropped).
    max_bytes: int = 256 * 1024 * 1024
    #: Bytes kept from the head of an input over its size limit.
    oversize_keep_bytes: int = spool.OVERSIZE_KEEP


@dataclass(frozen=True)
class SmtpSettings:
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


@dataclass(frozen=True)
class DebbugsSettings:
    #: Schedule the debbugs poller inside ``busgate run``.
    enabled: bool = False
    #: SOAP endpoint, e.g. https://bugs.debian.org/cgi-bin/soap.cgi
    url: str = ""
    #: Seconds between polls.
    interval: float = 300.0
    #: A crontab line (``*/5 * * * *``, local wall time) instead of ``interval``; empty
    #: means poll every ``interval`` seconds.
    schedule: str = ""
    #: Seconds before a SOAP call times out.
    timeout: float = 30.0
    #: Watch new bugs reported anywhere (``newest_bugs``).
    watch_new: bool = True
    #: How many newest bugs to ask for on each poll.
    newest_count: int = 100
    #: Watch the bugs of these binary packages / source packages / maintainer addresses.
    packages: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    maintainers: list[str] = field(default_factory=list)
    #: First poll of a new watch list records a silent baseline instead of ``new`` events.
    baseline: bool = True
    #: Bug page link stored in event bodies; ``{bug}`` is replaced by the number.
    link: str = "https://bugs.debian.org/{bug}"
    #: Bugs per ``get_status`` call (debbugs answers at most 500).
    batch: int = 500
    #: Days a bug that left the watch list (reassigned, out of ``newest_bugs``) is still polled.
    keep_days: float = 60.0
    #: Seconds a fresh close/new/forward seen by SOAP waits for the BTS mail reporting it.
    mail_grace: float = 60.0
    #: Extra tries of a failed SOAP call within one poll (then the poll fails and is retried).
    retries: int = 1
    #: Largest SOAP answer read, in bytes.
    max_response_bytes: int = 67108864
    #: WSDL describing the SOAP interface; empty means the shipped ``conf/debbugs.wsdl``.
    wsdl: str = ""


@dataclass(frozen=True)
class WannaBuildSettings:
    #: Schedule the wanna-build poller inside ``busgate run``.
    enabled: bool = False
    #: libpq connection string of the wanna-build database (read-only role).
    dsn: str = ""
    #: Seconds between polls.
    interval: float = 60.0
    #: A crontab line (``*/5 * * * *``, local wall time) instead of ``interval``; empty
    #: means poll every ``interval`` seconds.
    schedule: str = ""
    #: Assumed age of transactions already open at a first (or ``--since``) run.
    overlap_seconds: float = 300.0
    #: Statement timeout for the poller's query, in milliseconds.
    statement_timeout_ms: int = 30000
    #: Where a first run starts (ISO timestamp); empty means at the newest row.
    since: str = ""
    #: Longest failure text copied into an event body, in characters.
    max_failure_chars: int = 4000
    #: Most new rows one poll reads (a backlog is worked off over several polls).
    batch_rows: int = 10000
    #: Seconds to wait for the database connection.
    connect_timeout: float = 10.0
    #: Time zone wanna-build's sessions write ``transactions.time`` in; empty means the
    #: server's default (only needed when they differ).
    timezone: str = ""


@dataclass(frozen=True)
class GitSettings:
    #: Service token of SCM topics (``org.<d>.<env>.<service>.branch.update``).
    service: str = "git"
    #: Repository name; empty derives it from the repository path.
    repo: str = ""
    #: Most commits listed in one event (the rest are counted, ``truncated`` is set).
    max_commits: int = 100
    #: Seconds the hook may spend before it hands over what it has.
    time_budget: float = 2.0
    #: Longest commit body copied into an event, in characters.
    max_body_chars: int = 2000
    #: Directory holding the repositories (e.g. /srv/git); when set, the derived repository
    #: name is the path below it without ``.git`` (``debian/dpkg``), otherwise the basename.
    repo_root: str = ""
    #: Most changed files listed per commit (the rest are counted, ``files_truncated`` is set).
    max_files: int = 100
    #: Environment variables naming the pusher, first non-empty wins; else the Unix user.
    pusher_env: list[str] = field(
        default_factory=lambda: ["GL_USERNAME", "GL_USER", "REMOTE_USER", "GIT_PUSHER"])
    #: The git program the hook runs (name on PATH or absolute path).
    executable: str = "git"
    #: Most commits described in one push, shared fairly among its events.
    max_push_commits: int = 1000
    #: Most bytes of JSON in one event's commit list (the rest are counted, not listed).
    max_event_bytes: int = 262144
    #: Most new commits one push may bring for its events to be complete (memory bound).
    max_new_commits: int = 300000
    #: Most ref events from one push; further ref updates are reported, not published.
    max_refs: int = 100000
    #: Most events in one spool item: a big push becomes several items.
    max_item_events: int = 5000


@dataclass(frozen=True)
class Settings:
    #: Second topic token: ``org.<distribution>``.
    distribution: str = "debian"
    #: Third topic token.
    env: str = "dev"
    #: Allowed values of ``env``.
    envs: list[str] = field(default_factory=lambda: list(topics.DEFAULT_ENVS))
    publisher: PublisherSettings = field(default_factory=PublisherSettings)
    state: StateSettings = field(default_factory=StateSettings)
    zmq: ZmqSettings = field(default_factory=ZmqSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    signing: SigningSettings = field(default_factory=SigningSettings)
    mail: MailSettings = field(default_factory=MailSettings)
    dak: DakSettings = field(default_factory=DakSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    quarantine: QuarantineSettings = field(default_factory=QuarantineSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    debbugs: DebbugsSettings = field(default_factory=DebbugsSettings)
    wannabuild: WannaBuildSettings = field(default_factory=WannaBuildSettings)
    git: GitSettings = field(default_factory=GitSettings)
    #: Files the settings were read from, in order (not a TOML key).
    loaded_from: tuple[str, ...] = field(default=(), compare=False)

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
    def spool_dir(self) -> Path:
        return Path(self.state.spool) if self.state.spool else self.state_dir / "spool"

    @property
    def username(self) -> str:
        return self.publisher.username or _unix_user()


def _unix_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def load(path: str | os.PathLike[str] | None = None) -> Settings:
    """Settings from ``path`` (or ``$BUSGATE_CONFIG``) and its ``conf.d/``, else defaults."""
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
    settings = _build(Settings, merged, origin, "")
    settings = dataclasses.replace(settings, loaded_from=tuple(str(f) for f in files))
    _check(settings, origin)
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


def _build(cls: type, table: dict[str, Any], origin: dict[str, str], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "loaded_from"}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            valid = ", ".join(sorted(names))
            raise ConfigError(f"unknown key (valid here: {valid})", path=origin.get(dotted),
                              key=dotted)
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError("must be a table", path=origin.get(dotted), key=dotted)
            kwargs[key] = _build(kind, value, origin, f"{dotted}.")  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(kind, value, origin.get(dotted), dotted)
    return cls(**kwargs)


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
    if typing.get_origin(kind) is list:
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
    try:
        topics.check_token(settings.git.service, "service")
    except TopicError as exc:
        raise ConfigError(str(exc), path=origin.get("git.service"), key="git.service") from None
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
        "dak.verify_timeout": settings.dak.verify_timeout,
        "ingest.max_item_bytes": settings.ingest.max_item_bytes,
        "ingest.max_json_depth": settings.ingest.max_json_depth,
        "ingest.max_crashes": settings.ingest.max_crashes,
        "ingest.group_items": settings.ingest.group_items,
        "ingest.group_bytes": settings.ingest.group_bytes,
        "quarantine.max_items": settings.quarantine.max_items,
        "quarantine.max_bytes": settings.quarantine.max_bytes,
        "quarantine.oversize_keep_bytes": settings.quarantine.oversize_keep_bytes,
        "state.spool_poll_ms": settings.state.spool_poll_ms,
        "git.max_commits": settings.git.max_commits,
        "git.max_push_commits": settings.git.max_push_commits,
        "git.max_event_bytes": settings.git.max_event_bytes,
        "git.max_new_commits": settings.git.max_new_commits,
        "git.max_refs": settings.git.max_refs,
        "git.max_item_events": settings.git.max_item_events,
        "debbugs.interval": settings.debbugs.interval,
        "wannabuild.interval": settings.wannabuild.interval,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"must be greater than 0, not {value}", path=origin.get(key),
                              key=key)
    for key in ("outbox_max_rows", "outbox_max_age_days", "dedup_days", "dedup_max_keys"):
        value = getattr(settings.state, key)
        if value < 0:
            raise ConfigError(f"must be 0 or more, not {value}", path=origin.get(f"state.{key}"),
                              key=f"state.{key}")
    for key, value in (("debbugs.schedule", settings.debbugs.schedule),
                       ("wannabuild.schedule", settings.wannabuild.schedule)):
        if value:
            try:
                cron_trigger(value)
            except ValueError as exc:
                raise ConfigError(f"not a crontab line ({exc})", path=origin.get(key),
                                  key=key) from None
    if settings.dak.signatures not in DAK_SIGNATURE_MODES:
        raise ConfigError(f"must be one of {', '.join(DAK_SIGNATURE_MODES)}",
                          path=origin.get("dak.signatures"), key="dak.signatures")
    for keyring in settings.dak.keyring if settings.dak.signatures != "ignore" else ():
        if not os.path.isfile(keyring):
            raise ConfigError(f"keyring file {keyring!r} does not exist",
                              path=origin.get("dak.keyring"), key="dak.keyring")
    if not 0 < settings.smtp.port < 65536:
        raise ConfigError("must be a TCP port (1-65535)", path=origin.get("smtp.port"),
                          key="smtp.port")
    if not settings.publisher.name or any(c.isspace() for c in settings.publisher.name):
        raise ConfigError("must be a non-empty name without spaces",
                          path=origin.get("publisher.name"), key="publisher.name")
    _check_enabled(settings, origin)
    for key, url in (("zmq.publish", settings.zmq.publish), ("zmq.replay", settings.zmq.replay)):
        problem = endpoints.problem(url, bind=True) if url or key == "zmq.publish" else None
        if problem:
            raise ConfigError(problem, path=origin.get(key), key=key)


def _check_enabled(settings: Settings, origin: dict[str, str]) -> None:
    """What an enabled part needs before ``busgate run`` can start it (else it would crash
    and retry forever, or exit with the wrong code)."""
    needs = (
        (settings.debbugs.enabled, "debbugs.url", settings.debbugs.url.strip(),
         "the debbugs poller is enabled but has no SOAP URL"),
        (settings.wannabuild.enabled, "wannabuild.dsn", settings.wannabuild.dsn.strip(),
         "the wanna-build poller is enabled but has no database connection string"),
        (settings.smtp.enabled, "smtp.recipients",
         any(r.strip() for r in settings.smtp.recipients),
         "the SMTP listener is enabled but accepts no recipient (list at least one address)"),
    )
    for enabled, key, value, message in needs:
        if enabled and not value:
            # the file that enabled the part, when the key itself is set nowhere
            enabler = f"{key.split('.')[0]}.enabled"
            raise ConfigError(message, path=origin.get(key) or origin.get(enabler)
                              or _first(settings), key=key)
    url = settings.debbugs.url.strip()
    if settings.debbugs.enabled and not url.startswith(("http://", "https://")):
        raise ConfigError(f"must be an http:// or https:// URL, not {url!r}",
                          path=origin.get("debbugs.url"), key="debbugs.url")


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
    """Render the effective settings as TOML (what ``busgate check-config`` prints)."""
    top: list[str] = []
    tables: list[str] = []
    for f in dataclasses.fields(settings):
        if f.name == "loaded_from":
            continue
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            lines = [f"{sub.name} = {toml_value(getattr(value, sub.name))}"
                     for sub in dataclasses.fields(value)]
            tables.append(f"[{f.name}]\n" + "\n".join(lines))
        else:
            top.append(f"{f.name} = {toml_value(value)}")
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def toml_value(value: Any) -> str:
    """One TOML value (str, bool, number, list) as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
