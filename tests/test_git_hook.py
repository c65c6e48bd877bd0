"""``busgate git-hook`` on real repositories: a bare repository with the hook installed by
``--install``, real ``git push`` from a clone, events read back from the spool."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from adapters.scm.messages import TYPES
from gateway import config
from gateway.event import Event
from gateway.ingest import ingest, parse_events
from gateway.messages import Message, MessageValidationError, TypeIndex
from gateway.runtime import open_spool, open_store
from tests.conftest import BUSGATE, REPO, adopt, write_config
from tests.messages_helpers import check_events

ZERO = "0" * 40
INDEX = TypeIndex(TYPES)


def message_type(obj: str, event: str) -> type[Message]:
    return INDEX.lookup(("git", obj, event))


def check_schema(event: Event) -> None:
    """The body validates against its message type (whatever ``git.service`` named the
    topic), and the event's users and packages are the type's."""
    (message,) = check_events([dataclasses.replace(event, service="git")], INDEX)
    assert (list(event.usernames), list(event.packages)) == (message.usernames,
                                                               message.packages)


class Server:
    """A bare repository with busgate's hook, a clone to push from, and the hook's spool."""

    def __init__(self, tmp: Path, object_format: str = "sha1", git: dict[str, Any] | None = None,
                 install_args: tuple[str, ...] = ()):
        self.tmp = tmp
        self.gitconfig = tmp / "gitconfig"
        self.gitconfig.write_text("[init]\n\tdefaultBranch = main\n[user]\n\tname = Alice Doe\n"
                                  "\temail = alice@example.org\n[advice]\n\tdetachedHead = false\n")
        self.config_path = write_config(tmp / "busgate.toml", {
            "state": {"dir": str(tmp / "var")}, "git": git or {}})
        self.settings = config.load(self.config_path)
        adopt(self.settings)  # the daemon's spool, as `busgate run` left it
        self.env = {**os.environ, "GIT_CONFIG_GLOBAL": str(self.gitconfig),
                    "GIT_CONFIG_NOSYSTEM": "1", "BUSGATE_CONFIG": str(self.config_path),
                    "GL_USERNAME": "alice"}
        for name in ("GIT_DIR", "GIT_WORK_TREE", "REMOTE_USER", "GL_USER", "GIT_PUSHER"):
            self.env.pop(name, None)
        self.bare = tmp / "srv" / "pkg.git"
        self.git("init", "-q", "--bare", f"--object-format={object_format}", str(self.bare),
                 cwd=tmp)
        result = self.busgate("git-hook", "--install", str(self.bare), *install_args)
        assert result.returncode == 0, result.stderr
        self.work = tmp / "work"
        self.git("init", "-q", f"--object-format={object_format}", str(self.work), cwd=tmp)
        self.git("remote", "add", "origin", str(self.bare))
        self.spool = open_spool(self.settings)

    def git(self, *args: str, cwd: Path | None = None, input: bytes | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(["git", *args], cwd=cwd or self.work, input=input,
                                capture_output=True, env=env or self.env, timeout=60)
        assert result.returncode == 0, (args, result.stderr.decode(errors="replace"))
        return result

    def busgate(self, *args: str, input: bytes = b"", env: dict[str, str] | None = None,
                cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*BUSGATE, *args], input=input, capture_output=True,
                              env=env or self.env, cwd=cwd or REPO, timeout=60)

    def commit(self, message: str = "change", files: dict[str, str | bytes] | None = None,
               *extra: str) -> str:
        for name, content in (files or {f"file-{time.monotonic_ns()}": "x\n"}).items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        self.git("add", "-A")
        self.git("commit", "-q", "-F", "-", *extra, input=message.encode())
        return self.rev("HEAD")

    def rev(self, what: str) -> str:
        return self.git("rev-parse", what).stdout.decode().strip()

    def push(self, *args: str, env: dict[str, str] | None = None) -> tuple[list[Event], str]:
        """Push; return the events of the spool items it produced, and git's stderr."""
        result = self.git("push", "-q", "origin", *args, env=env)
        return self.take(), result.stderr.decode(errors="replace")

    def take(self) -> list[Event]:
        items = self.spool.pending()
        events = []
        for item in items:
            events += parse_events(item.read_bytes())
            self.spool.remove(item)
        for event in events:
            check_schema(event)
        self.items = len(items)
        return events


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path)


