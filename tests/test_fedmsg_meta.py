"""The fedmsg.meta processor (contrib/fedmsg_meta_busgate) under stock fedmsg 1.1.7.

`make install` installs the processor into the venv (``pip install -e
contrib/fedmsg_meta_busgate``), as a user would add the optional extra; these tests
find it the way fedmsg does (the ``fedmsg.meta`` entry point group) and check that
fedmsg's own functions and a stock ``fedmsg-tail --terse`` say what ``busgate tail
--terse`` says.
"""

from __future__ import annotations

import io
import json
import os
import pprint
import re
import subprocess
import sys
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from gateway.cli import tail
from gateway.messages import TypeIndex, headers
from tests import tail_types
from tests.conftest import BUSGATE, IN_CI, REPO

PREFIX_RE = r"org\.debian\.dev"
UPLOAD = {"user": "alice", "package": "hebcal", "version": "4.31-1"}


def _require_processor() -> None:
    missing = None
    try:
        import fedmsg.meta  # noqa: F401
    except Exception as exc:  # fedmsg 1.1.7 may not import on a future Python
        missing = f"stock fedmsg 1.1.7 cannot be imported ({exc}); `make install` installs it"
    else:
        if "busgate" not in {point.name for point in entry_points(group="fedmsg.meta")}:
            missing = ("the fedmsg.meta processor is not installed; `make install` installs it "
                       "(pip install -e contrib/fedmsg_meta_busgate)")
    if missing:
        if IN_CI:
            pytest.fail(missing)
        pytest.skip(missing)


@pytest.fixture
def meta(monkeypatch):
    """fedmsg.meta with its processors made afresh from the entry points, busgate's with a
    type index given directly (the ``busgate.type_index`` key)."""
    _require_processor()
    import fedmsg.meta

    monkeypatch.setattr(fedmsg.meta, "processors", [])  # falsy: make_processors runs again
    config = {"topic_prefix_re": PREFIX_RE, "busgate.type_index": TypeIndex(tail_types.TYPES)}
    fedmsg.meta.make_processors(**config)
    return fedmsg.meta, config


def envelope(body, topic="org.debian.dev.tailtest.upload.done", **extra):
    return {"topic": topic, "msg": body, "timestamp": 1_700_000_000, "msg_id": "2023-x",
            "i": 1, "username": "busgate", **extra}


def busgate_terse(env) -> str:
    """What ``busgate tail --terse`` prints after the time."""
    out = io.StringIO()
    tail.write(out, env, "terse", index=TypeIndex(tail_types.TYPES))
    return out.getvalue().rstrip("\n").split(" ", 1)[1]


def fedmsg_terse(fm, config, env) -> str:
    """The same fields from fedmsg.meta (title, subtitle, link)."""
    link = fm.msg2link(env, **config)
    return " ".join(filter(None, [fm.msg2title(env, **config), fm.msg2subtitle(env, **config),
                                  link]))


ENVELOPES = {
    "typed, with headers": envelope(UPLOAD, headers=headers(
        tail_types.UploadDone(UPLOAD), 1_700_000_000), seq_id=1, publisher_epoch="e"),
    "typed, claimed by its topic alone": envelope(UPLOAD),
    "untyped busgate message": envelope({"source": "hebcal", "n": 3},
                                        topic="org.debian.dev.dak.package.accept",
                                        seq_id=2, publisher_epoch="e"),
    "type failing on a malformed body": envelope({"package": "hebcal"}, publisher_epoch="e"),
    "hostile summary": envelope({**UPLOAD, "user": "a\x1b[2Jb"}),
}


@pytest.mark.parametrize("case", ENVELOPES)
def test_fedmsg_meta_says_what_busgate_tail_says(meta, case):
    fm, config = meta
    env = ENVELOPES[case]
    assert fm.msg2processor(env, **config).__name__ == "busgate"
    assert fedmsg_terse(fm, config, env) == busgate_terse(env)
    title, subtitle = fm.msg2title(env, **config), fm.msg2subtitle(env, **config)
    link = fm.msg2link(env, **config)
    assert fm.msg2repr(env, **config) == f"{title} -- {subtitle} {link}"


def test_users_packages_link_and_objects_come_from_the_type(meta):
    fm, config = meta
    env = envelope({**UPLOAD, "uploaders": ["bob"]})
    assert fm.msg2usernames(env, **config) == {"alice", "bob"}
    assert fm.msg2packages(env, **config) == {"hebcal"}
    assert fm.msg2link(env, **config) == "https://tracker.example.org/pkg/hebcal"
    assert fm.msg2objects(env, **config) == {"packages/hebcal"}
    assert fm.msg2icon(env, **config).startswith("https://")
    untyped = ENVELOPES["untyped busgate message"]
    assert fm.msg2usernames(untyped, **config) == set()
    assert fm.msg2link(untyped, **config) == ""
    assert fm.msg2objects(untyped, **config) == {"dak/package/accept"}
    broken = ENVELOPES["type failing on a malformed body"]
    assert fm.msg2usernames(broken, **config) == set()  # no KeyError out of fedmsg


