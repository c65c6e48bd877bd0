"""Endpoint discovery against a real DNS server on 127.0.0.1 and real endpoint files."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, RR, SRV, DNSLabel
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from gateway.discovery import Endpoint, discover, from_file, from_srv
from gateway.errors import ConfigError
from tests.conftest import free_port

ZONE = """
_busgate._tcp.example.org. 60 IN SRV 20 0 9940 pub3.example.org.
_busgate._tcp.example.org. 60 IN SRV 10 5 9940 pub2.example.org.
_busgate._tcp.example.org. 60 IN SRV 10 50 9950 pub1.example.org.
_busgate-replay._tcp.example.org. 60 IN SRV 10 0 9941 pub1.example.org.
_busgate-replay._tcp.example.org. 60 IN SRV 10 0 9961 pub3.example.org.
_busgate-replay._tcp.example.org. 60 IN SRV 30 0 9999 pub3.example.org.
_fedmsg._tcp.example.org. 60 IN SRV 10 0 3000 old.example.org.
_fedmsg._tcp.fedmsg.test. 60 IN SRV 5 0 3000 hub1.fedmsg.test.
_fedmsg._tcp.fedmsg.test. 60 IN SRV 1 0 3001 hub0.fedmsg.test.
_busgate-replay._tcp.fedmsg.test. 60 IN SRV 1 0 3002 hub0.fedmsg.test.
_busgate._tcp.txtonly.test. 60 IN TXT "not a service"
_busgate._tcp.hostile.test. 60 IN SRV 10 0 9940 .
_busgate._tcp.hostile.test. 60 IN SRV 10 0 0 zero.hostile.test.
_busgate._tcp.hostile.test. 60 IN SRV 20 0 9940 good.hostile.test.
"""


class ZoneResolver(BaseResolver):
    """Answers from ZONE: NXDOMAIN for unknown names, SERVFAIL for ``*.servfail.test``."""

    def __init__(self) -> None:
        self.records = RR.fromZone(ZONE)
        weird = DNSLabel([b"bad host", b"hostile", b"test"])
        self.records.append(RR("_busgate._tcp.hostile.test.", QTYPE.SRV, ttl=60,
                               rdata=SRV(15, 0, 9940, weird)))
        self.asked: list[str] = []

    def resolve(self, request, handler):  # type: ignore[no-untyped-def]
        reply = request.reply()
        qname, qtype = request.q.qname, request.q.qtype
        self.asked.append(str(qname))
        if qname.matchSuffix("servfail.test."):
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        names = [rr for rr in self.records if rr.rname == qname]
        if not names:
            reply.header.rcode = RCODE.NXDOMAIN
        for rr in names:
            if rr.rtype == qtype:
                reply.add_answer(rr)
        return reply


@pytest.fixture(scope="module")
def dns_server() -> Iterator[tuple[str, ZoneResolver]]:
    resolver = ZoneResolver()
    port = free_port()
    server = DNSServer(resolver, address="127.0.0.1", port=port,
                       logger=DNSLogger(logf=lambda _s: None))
    server.start_thread()
    yield f"127.0.0.1:{port}", resolver
    server.stop()
    server.server.server_close()


def test_srv_priority_weight_and_replay_matching(dns_server):
    nameserver, _ = dns_server
    assert from_srv("example.org", nameserver) == [
        Endpoint("pub1.example.org", "tcp://pub1.example.org:9950", "tcp://pub1.example.org:9941"),
        Endpoint("pub2.example.org", "tcp://pub2.example.org:9940", None),
        Endpoint("pub3.example.org", "tcp://pub3.example.org:9940", "tcp://pub3.example.org:9961"),
    ]


def test_trailing_dot_domain_is_the_same(dns_server):
    nameserver, _ = dns_server
    assert from_srv("example.org.", nameserver) == from_srv("example.org", nameserver)


def test_fedmsg_fallback_is_publish_only(dns_server):
    nameserver, resolver = dns_server
    resolver.asked.clear()
    assert from_srv("fedmsg.test", nameserver) == [
        Endpoint("hub0.fedmsg.test", "tcp://hub0.fedmsg.test:3001"),
        Endpoint("hub1.fedmsg.test", "tcp://hub1.fedmsg.test:3000"),
    ]
    assert resolver.asked == ["_busgate._tcp.fedmsg.test.", "_fedmsg._tcp.fedmsg.test."]


def test_no_answer_falls_back_then_gives_up(dns_server, caplog):
    nameserver, resolver = dns_server
    resolver.asked.clear()
    with caplog.at_level(logging.WARNING, logger="gateway.discovery"):
        assert from_srv("txtonly.test", nameserver) == []
    assert resolver.asked == ["_busgate._tcp.txtonly.test.", "_fedmsg._tcp.txtonly.test."]
    assert "no _busgate._tcp or _fedmsg._tcp SRV records for txtonly.test" in caplog.text


def test_nxdomain_warns_and_returns_nothing(dns_server, caplog):
    nameserver, _ = dns_server
    with caplog.at_level(logging.WARNING, logger="gateway.discovery"):
        assert from_srv("nowhere.test", nameserver) == []
    assert "nowhere.test" in caplog.text


def test_servfail_and_malformed_domain_never_raise(dns_server, caplog):
    nameserver, _ = dns_server
    with caplog.at_level(logging.WARNING, logger="gateway.discovery"):
        assert from_srv("servfail.test", nameserver) == []
        assert from_srv("x" * 70 + ".test", nameserver) == []  # label longer than 63
        assert from_srv("", nameserver) == []
    assert "SRV lookup of _busgate._tcp.servfail.test. failed" in caplog.text


def test_hostile_targets_are_skipped(dns_server, caplog):
    nameserver, _ = dns_server
    with caplog.at_level(logging.WARNING, logger="gateway.discovery"):
        found = from_srv("hostile.test", nameserver)
    assert found == [Endpoint("good.hostile.test", "tcp://good.hostile.test:9940")]
    assert "unusable target" in caplog.text


def test_silent_server_times_out_quickly(caplog):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))  # bound, never read: queries vanish
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="gateway.discovery"):
            found = from_srv("example.org", f"127.0.0.1:{sink.getsockname()[1]}", timeout=0.5)
        elapsed = time.monotonic() - start
    assert found == []
    assert elapsed < 1.2
    assert "SRV lookup of _busgate._tcp.example.org. failed" in caplog.text


@pytest.mark.parametrize("nameserver", ["localhost", "dns.example:53", "127.0.0.1:",
                                        "127.0.0.1:70000", "[::1]:x"])
def test_bad_nameserver_is_a_config_error(nameserver):
    with pytest.raises(ConfigError, match=r"discovery\.nameserver"):
        from_srv("example.org", nameserver)


GOOD_FILE = """\
# other publishers
alpha tcp://alpha.example.org:9940 tcp://alpha.example.org:9941