def topics(events: list[Event]) -> list[str]:
    return [".".join(e.topic_tokens()) for e in events]


def test_first_push_into_an_empty_repository(server: Server) -> None:
    first = server.commit("first\n\nwhy it matters", {"README": "a\nb\n", "img.bin": b"\0\1\2"})
    second = server.commit("second", {"README": "a\nc\n"})
    events, stderr = server.push("HEAD:refs/heads/main")
    assert stderr == ""
    assert server.items == 1
    assert topics(events) == ["git.branch.create"]
    body = events[0].body
    assert body["repository"] == "pkg" and body["ref"] == "refs/heads/main"
    assert body["name"] == "main" and body["old"] is None and body["new"] == second
    assert body["pusher"] == "alice" and events[0].usernames == ("alice",)
    assert events[0].packages == ("pkg",)
    assert events[0].key == f"git:pkg:refs/heads/main:0:{second}"
    assert body["complete"] and not body["truncated"] and body["total_commits"] == 2
    assert [c["id"] for c in body["commits"]] == [second, first]  # newest first
    newest, oldest = body["commits"]
    assert newest["parents"] == [first] and oldest["parents"] == []
    assert oldest["subject"] == "first" and oldest["body"] == "why it matters"
    assert oldest["author"] == {"name": "Alice Doe", "email": "alice@example.org"}
    assert sorted((f["path"], f["added"], f["deleted"]) for f in oldest["files"]) == [
        ("README", 2, 0), ("img.bin", None, None)]
    assert newest["files"] == [{"path": "README", "added": 1, "deleted": 1}]
    assert oldest["date"].startswith(time.strftime("%Y-"))


def test_web_url_links_each_event_from_the_config_file(tmp_path: Path) -> None:
    """``[git] web_url`` in busgate.toml reaches the hook's events as their ``url``
    (the link ``busgate tail`` shows); a deletion has none."""
    server = Server(tmp_path, git={"web_url": "https://salsa.example.org/{repo}/-/commit/{sha}",
                                   "service": "scm"})
    tip = server.commit("first")
    events, _ = server.push("HEAD:refs/heads/topic")
    assert topics(events) == ["scm.branch.create"]
    assert events[0].body["url"] == f"https://salsa.example.org/pkg/-/commit/{tip}"
    (message,) = check_events([dataclasses.replace(events[0], service="git")], INDEX)
    assert message.url == events[0].body["url"]
    assert message.summary == 'alice pushed 1 commit to pkg topic (new branch): "first"'
    events, _ = server.push(":refs/heads/topic")
    assert events[0].body["url"] is None


def test_fast_forward_forced_and_delete(server: Server) -> None:
    base = server.commit("base")
    server.push("HEAD:main", "HEAD:dev")  # deleting the default branch is refused
    one = server.commit("one")
    two = server.commit("two")
    events, _ = server.push("HEAD:dev")
    assert topics(events) == ["git.branch.update"]
    body = events[0].body
    assert body["old"] == base and body["new"] == two and body["forced"] is False
    assert [c["id"] for c in body["commits"]] == [two, one]

    server.git("reset", "-q", "--hard", one)
    rewritten = server.commit("two, rewritten")
    events, _ = server.push("--force", "HEAD:dev")
    body = events[0].body
    assert topics(events) == ["git.branch.update"] and body["forced"] is True
    assert body["old"] == two and [c["id"] for c in body["commits"]] == [rewritten]

    events, _ = server.push(":dev")
    assert topics(events) == ["git.branch.delete"]
    body = events[0].body
    assert body["old"] == rewritten and body["new"] is None and body["commits"] == []
    assert body["forced"] is False and body["complete"]


def test_new_branch_lists_only_commits_no_ref_had(server: Server) -> None:
    server.commit("base")
    server.push("HEAD:main")
    events, _ = server.push("HEAD:refs/heads/copy")
    assert topics(events) == ["git.branch.create"]
    assert events[0].body["commits"] == [] and events[0].body["total_commits"] == 0
    new = server.commit("on topic")
    events, _ = server.push("HEAD:refs/heads/topic")
    assert [c["id"] for c in events[0].body["commits"]] == [new]


