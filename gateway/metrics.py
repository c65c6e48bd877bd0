"""Prometheus metrics and ``/live`` ``/ready`` for ``busgate run`` (``[metrics]``).

Counters live in the state database (they survive restarts and ``busgate status``
reads them), so the exporter reads the same numbers at scrape time instead of keeping
a second copy that could disagree: every name ``busgate status`` shows is a sample
here (:func:`sample_for` says which), plus gauges for the outbox, transport cursors,
spool and quarantine. Only poll durations are kept in memory (a histogram has no
place in the counters table).

The server is prometheus-client's WSGI app behind a tiny router on a thread, bound to
``metrics.host`` (localhost by default: the numbers name sources and publishers).
A scrape reads one SQLite snapshot and lists ``spool/new`` once; both are bounded by
what the daemon already bounds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from gateway.errors import BusgateError

if TYPE_CHECKING:
    from gateway.config import Settings

#: Seconds without a tick of the daemon's loop after which ``/live`` answers 503.
LIVE_STALL = 30.0
#: Buckets of the poll-duration histogram, in seconds (a poll is a SOAP call or a query).
POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

#: Counter name prefixes with a metric family of their own: prefix -> (family, label).
_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("ingested.", "busgate_ingested", "kind"),
    ("quarantined.", "busgate_quarantined", "reason"),
    ("amqp.", "busgate_amqp", "outcome"),
    ("replay.", "busgate_replay", "what"),
)
_POLL = "poll."

_lock = threading.Lock()
_poll_registry = CollectorRegistry(auto_describe=True)
POLL_DURATION = Histogram("busgate_poll_duration_seconds",
                          "Seconds each poll took (read and commit), by poller",
                          ["poller"], buckets=POLL_BUCKETS, registry=_poll_registry)


def observe_poll(poller: str, seconds: float) -> None:
    """Record one poll's duration (the scheduler calls this for every run)."""
    POLL_DURATION.labels(poller).observe(seconds)


def sample_for(counter: str) -> tuple[str, dict[str, str]]:
    """The metric (sample name without ``_total``, labels) that shows ``busgate
    status`` counter ``counter``: ``ingested.mail`` -> ``busgate_ingested{kind="mail"}``,
    ``published.dropped`` -> ``busgate_dropped{transport="zmq"}``, ``poll.X.failed`` ->
    ``busgate_polls{poller="X",outcome="failed"}``; any other ``a.b`` ->
    ``busgate_events{name="a.b"}``."""
    if counter == "published.sent":
        return "busgate_published", {"transport": "zmq"}
    if counter == "published.dropped":
        return "busgate_dropped", {"transport": "zmq"}
    if counter == "amqp.confirmed":
        return "busgate_published", {"transport": "amqp"}
    if counter.startswith(_POLL) and counter.count(".") >= 2:
        poller, _, outcome = counter[len(_POLL):].rpartition(".")
        return "busgate_polls", {"poller": poller, "outcome": outcome}
    for prefix, family, label in _FAMILIES:
        if counter.startswith(prefix) and len(counter) > len(prefix):
            return family, {label: counter[len(prefix):]}
    return "busgate_events", {"name": counter}


_HELP = {
    "busgate_ingested": "Events ingested, by spool kind or source",
    "busgate_quarantined": "Inputs sent to quarantine, by reason",
    "busgate_amqp": "AMQP transport outcomes (confirmed, unroutable, connection faults)",
    "busgate_replay": "Replay requests, errors and messages served",
    "busgate_published": "Messages published, by transport",
    "busgate_dropped": "Messages a subscriber's full queue made the transport drop",
    "busgate_polls": "Poll runs by poller and outcome",
    "busgate_events": "Other counters of busgate status, by name",
}


