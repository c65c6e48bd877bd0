"""Where other publishers are: a plain endpoints file and DNS SRV records.

``busgate tail`` connects to every endpoint found here. A bad endpoints file is
a configuration error (it names the file and the line); DNS trouble is not: a
missing or silent name server only logs a warning and yields no endpoints, as
fedmsg did, so one dead resolver never stops a subscriber from starting.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.resolver

from gateway import endpoints
from gateway.config import Settings
from gateway.errors import ConfigError

log = logging.getLogger(__name__)

#: Largest endpoints file read; anything bigger is certainly not a list of publishers.
MAX_FILE_BYTES = 1024 * 1024
SERVICE = "_busgate._tcp"
REPLAY_SERVICE = "_busgate-replay._tcp"
FEDMSG_SERVICE = "_fedmsg._tcp"

_HOST = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


@dataclass(frozen=True)
class Endpoint:
    """One publisher: its name (the key subscribers track seq_id under) and ZeroMQ URLs."""

    name: str
    publish: str
    replay: str | None = None


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be connected to (``None`` when it can): tcp://host:port or ipc://path."""
    return endpoints.problem(url)


def from_file(path: str | Path) -> list[Endpoint]:
    """Endpoints from a text file: ``name pub-url [replay-url|-]`` a line, ``#`` comments."""
    where = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read endpoints file: {exc.strerror}", path=where) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"endpoints file larger than {MAX_FILE_BYTES} bytes", path=where)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 (byte {exc.start})", path=where) from None
    endpoints = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if not 2 <= len(fields) <= 3:
            raise ConfigError(f"want 'name pub-url [replay-url|-]', got {len(fields)} field(s)",
                              path=where, key=f"line {number}")
        name, publish, replay = fields[0], fields[1], fields[2] if len(fields) == 3 else "-"
        if not name.isprintable():
            raise ConfigError(f"name {name!r} has control characters", path=where,
                              key=f"line {number}")
        for url in (publish, replay) if replay != "-" else (publish,):
            problem = url_problem(url)
            if problem:
                raise ConfigError(problem, path=where, key=f"line {number}")
        endpoints.append(Endpoint(name, publish, None if replay == "-" else replay))
    return endpoints


def _resolver(nameserver: str, timeout: float) -> dns.resolver.Resolver:
    """A resolver for ``host``, ``host:port`` or ``[v6]:port``; the system one when empty."""
    if not nameserver:
        resolver = dns.resolver.Resolver()
    else:
        host, port = nameserver, 53
        bracketed = re.fullmatch(r"\[([^\]]+)\](?::([0-9]+))?", nameserver)
        if bracketed:
            host, port = bracketed.group(1), int(bracketed.group(2) or 53)
        elif nameserver.count(":") == 1:
            host, _, text = nameserver.partition(":")
            port = int(text) if text.isdigit() else -1
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"not an IP address[:port]: {nameserver!r}",
                              key="discovery.nameserver") from None
        if not 0 < port < 65536:
            raise ConfigError(f"bad port in {nameserver!r}", key="discovery.nameserver")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.timeout = resolver.lifetime = timeout
    return resolver


def _srv(resolver: dns.resolver.Resolver, qname: str) -> list[tuple[str, int]] | None:
    """``(host, port)`` answers in preference order; ``[]`` for none; ``None`` on failure.

    Order: lowest priority first, then highest weight (RFC 2782 prefers heavier
    records), then host and port so the result is stable.
    """
    try:
        answer = resolver.resolve(qname, "SRV", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        log.warning("SRV lookup of %s failed: %s", qname, exc or type(exc).__name__)
        return None
    found = []
    for record in answer:
        host = record.target.to_text(omit_final_dot=True)
        if host in ("", ".") or record.port == 0:
            continue  # "." means: decidedly not available here (RFC 2782)
        if not _HOST.fullmatch(host):
            log.warning("SRV %s: ignoring unusable target %r", qname, host)
            continue
        found.append((record.priority, -record.weight, host, record.port))
    return [(host, port) for _, _, host, port in sorted(found)]


def from_srv(domain: str, nameserver: str = "", timeout: float = 2.0) -> list[Endpoint]:
    """Publishers listed under ``_busgate._tcp.<domain>`` (else ``_fedmsg._tcp``); never raises
    on DNS trouble: it logs a warning and returns ``[]``."""
    try:
        resolver = _resolver(nameserver, timeout)
    except dns.exception.DNSException as exc:  # e.g. no /etc/resolv.conf
        log.warning("no DNS resolver for SRV discovery of %s: %s", domain, exc)
        return []
    domain = domain.strip().rstrip(".")
    publishers = _srv(resolver, f"{SERVICE}.{domain}.")
    if publishers is None:
        return []
    replays: dict[str, int] = {}
    if publishers:
        for host, port in reversed(_srv(resolver, f"{REPLAY_SERVICE}.{domain}.") or []):
            replays[host] = port  # reversed: the most preferred record per host wins
    else:
        publishers = _srv(resolver, f"{FEDMSG_SERVICE}.{domain}.")
        if not publishers:
            if publishers == []:
                log.warning("no %s or %s SRV records for %s", SERVICE, FEDMSG_SERVICE, domain)
            return []
    return [Endpoint(host, f"tcp://{host}:{port}",
                     f"tcp://{host}:{replays[host]}" if host in replays else None)
            for host, port in publishers]


def _connectable(url: str) -> str:
    """A bind URL turned into one a local subscriber can connect to."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if url.startswith(wildcard):
            return "tcp://127.0.0.1:" + url[len(wildcard):]
    if url.startswith("tcp://[::]:"):
        return "tcp://[::1]:" + url[len("tcp://[::]:"):]
    return url


def discover(settings: Settings) -> list[Endpoint]:
    """Self (if wanted), then the endpoints file, then each SRV domain; first publish URL wins."""
    conf = settings.discovery
    found: list[Endpoint] = []
    if conf.include_self and settings.zmq.enabled:  # AMQP only: nothing of ours to hear
        replay = _connectable(settings.zmq.replay) if settings.zmq.replay else None
        found.append(Endpoint(settings.publisher.name, _connectable(settings.zmq.publish), replay))
    if conf.endpoints_file:
        found += from_file(conf.endpoints_file)
    for domain in conf.srv_domains:
        found += from_srv(domain, conf.nameserver)
    seen: set[str] = set()
    unique = []
    for endpoint in found:
        if endpoint.publish not in seen:
            seen.add(endpoint.publish)
            unique.append(endpoint)
    return unique