def test_one_push_of_several_refs_is_one_spool_item(server: Server) -> None:
    server.commit("base")
    server.push("HEAD:main")
    tip = server.commit("more")
    server.git("tag", "v1")
    events, _ = server.push("HEAD:main", "HEAD:refs/heads/b2", "v1")
    assert server.items == 1
    assert sorted(topics(events)) == ["git.branch.create", "git.branch.update", "git.tag.create"]
    # a commit new to the push is listed once: by the first branch in push order naming it
    by_ref = {e.body["ref"]: e.body for e in events}
    assert [c["id"] for c in by_ref["refs/heads/main"]["commits"]] == [tip]
    assert by_ref["refs/heads/main"]["total_commits"] == 1
    for ref in ("refs/heads/b2", "refs/tags/v1"):
        assert by_ref[ref]["commits"] == [] and by_ref[ref]["total_commits"] == 0
    assert all(e.body["complete"] and not e.body["truncated"] for e in events)


def test_tags_lightweight_annotated_update_and_delete(server: Server) -> None:
    tip = server.commit("release")
    server.push("HEAD:main")
    server.git("tag", "light")
    server.git("tag", "-a", "v1.0", "-m", "Release 1.0\n\nWith notes.")
    events, _ = server.push("light", "v1.0")
    by_name = {e.body["name"]: e for e in events}
    assert topics(events) == ["git.tag.create", "git.tag.create"]
    light, annotated = by_name["light"].body, by_name["v1.0"].body
    assert light["object_type"] == "commit" and light["tag"] is None and light["commits"] == []
    assert annotated["object_type"] == "tag" and annotated["new"] == server.rev("v1.0")
    tag = annotated["tag"]
    assert tag["object"] == tip and tag["type"] == "commit" and tag["name"] == "v1.0"
    assert tag["message"] == "Release 1.0\n\nWith notes." and not tag["signed"]
    assert tag["tagger"]["name"] == "Alice Doe" and tag["tagger"]["email"] == "alice@example.org"
    assert tag["tagger"]["date"].startswith(time.strftime("%Y-"))

    newer = server.commit("fix")
    server.git("tag", "-f", "-a", "v1.0", "-m", "Release 1.0, again")
    events, _ = server.push("--force", "v1.0")
    assert topics(events) == ["git.tag.update"]
    body = events[0].body
    assert body["tag"]["object"] == newer and body["forced"] is False
    assert [c["id"] for c in body["commits"]] == [newer]  # the tag brought a new commit

    events, _ = server.push(":refs/tags/v1.0", ":refs/tags/light")
    assert topics(events) == ["git.tag.delete", "git.tag.delete"]
    assert all(e.body["tag"] is None and e.body["new"] is None for e in events)


def test_merge_lists_the_merge_and_the_side_commits(server: Server) -> None:
    server.commit("base", {"a": "1\n"})
    server.push("HEAD:main")
    server.git("checkout", "-q", "-b", "side")
    side = server.commit("side work", {"s": "s1\ns2\n"})
    server.git("checkout", "-q", "main")
    mainline = server.commit("main work", {"a": "1\n2\n"})
    server.git("merge", "-q", "--no-ff", "-m", "Merge side", "side")
    merge = server.rev("HEAD")
    events, _ = server.push("HEAD:main")
    body = events[0].body
    assert body["forced"] is False
    ids = [c["id"] for c in body["commits"]]
    assert ids[0] == merge and set(ids) == {merge, side, mainline}
    merge_commit = body["commits"][0]
    assert merge_commit["parents"] == [mainline, side]
    # a merge's files are what it changed on the branch: the diff to its first parent
    assert merge_commit["files"] == [{"path": "s", "added": 2, "deleted": 0}]


def test_hostile_ref_names_are_data(server: Server) -> None:
    server.commit("base")
    names = ["-n", "--help", "$(touch${IFS}pwned)", ";touch${IFS}pwned2", "it's\"quoted\"",
             "ünïcödé", "a|b&c", "--", "-", "x/--upload-pack=touch_pwned3"]
    refspecs = [f"HEAD:refs/heads/{n}" for n in names]
    events, stderr = server.push(*refspecs, "HEAD:refs/tags/-v")
    assert stderr == ""
    got = {e.body["ref"] for e in events}
    assert got == {f"refs/heads/{n}" for n in names} | {"refs/tags/-v"}
    assert {e.body["name"] for e in events if e.object == "branch"} == set(names)
    assert not list(server.tmp.rglob("pwned*")) and not list(REPO.glob("pwned*"))
    assert all(e.body["complete"] for e in events)


