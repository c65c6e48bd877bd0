"""Golden files for git pushes: each push -> its events, as their message types see them.

The test builds a real bare repository (``.../srv/git/debian/pkg.git``) and a clone,
makes commits and tags with fixed identities and dates (so every object id is the
same on every run), and pushes with real ``git push``. A post-receive hook in the
bare repository records what git hands a hook on stdin; the events are then built
from those lines by the hook's own code (``adapters.scm.push.build_events``) against
the repository as the hook sees it, with a fixed clock. Each push gives
``fixtures/golden/git/<name>.expected.json``: per event its topic, key, msg_id, type
name, severity, summary, url, usernames, packages and body, compared exactly. Every
event must validate against its type, and the adapter's ``Event.usernames``/``packages``
must equal the type's.

To accept a deliberate change of output::

    BUSGATE_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden_git.py
    git diff fixtures/golden/git    # review: the diff is the change in behaviour
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from adapters.scm.git import Deadline, Git
from adapters.scm.messages import TYPES, BranchUpdate, TagCreate, topic_overrides
from adapters.scm.push import build_events, repo_name, web_link
from adapters.scm.refs import parse_lines
from adapters.scm.settings import GitSettings
from gateway.event import Event
from gateway.messages import TypeIndex
from tests import golden
from tests.messages_helpers import check_events, described

ADAPTER = "git"
INDEX = TypeIndex(TYPES)
#: The hook's clock (2024-05-01 12:00 UTC): the msg_id year comes from it.
NOW = 1714564800.0
WEB_URL = "https://salsa.example.org/{repo}/-/commit/{sha}"
#: First commit date; each commit or tag is one minute later.
EPOCH = 1714557600


class Pushes:
    """A bare repository with a recording hook, a clone, and a clock for commits."""

    def __init__(self, tmp: Path):
        self.root = tmp / "srv" / "git"
        self.bare = self.root / "debian" / "pkg.git"
        self.work = tmp / "work"
        self.log = tmp / "push.log"
        self.tick = 0
        config = tmp / "gitconfig"
        config.write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
                          "[commit]\n\tgpgSign = false\n[tag]\n\tgpgSign = false\n")
        self.env = {"PATH": os.environ["PATH"], "HOME": str(tmp), "GIT_CONFIG_GLOBAL": str(config),
                    "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C", "TZ": "UTC",
                    "GIT_AUTHOR_NAME": "Alice Doe", "GIT_AUTHOR_EMAIL": "alice@example.org",
                    "GIT_COMMITTER_NAME": "Bob Roe", "GIT_COMMITTER_EMAIL": "bob@example.org"}
        self.bare.parent.mkdir(parents=True)
        self.git("init", "-q", "--bare", "--object-format=sha1", str(self.bare), cwd=tmp)
        hook = self.bare / "hooks" / "post-receive"
        hook.write_text(f"#!/bin/sh\ncat > '{self.log}'\n")
        hook.chmod(0o755)
        self.git("init", "-q", "--object-format=sha1", str(self.work), cwd=tmp)
        self.git("remote", "add", "origin", str(self.bare))

    def git(self, *args: str, cwd: Path | None = None, input: bytes | None = None) -> str:
        self.tick += 1
        when = f"{EPOCH + 60 * self.tick} +0200"
        env = {**self.env, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
        result = subprocess.run(["git", *args], cwd=cwd or self.work, input=input, env=env,
                                capture_output=True, timeout=30)
        assert result.returncode == 0, (args, result.stderr.decode(errors="replace"))
        return result.stdout.decode().strip()

    def commit(self, message: str, files: dict[str, str | bytes]) -> str:
        for name, content in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        self.git("add", "-A")
        self.git("commit", "-q", "-F", "-", input=message.encode())
        return self.git("rev-parse", "HEAD")

    def push(self, *args: str, web_url: str = WEB_URL) -> list[Event]:
        """``git push origin ARGS``; the events the hook's lines give."""
        self.log.unlink(missing_ok=True)
        self.git("push", "-q", "origin", *args)
        return self.events(web_url)

    def events(self, web_url: str = WEB_URL) -> list[Event]:
        updates, problems = parse_lines(self.log.read_bytes())
        assert not problems
        settings = dataclasses.replace(GitSettings(), web_url=web_url)
        push = build_events(Git(self.bare, Deadline(30)), updates,
                            repo=repo_name(self.bare, str(self.root)), who="alice",
                            settings=settings, now=NOW)
        assert push.problems == []
        return push.events


