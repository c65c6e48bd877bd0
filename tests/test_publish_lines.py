"""``busgate publish`` writes the spool lines it always wrote, with less work per line
(issue 16): bodies encoded to bytes once, a stream's content keys computed only when the
input turns out to be a stream (and equal to the old per-line keys, so a retry after an
upgrade still adds only what is missing), lines written in batches of WRITE_BATCH bytes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from gateway import publishing
from gateway.cli import publish
from tests.conftest import BUSGATE, REPO, mark_spool, write_config


def _publish(tmp: Path, data: bytes, *args: str) -> tuple[subprocess.CompletedProcess[bytes],
                                                          list[bytes]]:
    """Run ``busgate publish`` on ``data``; its result and the spool lines, oldest first."""
    tmp.mkdir(exist_ok=True)
    cfg = write_config(tmp / "c.toml", {"state": {"dir": str(tmp / "var")}})
    mark_spool(tmp / "var" / "spool")
    env = {**os.environ, "BUSGATE_CONFIG": str(cfg)}
    result = subprocess.run([*BUSGATE, "publish", *args], input=data, env=env, cwd=REPO,
                            capture_output=True, timeout=120)
    new = tmp / "var" / "spool" / "new"
    lines = [line for item in sorted(new.iterdir()) for line in item.read_bytes().splitlines()]
    return result, lines


def test_a_stream_is_keyed_by_the_input_up_to_each_line(tmp_path) -> None:
    """More than CHUNK lines make a stream: line n's key is the SHA-256 of the command's
    options and the input up to and including line n, as before the keys were computed
    at hand-over (empty lines are not input lines)."""
    count = publish.CHUNK + 5
    data = b"".join(b"line %d\n" % n + (b"\n" if n == 3 else b"") for n in range(count))
    result, lines = _publish(tmp_path, data, "--modname", "m", "--topic", "a.b")
    assert result.returncode == 0, result.stderr
    assert len(lines) == count
    running = hashlib.sha256(b"m\0a.b\0False\0")
    for n, line in enumerate(lines):
        running.update(b"line %d\n" % n)
        record = json.loads(line)
        assert record["key"] == f"publish:{running.hexdigest()[:40]}"
        assert record["body"] == {"log": f"line {n}"}


def test_one_item_lines_are_the_shared_line_format(tmp_path) -> None:
    """An input that is one item: run-unique keys and exactly the bytes
    ``publishing.line`` makes for the head, key and canonical body."""
    bodies = [{"z": "J\u00f6rg \u20ac \U0001f600", "a": [1, None, True]}, {"f": 1.5e-7},
              {"del": "\x7f", "b": "\\x41 \\U0001"}, {"big": 2 ** 70}]
    data = b"".join(json.dumps(body).encode() + b"\n" for body in bodies)
    result, lines = _publish(tmp_path, data, "--json-input", "--topic", "obj.sub.done")
    assert result.returncode == 0, result.stderr
    head = publishing.record_head("logger", ["obj", "sub", "done"])
    for n, (line, body) in enumerate(zip(lines, bodies, strict=True)):
        key = json.loads(line)["key"]
        assert key.startswith("publish:") and key.endswith(f":{n}")
        expected = publishing.line(head, key, json.dumps(body, sort_keys=True,
                                                         separators=(",", ":")))
        assert line + b"\n" == expected


def test_lines_are_written_in_batches_of_write_batch_bytes() -> None:
    """One write per WRITE_BATCH bytes (not one per line), the bytes those of
    ``publishing.line``, nothing lost at a batch's edge."""
    head = publishing.record_head("svc", ["obj", "done"]).encode()
    bodies = [b'{"n":%d,"pad":"%s"}' % (n, b"x" * 1000) for n in range(3000)]
    keys = [b"publish:k%d" % n for n in range(3000)]
    chunks = list(publish._batches(head, keys, bodies))
    expected = b"".join(publishing.line(head.decode(), key.decode(), body.decode())
                        for key, body in zip(keys, bodies, strict=True))
    assert b"".join(chunks) == expected
    assert len(chunks) == len(expected) // publish.WRITE_BATCH + 1  # ~3.3 MB: 4 writes
    assert all(len(chunk) >= publish.WRITE_BATCH for chunk in chunks[:-1])
    assert all(len(chunk) < publish.WRITE_BATCH + 2000 for chunk in chunks)


def test_a_line_that_is_not_utf8_keeps_its_bytes_as_escaped_surrogates(tmp_path) -> None:
    result, lines = _publish(tmp_path, b'{"x": "a\xff\xfeb"}\nplain \xc3\xa9 \xff\n',
                             "--json-input")
    assert result.returncode == 65, result.stderr  # the second line is not JSON
    (line,) = lines
    assert b'"body":{"x":"a\\udcff\\udcfeb"}' in line
    _, (text,) = _publish(tmp_path / "t", b"plain \xc3\xa9 \xff\n")
    assert b'"body":{"log":"plain \\u00e9 \\ufffd"}' in text