def test_non_utf8_messages_and_declared_encodings(server: Server) -> None:
    base = server.commit("base")
    server.push("HEAD:main")
    # a commit object with Latin-1 bytes and no encoding header (git commit would convert
    # them, so write the object itself): each field UTF-8, else windows-1252/Latin-1, like mail
    tree = server.rev("HEAD^{tree}")
    obj = (f"tree {tree}\nparent {base}\n".encode()
           + b"author Ren\xe9 <r@example.org> 1700000000 +0100\n"
           + b"committer Ren\xe9 <r@example.org> 1700000000 +0100\n\n"
           + b"caf\xe9 raw\n\nbody \xff\xfe\n")
    raw = server.git("hash-object", "-t", "commit", "-w", "--stdin",
                     input=obj).stdout.decode().strip()
    server.git("reset", "-q", "--hard", raw)
    # a declared encoding (i18n.commitEncoding): git re-encodes it to UTF-8 for us
    (server.work / "g").write_bytes(b"\xe9t\xe9\n")
    server.git("add", "g")
    env = {**server.env, "GIT_AUTHOR_NAME": "Ren\udce9"}  # Latin-1 byte, as fsencode gives
    server.git("-c", "i18n.commitEncoding=ISO-8859-1", "commit", "-q", "-F", "-",
               input="Fête déclarée\n\nÉté\n".encode("latin-1"), env=env)
    declared = server.rev("HEAD")
    assert b"encoding ISO-8859-1" in server.git("cat-file", "commit", declared).stdout
    events, _ = server.push("HEAD:main")
    commits = {c["id"]: c for c in events[0].body["commits"]}
    assert commits[raw]["subject"] == "café raw"
    assert commits[raw]["body"] == "body ÿþ"
    assert commits[raw]["author"]["name"] == "René"
    assert commits[raw]["date"] == "2023-11-14T23:13:20+01:00"
    assert commits[declared]["subject"] == "Fête déclarée"
    assert commits[declared]["body"] == "Été"
    assert commits[declared]["author"]["name"] == "René"
    assert commits[declared]["files"] == [{"path": "g", "added": 1, "deleted": 0}]


def test_huge_diff_and_message_are_bounded(tmp_path: Path) -> None:
    server = Server(tmp_path, git={"max_files": 50, "max_body_chars": 300})
    files: dict[str, str | bytes] = {f"many/{i:05d}.txt": f"{i}\n" for i in range(3000)}
    files["big.txt"] = "line\n" * 400_000
    message = "huge\n\n" + ("é" * 99 + "\n") * 20_000  # a 4 MB message
    server.commit(message, files)
    events, stderr = server.push("HEAD:main")
    assert stderr == ""
    commit = events[0].body["commits"][0]
    assert commit["total_files"] == 3001 and len(commit["files"]) == 50
    assert commit["files_truncated"] is True
    assert len(commit["body"]) == 300 and commit["body_truncated"] is True
    assert commit["subject"] == "huge"
    assert events[0].body["complete"]


def test_ten_thousand_commits(tmp_path: Path) -> None:
    server = Server(tmp_path, git={"max_commits": 100})
    stream = []
    for i in range(10_000):
        data = f"{i}\n".encode()
        message = f"commit {i}\n".encode()
        stream.append(b"commit refs/heads/main\n")
        stream.append(b"committer Bulk <bulk@example.org> %d +0000\n" % (1_600_000_000 + i))
        stream.append(b"data %d\n%s" % (len(message), message))
        stream.append(b"M 100644 inline counter\ndata %d\n%s\n" % (len(data), data))
    server.git("fast-import", "--quiet", input=b"".join(stream))
    server.git("checkout", "-q", "main")
    started = time.monotonic()
    events, stderr = server.push("main")
    elapsed = time.monotonic() - started
    assert stderr == ""
    body = events[0].body
    assert body["total_commits"] == 10_000 and len(body["commits"]) == 100
    assert body["truncated"] is True and body["complete"] is True
    assert body["commits"][0]["subject"] == "commit 9999"
    assert body["commits"][99]["subject"] == "commit 9900"
    assert body["commits"][0]["files"] == [{"path": "counter", "added": 1, "deleted": 1}]
    assert elapsed < 30