class StatusCollector:
    """The numbers of ``busgate status``, read from the state at each scrape."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def describe(self) -> list[Metric]:
        return []  # read at collect time; no fixed list

    def collect(self) -> Iterator[Metric]:
        from gateway import runtime

        store = runtime.open_store(self.settings, create=False)
        try:
            status = store.status()
        finally:
            store.close()
        yield from status_metrics(status, len(runtime.open_spool(self.settings).pending()))


def status_metrics(status: dict[str, Any], spool_pending: int) -> Iterable[Metric]:
    """Prometheus families for a :meth:`gateway.store.Store.status` answer."""
    families: dict[str, CounterMetricFamily] = {}
    for name, value in status["counters"].items():
        family, labels = sample_for(name)
        if family not in families:
            families[family] = CounterMetricFamily(family, _HELP[family],
                                                   labels=sorted(labels))
        families[family].add_metric([labels[k] for k in sorted(labels)], value)
    yield from families.values()
    for name, text in (("last_seq_id", "Last seq_id in the outbox"),
                       ("published_seq_id", "Last seq_id the ZeroMQ publisher sent"),
                       ("outbox_depth", "Outbox rows not published on ZeroMQ yet")):
        yield GaugeMetricFamily(f"busgate_{name}", text, value=status[name])
    cursor = GaugeMetricFamily("busgate_transport_cursor", "Last seq_id each transport "
                               "published", labels=["transport"])
    lag = GaugeMetricFamily("busgate_transport_lag", "Outbox rows a transport has not "
                            "published yet", labels=["transport"])
    for transport, entry in status["transports"].items():
        cursor.add_metric([transport], entry["cursor"])
        lag.add_metric([transport], entry["lag"])
    yield cursor
    yield lag
    yield GaugeMetricFamily("busgate_spool_pending", "Inputs waiting in the spool",
                            value=spool_pending)
    quarantine = GaugeMetricFamily("busgate_quarantine_items", "Inputs in quarantine now, "
                                   "by reason", labels=["reason"])
    for reason, count in status["quarantine"].items():
        quarantine.add_metric([reason], count)
    yield quarantine


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every few seconds would drown the daemon's log


class MetricsServer:
    """``/metrics``, ``/live`` and ``/ready`` on a thread of the daemon."""

    def __init__(self, settings: Settings, healthy: Callable[[], str | None] | None = None):
        from gateway import health

        self.settings = settings
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(settings))  # type: ignore[arg-type]
        self.registry.register(_Forward(_poll_registry))  # type: ignore[arg-type]
        self._metrics = make_wsgi_app(self.registry)
        self._ready = False
        self._tick = time.monotonic()
        self._healthy = healthy or (lambda: next(
            (f"{c}: {f.get('problem')}" for c, f in health.read(settings.state_dir).items()),
            None))
        conf = settings.metrics
        try:
            self.server = make_server(conf.host, conf.port, self._app, ThreadingWSGIServer,
                                      handler_class=_Quiet)
        except OSError as exc:  # port taken, address not local: say which, exit 69
            raise BusgateError(f"cannot serve metrics on {conf.host}:{conf.port} "
                               f"([metrics] host/port): {exc.strerror or exc}") from None
        self.server.daemon_threads = True
        self.port = self.server.server_port
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics",
                                        daemon=True)
        self._thread.start()

    def ready(self) -> None:
        """The daemon is serving (every part started)."""
        self._ready = True

    def tick(self) -> None:
        """The daemon's loop is turning (``/live``)."""
        self._tick = time.monotonic()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _app(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start)
        if path == "/live":
            stalled = time.monotonic() - self._tick
            if stalled > LIVE_STALL:
                return _text(start, "503 Service Unavailable",
                             f"the daemon's loop has not turned for {stalled:.0f} s\n")
            return _text(start, "200 OK", "live\n")
        if path == "/ready":
            problem = "starting" if not self._ready else self._healthy()
            if problem:
                return _text(start, "503 Service Unavailable", f"not ready: {problem}\n")
            return _text(start, "200 OK", "ready\n")
        return _text(start, "404 Not Found", "try /metrics, /live or /ready\n")


class _Forward:
    """Collect another registry's metrics (the in-memory poll histogram)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        with _lock:
            yield from self.registry.collect()


def _text(start: Callable[..., Any], status: str, body: str) -> list[bytes]:
    data = body.encode()
    start(status, [("Content-Type", "text/plain; charset=utf-8"),
                   ("Content-Length", str(len(data)))])
    return [data]


async def ticker(server: MetricsServer, every: float = 1.0) -> None:
    """Tell ``/live`` that the loop turns (a task of the daemon)."""
    import asyncio

    while True:
        server.tick()
        await asyncio.sleep(every)
