"""The scm adapter's parts on their own: stdin lines, names, tags, git output, git runner."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from adapters.scm.commits import parse_log
from adapters.scm.git import Deadline, Git, GitError, GitTimeout, split_nul
from adapters.scm.graph import NewCommits, attribute, quotas, reaches
from adapters.scm.push import pusher, repo_name
from adapters.scm.refs import parse_line, parse_lines
from adapters.scm.tags import parse_batch, parse_ident, parse_tag
from gateway import config
from gateway.errors import ParseError
from tests.conftest import REPO

A, B = "a" * 40, "b" * 40
Z = "0" * 40
A256, Z256 = "c" * 64, "0" * 64


@pytest.mark.parametrize(("line", "action", "obj", "name"), [
    (f"{Z} {A} refs/heads/main", "create", "branch", "main"),
    (f"{A} {B} refs/heads/feature/x", "update", "branch", "feature/x"),
    (f"{A} {Z} refs/tags/v1.0", "delete", "tag", "v1.0"),
    (f"{Z256} {A256} refs/tags/-v", "create", "tag", "-v"),
    (f"{A} {B} refs/notes/commits", "update", None, "refs/notes/commits"),
    (f"{A} {B} refs/heads/", "update", None, ""),
])
def test_ref_lines_are_classified(line: str, action: str, obj: str | None, name: str) -> None:
    update = parse_line(line.encode())
    assert update.action == action and update.object == obj
    assert update.name == name


def test_ids_are_none_when_zero_and_refs_keep_their_bytes() -> None:
    update = parse_line(f"{Z256} {A256} refs/heads/caf\xe9".encode("latin-1"))
    assert update.old is None and update.new == A256
    assert update.ref == "refs/heads/caf\\xe9"
    assert update.raw_ref == b"refs/heads/caf\xe9"


@pytest.mark.parametrize("line", [
    b"", b"garbage", f"{A} {B}".encode(), f"{A} {B} ".encode(),
    f"{Z} {Z} refs/heads/x".encode(),
    f"{A} {A256} refs/heads/x".encode(),
    f"{A[:-1]} {B} refs/heads/x".encode(),
    f"{A.upper()} {B} refs/heads/x".encode(),
    f"{A} {B} heads/x".encode(),
    f"{A} {B} refs/heads/a b".encode(),
    f"{A} {B} refs/heads/a\x1b[31m".encode(),
    f"{A} {B} refs/heads/a\x00b".encode(),
    f"{A} {B} refs/heads/".encode() + b"x" * 5000,
    f"g{A[1:]} {B} refs/heads/x".encode(),
])
def test_malformed_lines_are_errors(line: bytes) -> None:
    with pytest.raises(ParseError):
        parse_line(line)


def test_parse_lines_keeps_good_lines_and_reports_bad_ones() -> None:
    data = f"{Z} {A} refs/heads/a\r\n\nnonsense\n{A} {Z} refs/tags/t".encode()
    updates, problems = parse_lines(data)
    assert [u.ref for u in updates] == ["refs/heads/a", "refs/tags/t"]
    assert problems == ["stdin line 3: not an '<old> <new> <ref>' line: nonsense"]


@pytest.mark.parametrize(("path", "root", "name"), [
    ("/srv/git/debian/dpkg.git", "", "dpkg"),
    ("/srv/git/debian/dpkg.git", "/srv/git", "debian/dpkg"),
    ("/srv/git/debian/dpkg.git/", "/srv/git/", "debian/dpkg"),
    ("/srv/git/debian/dpkg.git", "/elsewhere", "dpkg"),
    ("/home/me/project/.git", "", "project"),
    ("/home/me/project/.git", "/home/me", "project"),
    ("/srv/git/.git", "/srv/git", "git"),
    ("/srv/git", "/srv/git", "git"),
    ("/srv/x/caf\udce9.git", "", "caf\\xe9"),
])
def test_repository_names(path: str, root: str, name: str) -> None:
    assert repo_name(path, root) == name


def test_pusher_prefers_the_first_variable_set() -> None:
    names = ["GL_USERNAME", "REMOTE_USER"]
    assert pusher({"GL_USERNAME": "gl", "REMOTE_USER": "web"}, names) == "gl"
    assert pusher({"GL_USERNAME": " ", "REMOTE_USER": "web"}, names) == "web"
    assert pusher({"REMOTE_USER": "b\udcffad"}, names) == "b\\xffad"
    assert pusher({}, names)  # the Unix user


SIGNED_TAG = (
    b"object " + A.encode() + b"\ntype commit\ntag v2.0\n"
    b"tagger Jos\xe9 Tagger <jt@example.org> 1700000000 -0530\nencoding ISO-8859-1\n\n"
    b"Version 2.0 \xe9t\xe9\n-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n"
)


def test_annotated_tag_parsing() -> None:
    tag = parse_tag(SIGNED_TAG, 2000)
    assert tag == {
        "object": A, "type": "commit", "name": "v2.0",
        "tagger": {"name": "José Tagger", "email": "jt@example.org",
                   "date": "2023-11-14T16:43:20-05:30"},
        "message": "Version 2.0 été", "message_truncated": False, "signed": True,
    }
    short = parse_tag(SIGNED_TAG, 5)
    assert short["message"] == "Versi" and short["message_truncated"]


def test_odd_tags_do_not_raise() -> None:
    bare = parse_tag(b"object " + A.encode() + b"\ntype tree\ntag old\n\n", 100)
    assert bare["tagger"] is None and bare["message"] == "" and not bare["signed"]
    assert parse_ident(b"no email here")["date"] is None
    assert parse_ident(b"X <x@y> 99999999999999999999 +9999")["date"] is None
    assert parse_ident(b"<x@y> 0 +0000") == {"name": "", "email": "x@y",
                                             "date": "1970-01-01T00:00:00+00:00"}
    weird = parse_tag(b"\xff\xfe garbage without structure", 100)
    assert weird["object"] == "" and weird["tagger"] is None
    assert parse_tag(b"tag x\nencoding rot13\n\nmsg", 100)["message"] == "msg"


def test_batch_output_with_missing_and_cut_records() -> None:
    data = (f"{A} missing\n".encode() + f"{B} tag {len(SIGNED_TAG)}\n".encode() + SIGNED_TAG
            + b"\n" + f"{A} commit 10\n".encode() + b"tree x\n\n\n")
    tags = parse_batch(data, 100)
    assert list(tags) == [B] and tags[B]["name"] == "v2.0"
    cut = parse_batch(data[:len(data) // 2], 100)  # output cut inside a tag: left out
    assert cut == {}
    whole = data.index(b"\n" + f"{A} commit".encode()) + 1
    assert list(parse_batch(data[:whole], 100)) == [B]  # cut after it: kept
    assert parse_batch(b"", 100) == {} and parse_batch(b"\n\n\xff", 100) == {}


def test_split_nul_bounds_every_token() -> None:
    chunks = iter([b"ab\0" + b"x" * 10, b"x" * 10 + b"\0c", b"d\0", b"tail"])
    assert list(split_nul(chunks, 5)) == [b"ab", b"xxxxx", b"cd", b"tail"]
    assert list(split_nul(iter([b"\0\0"]), 5)) == [b"", b""]


def _record(oid: str, subject: bytes, body: bytes = b"") -> list[bytes]:
    return [b"\x01" + oid.encode(), b"", b"N", b"n@x", b"2024-01-01T00:00:00+00:00",
            b"N", b"n@x", b"2024-01-01T00:00:00+00:00", subject, body, b"\x02"]


def test_parse_log_yields_whole_commits_only() -> None:
    tokens = [*_record(A, b"one"), b"\n1\t2\tf", b"-\t-\tbin", b"3\t0\tpath\twith\ttab",
              *_record(B, b"two", b"body\n")]
    commits = list(parse_log(iter(tokens), max_files=2, max_chars=100))
    assert [c["subject"] for c in commits] == ["one", "two"]
    assert commits[0]["files"] == [{"path": "f", "added": 1, "deleted": 2},
                                   {"path": "bin", "added": None, "deleted": None}]
    assert commits[0]["total_files"] == 3 and commits[0]["files_truncated"]
    assert commits[1]["body"] == "body"
    cut = tokens[:-4]  # the stream ended inside the second record (deadline)
    assert [c["id"] for c in parse_log(iter(cut), max_files=2, max_chars=100)] == [A]
    broken = [*_record(A, b"x")[:-1], b"not the sentinel"]
    with pytest.raises(GitError):
        list(parse_log(iter(broken), max_files=2, max_chars=100))


def _script(tmp_path: Path, text: str) -> str:
    path = tmp_path / "fake-git"
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return str(path)


def test_git_runner_bounds_time_output_and_reports_failures(tmp_path: Path) -> None:
    slow = Git(tmp_path, Deadline(0.3), _script(tmp_path, "sleep 20\n"))
    started = time.monotonic()
    with pytest.raises(GitTimeout):
        slow.run(["log"])
    assert time.monotonic() - started < 2
    with pytest.raises(GitTimeout):
        slow.status(["merge-base"])  # deadline already spent
    chatty = Git(tmp_path, Deadline(10), _script(tmp_path, "exec yes\n"))
    out = chatty.run(["log"], limit=1000)
    assert out.cut and len(out.data) == 1000
    failing = Git(tmp_path, Deadline(10), _script(tmp_path, "echo 'fatal: bad' >&2\nexit 3\n"))
    with pytest.raises(GitError, match="status 3: fatal: bad"):
        failing.run(["log"])
    echo = Git(tmp_path, Deadline(10), _script(tmp_path, "cat\n"))
    big = os.urandom(3_000_000)  # larger than a pipe buffer both ways
    assert echo.run(["x"], big, limit=1 << 23).data == big
    missing = Git(tmp_path, Deadline(10), str(tmp_path / "no-such-git"))
    with pytest.raises(GitError, match="cannot run"):
        missing.run(["log"])
    with pytest.raises(GitError, match="cannot run"):
        missing.status(["log"])


def test_example_config_documents_the_git_section() -> None:
    settings = config.load(REPO / "conf" / "examples" / "git.toml")
    from adapters.scm.settings import GitSettings

    defaults = GitSettings()
    assert settings.git == defaults


@pytest.mark.parametrize("data", [
    b"plain", "Håvard".encode(), b"H\xe5vard", b"caf\xe9 \x93quoted\x94", b"\x81\x8d\x8f odd",
    b"body \xff\xfe", "日本".encode(), b"",
])
def test_text_falls_back_like_the_mail_adapters(data: bytes) -> None:
    from adapters import mailparse
    from adapters.scm import text

    assert text.FALLBACK_CHARSETS == mailparse.FALLBACK_CHARSETS
    assert text.decode(data) == mailparse.decode_bytes(data, None)
    assert text.decode(data, "iso-8859-15") == mailparse.decode_bytes(data, "iso-8859-15")
    assert "\ufffd" not in text.decode(data)
    assert text.decode(b"H\xe5vard") == "Håvard"


def graph(edges: dict[str, str]) -> NewCommits:
    """A NewCommits from ``{"c": "b a"}`` (commit -> parents), children listed first."""
    parents = {c: tuple(p.split()) for c, p in edges.items()}
    return NewCommits(parents=parents, order=list(edges))


def test_each_new_commit_goes_to_the_nearest_tip() -> None:
    # main: m3 - m2 - m1 (- old); tag v1 at m1; side s1 merged by m3; x is an old commit
    new = graph({"m3": "m2 s1", "s1": "m1", "m2": "m1", "m1": "old", "t1": "m2"})
    owner = attribute(new, [("m3", 0), ("t1", 2), ("m1", 1)])
    assert owner == {"m3": 0, "m2": 0, "s1": 0, "t1": 2, "m1": 1}
    # two refs at one commit: the first in preference order (the caller puts branches first)
    assert attribute(new, [("m3", 5), ("m3", 4)])["m1"] == 5
    # equal distance from two tips: the earlier tip wins; a cut listing leaves orphans unowned
    tie = graph({"a": "c", "b": "c", "c": ""})
    assert attribute(tie, [("b", 1), ("a", 0)])["c"] == 1
    assert attribute(graph({"a": "b", "b": ""}), [("zz", 0)]) == {}


def test_fast_forward_from_the_new_history_alone() -> None:
    new = graph({"m3": "m2 s1", "s1": "old1", "m2": "m1", "m1": "old0"})
    assert reaches(new, "m3", "old0", limit=10) is True
    assert reaches(new, "m3", "old1", limit=10) is True
    assert reaches(new, "m3", "m3", limit=10) is True
    assert reaches(new, "m3", "elsewhere", limit=10) is None  # git must be asked
    assert reaches(new, "not-new", "old0", limit=10) is None
    assert reaches(new, "m3", "old0", limit=1) is None  # walk bounded


@pytest.mark.parametrize(("sizes", "budget", "shares"), [
    ([5, 3, 0], 100, [5, 3, 0]),
    ([100, 100, 100], 30, [10, 10, 10]),
    ([100, 2, 100], 31, [15, 2, 14]),
    ([1] * 5, 3, [1, 1, 1, 0, 0]),
    ([], 10, []),
])
def test_commit_budget_is_shared_fairly(sizes: list[int], budget: int,
                                        shares: list[int]) -> None:
    assert quotas(sizes, budget) == shares
    assert sum(shares) <= budget