def test_sha256_repository(tmp_path: Path) -> None:
    server = Server(tmp_path, object_format="sha256")
    first = server.commit("first")
    events, _ = server.push("HEAD:main")
    assert len(first) == 64
    second = server.commit("second")
    server.git("tag", "-a", "v2", "-m", "two")
    events, _ = server.push("HEAD:main", "v2")
    update, tag = events
    assert topics(events) == ["git.branch.update", "git.tag.create"]
    assert update.body["old"] == first and update.body["new"] == second
    assert [c["id"] for c in update.body["commits"]] == [second]
    assert update.body["commits"][0]["parents"] == [first]
    assert tag.body["tag"]["object"] == second and len(tag.body["new"]) == 64
    assert update.key == f"git:pkg:refs/heads/main:{first}:{second}"


def test_a_hook_out_of_time_still_exits_0_quickly_with_what_it_has(tmp_path: Path) -> None:
    slow = tmp_path / "slow-git"
    slow.write_text("#!/bin/sh\nsleep 30\nexec git \"$@\"\n")
    slow.chmod(0o755)
    server = Server(tmp_path, git={"executable": str(slow), "time_budget": 0.6})
    tip = server.commit("first")
    started = time.monotonic()
    events, stderr = server.push("HEAD:main")
    elapsed = time.monotonic() - started
    assert elapsed < 3.0, elapsed
    assert topics(events) == ["git.branch.create"]
    body = events[0].body
    assert body["new"] == tip and body["complete"] is False and body["total_commits"] is None
    warnings = [line for line in stderr.splitlines() if "busgate" in line]
    assert len(warnings) == 1 and "out of time" in warnings[0]


def test_stdin_that_never_ends_is_cut_by_the_budget(server: Server) -> None:
    env = {**server.env, "GIT_DIR": str(server.bare)}
    config_path = write_config(server.tmp / "fast.toml", {
        "state": {"dir": str(server.tmp / "var")}, "git": {"time_budget": 0.5}})
    env["BUSGATE_CONFIG"] = str(config_path)
    proc = subprocess.Popen([*BUSGATE, "git-hook"], stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=REPO)
    started = time.monotonic()
    assert proc.stdin is not None
    proc.stdin.write(f"{ZERO} {'1' * 40} refs/heads/x\n{ZERO} 12".encode())
    proc.stdin.flush()  # and never close: the hook must not wait for EOF forever
    code = proc.wait(10)
    elapsed = time.monotonic() - started
    proc.stdin.close()
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode()
    assert code == 0 and elapsed < 2.5, (code, elapsed)
    assert stderr.count("\n") == 1 and "stdin did not end" in stderr
    events = server.take()
    assert [e.body["ref"] for e in events] == ["refs/heads/x"]
    assert events[0].body["complete"] is False  # the object does not exist


def test_watchdog_ends_a_stuck_process_with_exit_0() -> None:
    code = ("import time\nfrom adapters.scm import hook as git_hook\n"
            "git_hook._watchdog(0.3)\ntime.sleep(30)\n")
    started = time.monotonic()
    result = subprocess.run([BUSGATE[0], "-c", code],
                            capture_output=True, timeout=20, cwd=REPO)
    assert result.returncode == 0 and time.monotonic() - started < 5
    assert result.stderr.decode().count("\n") == 1
    assert b"time budget exceeded" in result.stderr


@pytest.mark.parametrize("data", [
    b"",
    b"garbage\n",
    b"\xff\xfe\x00 binary \x00\n" * 10,
    f"{ZERO} {ZERO} refs/heads/x\n".encode(),
    f"{ZERO} {'a' * 39} refs/heads/x\n".encode(),  # truncated id
    f"{ZERO} {'a' * 64} refs/heads/x\n".encode(),  # lengths differ
    f"{ZERO} {'A' * 40} refs/heads/x\n".encode(),  # not lowercase hex
    f"{ZERO} {'a' * 40} heads/x\n".encode(),
    f"{ZERO} {'a' * 40} refs/heads/x\ty\n".encode(),
    f"{ZERO} {'a' * 40}".encode(),
    b"x" * 5_000_000,
])
def test_malformed_stdin_exits_0_with_one_warning_and_stores_nothing(server: Server,
                                                                    data: bytes) -> None:
    env = {**server.env, "GIT_DIR": str(server.bare)}
    result = server.busgate("git-hook", input=data, env=env)
    assert result.returncode == 0 and result.stdout == b""
    assert result.stderr.count(b"\n") == (1 if data else 0), result.stderr
    assert server.spool.pending() == []