def test_other_projects_messages_are_left_to_their_processors(meta):
    fm, config = meta
    foreign = {"topic": "org.fedoraproject.prod.bodhi.update.comment", "msg": {"a": 1},
               "timestamp": 1, "msg_id": "x"}
    assert fm.msg2processor(foreign, **config).__name__ == "unhandled"
    assert fm.msg2subtitle(foreign, **config) == ""
    # A topic no busgate type claims, without busgate's envelope fields, is not busgate's.
    plain = envelope({"a": 1}, topic="org.debian.dev.other.thing.done")
    assert fm.msg2processor(plain, **config).__name__ != "busgate"


# -- a stock fedmsg-tail --terse against a busgate daemon ------------------------------------

class Lines:
    """Lines of a process's stdout, read by a thread (the process never ends by itself)."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))


def _fedmsg_config(directory: Path, publish: str, busgate_config: Path) -> Path:
    config = {
        "endpoints": {"busgate": [publish]},
        "topic_prefix": "org.debian", "environment": "dev", "topic_prefix_re": PREFIX_RE,
        "busgate.config": str(busgate_config),
        "validate_signatures": False, "high_water_mark": 0, "io_threads": 1,
        "post_init_sleep": 0, "zmq_linger": 0, "zmq_tcp_keepalive": 1,
        "zmq_reconnect_ivl": 100, "zmq_reconnect_ivl_max": 1000,
        "logging": {"version": 1,
                    "formatters": {"bare": {"format": "%(message)s"}},
                    "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "bare",
                                         "stream": "ext://sys.stdout"}},
                    "loggers": {"fedmsg": {"level": "INFO", "handlers": ["out"],
                                           "propagate": False}}},
    }
    (directory / "fedmsg.d").mkdir(parents=True)
    (directory / "fedmsg.d" / "busgate.py").write_text(f"config = {pprint.pformat(config)}\n")
    return directory


def test_stock_fedmsg_tail_terse_prints_busgate_tails_summaries(daemon, tmp_path,
                                                                 monkeypatch):
    """Both tails run against one daemon; the source's types come from the registry (a
    dist-info on PYTHONPATH) in all three, and busgate's settings from ``busgate.config``."""
    _require_processor()
    site = tail_types.register(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(REPO)]))
    proc, settings = daemon()
    env = proc.env
    cwd = _fedmsg_config(tmp_path / "fedmsg-cwd", settings.zmq.publish, Path(
        settings.loaded_from[0]))
    script = Path(sys.executable).with_name("fedmsg-tail")
    command = [str(script)] if script.exists() else [
        sys.executable, "-c", "import sys; from fedmsg.commands.tail import tail; sys.exit(tail())"]
    stock = subprocess.Popen([*command, "--terse"], cwd=cwd, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**env, "BUSGATE_CONFIG": ""})  # busgate.config is used
    ours = subprocess.Popen([*BUSGATE, "tail", "--terse", "--topic", "tailtest",
                             "--timeout", "60"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stock_lines, our_lines = Lines(stock), Lines(ours)

    def common() -> set[str]:
        theirs = {line.replace(" -- ", " ", 1).rstrip() for line in stock_lines.lines
                  if " -- " in line}
        mine = {line.split(" ", 1)[1] for line in our_lines.lines}
        return theirs & mine

    try:
        deadline = time.monotonic() + 30
        n = 0
        while len(common()) < 4 and time.monotonic() < deadline:
            for user in ("alice", "bob"):
                body = {"user": user, "package": "hebcal", "version": f"{n}.0-1"}
                subprocess.run([*BUSGATE, "publish", "--json-input", "--modname", "tailtest",
                                "--topic", "upload.done"], input=json.dumps(body), text=True,
                               env=env, cwd=REPO, check=True)
            subprocess.run([*BUSGATE, "publish", "--json-input", "--modname", "tailtest",
                            "--topic", "note.added"], input=json.dumps({"note": f"n{n}"}),
                           text=True, env=env, cwd=REPO, check=True)
            n += 1
            time.sleep(0.05)
    finally:
        stock.kill()
        ours.kill()
        stock.wait(10)
        ours.wait(10)
    stock_lines.thread.join(5)
    our_lines.thread.join(5)
    shared = common()
    assert len(shared) >= 4, (stock_lines.lines, our_lines.lines, stock.stderr.read())
    assert any(line.startswith("tailtest.upload.done alice uploaded hebcal ")
               and line.endswith(" https://tracker.example.org/pkg/hebcal") for line in shared)
    assert any(line.startswith("tailtest.note.added note=n") for line in shared), shared
    # No disagreement: a message both tails printed reads the same in both (each message
    # is told apart by its version or note, which only it carries).
    mine = {line.split(" ", 1)[1] for line in our_lines.lines}
    for line in stock_lines.lines:
        if " -- " not in line or not line.startswith("tailtest."):
            continue  # fedmsg-tail also shows busgate's heartbeats; busgate tail hides them
        token = re.search(r"\w+ uploaded hebcal \d+\.0-1|note=n\d+", line)
        assert token, line
        same = [m for m in mine if re.search(re.escape(token.group()) + r"\b", m)]
        assert same in ([], [line.replace(" -- ", " ", 1).rstrip()]), (line, same)