def _scenario(tmp: Path) -> dict[str, list[Event]]:
    """The pushes of a packaging repository's life, each a golden case."""
    s = Pushes(tmp)
    out: dict[str, list[Event]] = {}
    s.commit("Initial packaging", {"debian/control": "Source: pkg\n", "README": "pkg\n"})
    s.commit("Add changelog\n\nCloses: #1000001", {"debian/changelog": "pkg (0.9-1)\n"})
    s.commit("New upstream version 1.0", {"src/pkg.c": "int main;\n", "logo.png": b"\x89PNG\0"})
    out["01-create-main"] = s.push("HEAD:refs/heads/main")
    out["01-create-main-without-web-url"] = s.events(web_url="")
    s.commit("Fix build with gcc 14", {"src/pkg.c": "int main(void);\n"})
    s.commit("Release 1.0-1", {"debian/changelog": "pkg (1.0-1)\npkg (0.9-1)\n"})
    out["02-update-main"] = s.push("HEAD:refs/heads/main")
    s.git("tag", "-a", "debian/1.0-1", "-m", "pkg Debian release 1.0-1\n\nSecond paragraph.")
    out["03-annotated-tag"] = s.push("refs/tags/debian/1.0-1")
    first = s.git("rev-list", "--max-parents=0", "HEAD")
    s.git("checkout", "-q", "-b", "upstream", first)
    s.commit("Import upstream 1.0", {"UPSTREAM": "1.0\n"})
    s.git("tag", "upstream/1.0")
    out["04-branch-and-tag-in-one-push"] = s.push("refs/heads/upstream", "refs/tags/upstream/1.0")
    s.git("checkout", "-q", "-B", "main", "origin/main")
    s.git("reset", "-q", "--hard", "HEAD~1")
    s.commit("Release 1.0-1 (for real)", {"debian/changelog": "pkg (1.0-1) unstable\n"})
    out["05-force-push"] = s.push("--force", "HEAD:refs/heads/main")
    out["06-rewind"] = s.push("--force", "HEAD~2:refs/heads/main")
    out["07-fast-forward-to-known-commit"] = s.push("debian/1.0-1^{commit}~1:refs/heads/main")
    out["08-tag-moved"] = s.push("--force", f"{first}:refs/tags/upstream/1.0")
    out["09-deletes"] = s.push(":refs/heads/upstream", ":refs/tags/upstream/1.0")
    return out


@pytest.fixture(scope="module")
def pushes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Event]]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    return _scenario(tmp_path_factory.mktemp("golden-git"))


CASES = ["01-create-main", "01-create-main-without-web-url", "02-update-main",
         "03-annotated-tag", "04-branch-and-tag-in-one-push", "05-force-push", "06-rewind",
         "07-fast-forward-to-known-commit", "08-tag-moved", "09-deletes"]


@pytest.mark.parametrize("name", CASES)
def test_golden(pushes: dict[str, list[Event]], name: str) -> None:
    events = pushes[name]
    messages = check_events(events, INDEX)
    for event, message in zip(events, messages, strict=True):
        assert list(event.usernames) == message.usernames, event.key
        assert list(event.packages) == message.packages, event.key
    golden.compare(ADAPTER, name, {"events": [described(e, m) for e, m in
                                              zip(events, messages, strict=True)]})


def test_cases_cover_every_push_topic_and_no_golden_is_stale(
        pushes: dict[str, list[Event]]) -> None:
    assert set(pushes) == set(CASES)
    seen = {".".join(e.topic_tokens()) for events in pushes.values() for e in events}
    assert seen == {".".join(cls.topic_tokens) for cls in TYPES}
    assert golden.stale(ADAPTER, set(CASES)) == []


def test_summaries(pushes: dict[str, list[Event]]) -> None:
    def summaries(name: str) -> list[str]:
        return [m.summary for m in check_events(pushes[name], INDEX)]

    assert summaries("02-update-main") == [
        'alice pushed 2 commits to debian/pkg main: "Release 1.0-1"']
    assert summaries("05-force-push")[0].startswith("alice force-pushed 1 commit to debian/pkg")
    assert summaries("09-deletes") == ["alice deleted branch upstream in debian/pkg",
                                       "alice deleted tag upstream/1.0 in debian/pkg"]
    (tag,) = check_events(pushes["03-annotated-tag"], INDEX)
    assert tag.summary == 'alice tagged debian/pkg debian/1.0-1: "pkg Debian release 1.0-1"'
    # the link names the commit the tag points at, not the tag object
    assert tag.url == WEB_URL.format(repo="debian/pkg", sha=tag.body["tag"]["object"])
    assert all(m.url is None for m in check_events(pushes["01-create-main-without-web-url"],
                                                    INDEX))


def test_service_token_override() -> None:
    index = TypeIndex(TYPES, topic_overrides(GitSettings(service="scm")))
    assert index.lookup(("scm", "branch", "update")) is BranchUpdate
    assert index.lookup(("scm", "tag", "create")) is TagCreate
    assert index.by_name("busgate.git.branch.update.v1") is BranchUpdate


def test_web_link() -> None:
    sha = "a" * 40
    assert web_link(WEB_URL, repo="debian/pkg", ref="refs/heads/main", name="main",
                    sha=sha) == f"https://salsa.example.org/debian/pkg/-/commit/{sha}"
    assert web_link("https://g.example/{repo}/tree/{name}", repo="a b", ref="refs/heads/x?y#z",
                    name="x?y#z/{sha}", sha=sha) == "https://g.example/a%20b/tree/x%3Fy%23z/%7Bsha%7D"
    assert web_link("", repo="r", ref="refs/heads/m", name="m", sha=sha) is None
    assert web_link(WEB_URL, repo="r", ref="refs/heads/m", name="m", sha=None) is None
    assert web_link("{repo}/{sha}", repo="r", ref="refs/heads/m", name="m", sha=sha) is None
    assert web_link("javascript:{sha}", repo="r", ref="r", name="m", sha=sha) is None


@pytest.mark.parametrize("cls", TYPES)
@pytest.mark.parametrize("body", [{}, [], None, {"pusher": 5, "commits": [None, 1],
                                                 "total_commits": "3", "tag": "x", "url": 7}])
def test_a_type_reads_any_body_without_failing(cls, body) -> None:  # type: ignore[no-untyped-def]
    message = cls(body)
    assert isinstance(message.summary, str) and message.summary
    assert message.url is None and message.usernames == [] and message.packages == []