def test_failures_never_fail_the_push(server: Server) -> None:
    server.commit("first")
    shutil.rmtree(server.tmp / "var")
    (server.tmp / "var").write_text("not a directory")  # the spool cannot be written
    stderr = server.git("push", "-q", "origin", "HEAD:main").stderr.decode()
    assert stderr.count("busgate: warning:") == 1 and "spool" in stderr.lower(), stderr
    assert server.rev("origin/main") == server.rev("HEAD")
    # a broken configuration (the hook has its path: --install embedded $BUSGATE_CONFIG)
    (server.tmp / "var").unlink()
    good = server.config_path.read_text()
    server.config_path.write_text("[git]\nmax_commits = 'many'\n")
    server.commit("second")
    env = {k: v for k, v in server.env.items() if k != "BUSGATE_CONFIG"}
    _, stderr = server.push("HEAD:main", env=env)
    assert stderr.count("busgate: warning:") == 1 and "max_commits" in stderr
    server.config_path.write_text(good)
    # not a repository at all
    result = server.busgate("git-hook", input=f"{ZERO} {'a' * 40} refs/heads/x\n".encode(),
                            cwd=server.tmp)
    assert result.returncode == 0 and result.stderr.count(b"warning") == 1


def test_dry_run_prints_and_stores_nothing(server: Server) -> None:
    tip = server.commit("first")
    server.git("push", "-q", str(server.bare), "HEAD:main")
    server.take()
    env = {**server.env, "GIT_DIR": str(server.bare)}
    result = server.busgate("git-hook", "--dry-run", "--repo", "debian/pkg",
                            input=f"{ZERO} {tip} refs/heads/main\n".encode(), env=env)
    assert result.returncode == 0 and result.stderr == b""
    (line,) = result.stdout.decode().splitlines()
    record = json.loads(line)
    assert record["topic"] == "org.debian.dev.git.branch.create"
    assert record["msg"]["repository"] == "debian/pkg" and record["msg"]["new"] == tip
    assert record["key"] == f"git:debian/pkg:refs/heads/main:0:{tip}"
    assert server.spool.pending() == []


def test_spooled_events_ingest_once(server: Server) -> None:
    server.commit("first")
    server.push("HEAD:main")
    server.commit("second")
    server.git("push", "-q", "origin", "HEAD:main")
    item = server.spool.pending()[0]
    raw = item.read_bytes()
    store = open_store(server.settings)
    try:
        assert ingest(store, server.settings, "events", raw, str(item)).added == 1
        again = ingest(store, server.settings, "events", raw, str(item))
        assert again.added == 0 and again.duplicates == 1
        (row,) = store.rows_after(0)
        assert json.loads(row.envelope)["topic"] == "org.debian.dev.git.branch.update"
    finally:
        store.close()


def test_install_chains_to_an_existing_hook(tmp_path: Path) -> None:
    server = Server(tmp_path)
    hooks = server.bare / "hooks"
    # replace busgate's hook by a foreign one, then install again over it
    (hooks / "post-receive").unlink()
    seen = tmp_path / "seen"
    (hooks / "post-receive").write_text(f"#!/bin/sh\ncat > '{seen}'\necho old hook ran\nexit 3\n")
    (hooks / "post-receive").chmod(0o755)
    result = server.busgate("git-hook", "--install", str(server.bare), "--config",
                            str(server.config_path), "--repo", "team/pkg")
    assert result.returncode == 0, result.stderr
    assert b"chains to" in result.stdout
    again = server.busgate("git-hook", "--install", str(server.bare), "--config",
                           str(server.config_path), "--repo", "team/pkg")
    assert again.returncode == 0 and b"updated" in again.stdout
    assert sorted(p.name for p in hooks.glob("post-receive*")) == [
        "post-receive", "post-receive.busgate-chained"]
    tip = server.commit("first")
    env = {k: v for k, v in server.env.items() if k != "BUSGATE_CONFIG"}  # config is embedded
    events, stderr = server.push("HEAD:main", env=env)
    assert "old hook ran" in stderr  # the old hook ran; its exit status did not matter
    assert seen.read_text() == f"{ZERO} {tip} refs/heads/main\n"
    assert [e.body["repository"] for e in events] == ["team/pkg"]
    # a foreign hook AND a chained one: refuse rather than clobber
    (hooks / "post-receive").write_text("#!/bin/sh\nexit 0\n")
    refused = server.busgate("git-hook", "--install", str(server.bare))
    assert refused.returncode == 2 and b"by hand" in refused.stderr
    assert (hooks / "post-receive").read_text() == "#!/bin/sh\nexit 0\n"
    not_repo = server.busgate("git-hook", "--install", str(tmp_path))
    assert not_repo.returncode == 2 and b"not a git repository" in not_repo.stderr