beta  tcp://10.0.0.2:9940   -     # replay disabled
gamma ipc:///run/busgate/pub.sock
delta tcp://[::1]:9940 ipc:///run/busgate/replay.sock
"""


def test_file_format(tmp_path):
    path = tmp_path / "endpoints"
    path.write_text(GOOD_FILE)
    assert from_file(path) == [
        Endpoint("alpha", "tcp://alpha.example.org:9940", "tcp://alpha.example.org:9941"),
        Endpoint("beta", "tcp://10.0.0.2:9940", None),
        Endpoint("gamma", "ipc:///run/busgate/pub.sock", None),
        Endpoint("delta", "tcp://[::1]:9940", "ipc:///run/busgate/replay.sock"),
    ]


@pytest.mark.parametrize(("line", "why"), [
    ("lonely", "got 1 field"),
    ("a tcp://h:1 tcp://h:2 extra", "got 4 field"),
    ("a http://h:1", "unsupported URL 'http://h:1' (only tcp:// and ipc://"),
    ("a inproc://x", "unsupported URL"),
    ("a tcp://h", "malformed URL 'tcp://h'"),
    ("a tcp://h:", "malformed URL"),
    ("a tcp://h:70000", "port out of range"),
    ("a tcp://h:0", "port out of range"),
    ("a tcp://*:9940", "malformed URL"),
    ("a tcp://h:1 ftp://h:2", "unsupported URL 'ftp://h:2'"),
    ("a ipc://", "malformed URL"),
    ("a ipc://x\x00y", "malformed URL"),
    ("a\x07 tcp://h:1", "control characters"),
])
def test_bad_line_names_file_and_line(tmp_path, line, why):
    path = tmp_path / "endpoints"
    path.write_text(f"# header\nok tcp://h:1\n{line}\nlater tcp://h:2\n")
    with pytest.raises(ConfigError) as info:
        from_file(path)
    assert str(info.value).startswith(f"{path}: line 3: ")
    assert why in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read endpoints file"):
        from_file(tmp_path / "missing")
    latin = tmp_path / "latin1"
    latin.write_bytes(b"caf\xe9 tcp://h:1\n")
    with pytest.raises(ConfigError, match=r"latin1: not UTF-8 \(byte 3\)"):
        from_file(latin)
    huge = tmp_path / "huge"
    huge.write_bytes(b"# " + b"x" * (1024 * 1024) + b"\n")
    with pytest.raises(ConfigError, match="larger than"):
        from_file(huge)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(b"alpha tcp://h:1\nbeta tcp://h")
    with pytest.raises(ConfigError, match="truncated: line 2: malformed URL"):
        from_file(truncated)


def test_discover_merges_self_file_and_srv_and_drops_duplicates(dns_server, make_settings,
                                                                 tmp_path: Path):
    nameserver, _ = dns_server
    pub, rep = free_port(), free_port()
    endpoints = tmp_path / "endpoints"
    endpoints.write_text(
        f"copy-of-me tcp://127.0.0.1:{pub} -\n"
        "pub2 tcp://pub2.example.org:9940 tcp://pub2.example.org:7777\n"
        "extra ipc:///tmp/extra.sock\n"
    )
    settings = make_settings(
        publisher={"name": "me"},
        zmq={"publish": f"tcp://*:{pub}", "replay": f"tcp://0.0.0.0:{rep}"},
        discovery={"endpoints_file": str(endpoints), "nameserver": nameserver,
                   "srv_domains": ["example.org", "fedmsg.test", "nowhere.test"]},
    )
    assert discover(settings) == [
        Endpoint("me", f"tcp://127.0.0.1:{pub}", f"tcp://127.0.0.1:{rep}"),
        Endpoint("pub2", "tcp://pub2.example.org:9940", "tcp://pub2.example.org:7777"),
        Endpoint("extra", "ipc:///tmp/extra.sock", None),
        Endpoint("pub1.example.org", "tcp://pub1.example.org:9950", "tcp://pub1.example.org:9941"),
        Endpoint("pub3.example.org", "tcp://pub3.example.org:9940", "tcp://pub3.example.org:9961"),
        Endpoint("hub0.fedmsg.test", "tcp://hub0.fedmsg.test:3001", None),
        Endpoint("hub1.fedmsg.test", "tcp://hub1.fedmsg.test:3000", None),
    ]


def test_discover_without_self_and_without_replay(make_settings, tmp_path: Path):
    settings = make_settings(zmq={"replay": ""}, discovery={"include_self": False})
    assert discover(settings) == []
    settings = make_settings(zmq={"publish": "ipc:///tmp/me.sock", "replay": ""})
    assert discover(settings) == [Endpoint("busgate", "ipc:///tmp/me.sock", None)]


def test_discover_bad_file_is_a_config_error(make_settings, tmp_path: Path):
    bad = tmp_path / "endpoints"
    bad.write_text("x tcp://h:1\ny nonsense\n")
    with pytest.raises(ConfigError, match="endpoints: line 2: unsupported URL 'nonsense'"):
        discover(make_settings(discovery={"endpoints_file": str(bad)}))