def test_repository_name_below_repo_root(tmp_path: Path) -> None:
    server = Server(tmp_path, git={"repo_root": str(tmp_path)})
    server.commit("first")
    events, _ = server.push("HEAD:main")
    assert events[0].body["repository"] == "srv/pkg"
    assert events[0].packages == ("pkg",)


def test_pusher_from_environment(server: Server) -> None:
    server.commit("first")
    env = {k: v for k, v in server.env.items() if k != "GL_USERNAME"}
    events, _ = server.push("HEAD:main", env={**env, "REMOTE_USER": "bob"})
    assert events[0].body["pusher"] == "bob"
    server.commit("second")
    events, _ = server.push("HEAD:main", env=env)
    import pwd

    assert events[0].body["pusher"] == pwd.getpwuid(os.geteuid()).pw_name


def test_notes_and_other_refs_make_no_event(server: Server) -> None:
    server.commit("first")
    server.push("HEAD:main")
    server.git("notes", "add", "-m", "a note")
    events, stderr = server.push("refs/notes/commits")
    assert events == [] and server.items == 0 and stderr == ""


def test_schemas_reject_a_wrong_body(server: Server) -> None:
    server.commit("first")
    events, _ = server.push("HEAD:main")
    body = dict(events[0].body)
    body["forced"] = "yes"
    create = message_type("branch", "create")
    with pytest.raises(MessageValidationError, match="forced"):
        create(body).validate()
    body = dict(events[0].body, extra=1)
    with pytest.raises(MessageValidationError, match="extra"):
        create(body).validate()


def test_tags_of_trees_and_blobs(server: Server) -> None:
    server.commit("base")
    server.push("HEAD:main")
    blob = server.git("hash-object", "-w", "--stdin", input=b"a key\n").stdout.decode().strip()
    tree = server.rev("HEAD^{tree}")
    server.git("tag", "key", blob)
    server.git("tag", "-a", "snapshot", "-m", "a tree", tree)
    events, stderr = server.push("key", "snapshot")
    assert stderr == ""
    by_name = {e.body["name"]: e.body for e in events}
    assert by_name["key"]["object_type"] == "blob" and by_name["key"]["commits"] == []
    assert by_name["snapshot"]["tag"]["type"] == "tree"
    assert by_name["snapshot"]["tag"]["object"] == tree
    server.git("tag", "-f", "key", tree)
    events, stderr = server.push("--force", "key")
    assert stderr == "" and topics(events) == ["git.tag.update"]
    assert events[0].body["forced"] is False and events[0].body["complete"]


def test_install_embeds_the_configuration_it_was_given(server: Server) -> None:
    hook = (server.bare / "hooks" / "post-receive").read_text()
    assert f"--config {server.config_path}" in hook  # from $BUSGATE_CONFIG at install time
    other = server.tmp / "other.git"
    server.git("init", "-q", "--bare", str(other), cwd=server.tmp)
    env = {k: v for k, v in server.env.items() if k != "BUSGATE_CONFIG"}
    # without a configuration the spool would be ./var/spool below each repository at
    # push time, where no daemon reads: refused, saying where and how to fix it
    result = server.busgate("git-hook", "--install", str(other), env=env)
    assert result.returncode == 75
    assert b"var/spool is a relative path" in result.stderr and b"--config" in result.stderr
    assert not (other / "hooks" / "post-receive").exists()
