"""Man pages and bash completion generated from the argparse parser (gateway.docgen).

Each check runs on two builds: the venv's argparse-manpage and shtab, and Debian
bookworm's (python3-argparse-manpage 1.2.2, python3-shtab 1.5.5 under /usr/bin/python3,
as the Debian package build runs it). Pages are rendered by man/groff with warnings on;
the completion script is sourced in a real bash and its function driven as bash's
completion would (COMP_WORDS, COMP_CWORD).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import docgen
from gateway.cli import build_parser
from tests.conftest import IN_CI, REPO

SYSTEM_PYTHON = "/usr/bin/python3"
DEBIAN_PACKAGES = "apt install python3-argparse-manpage python3-shtab"


def _need(what: str, how: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {what} is missing; {how}")
    pytest.skip(f"{what} is missing; {how}")


def _generate(python: str, out: Path) -> Path:
    """Run the real ``python -m gateway.docgen`` into ``out`` (man/ and busgate.bash)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SOURCE_DATE_EPOCH", None)
    for args in (["man", str(out / "man")], ["bash-completion", str(out / "busgate.bash")]):
        done = subprocess.run([python, "-m", "gateway.docgen", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module", params=["venv", "debian"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if request.param == "venv":
        return _generate(sys.executable, tmp_path_factory.mktemp("venv"))
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import build_manpages.manpage, shtab"],
                           capture_output=True, text=True) \
        if Path(SYSTEM_PYTHON).exists() else None
    if probe is None or probe.returncode != 0:
        _need("Debian's python3-argparse-manpage/python3-shtab", DEBIAN_PACKAGES)
    return _generate(SYSTEM_PYTHON, tmp_path_factory.mktemp("debian"))


@pytest.fixture(scope="module")
def root() -> argparse.ArgumentParser:
    return build_parser()


def _page(built: Path, name: str) -> str:
    """A page's source with roff's hyphen escapes undone (what a reader searches)."""
    return (built / "man" / name).read_text().replace("\\-", "-")


def _spellings(action: argparse.Action) -> list[str]:
    if action.option_strings:
        return list(action.option_strings)
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest
    return [metavar]


# --- man pages --------------------------------------------------------------------------

def test_every_command_has_a_page(built: Path, root: argparse.ArgumentParser) -> None:
    commands = docgen.subcommands(root)
    assert "git-hook" in commands  # a source's command, from the registry
    expected = {"busgate.1"} | {f"busgate-{name}.1" for name in commands}
    assert {p.name for p in (built / "man").iterdir()} == expected
    main = _page(built, "busgate.1")
    for name in commands:
        assert f"\\fBbusgate-{name}\\fR(1)" in main


def test_every_option_appears_in_its_page(built: Path, root: argparse.ArgumentParser) -> None:
    main = _page(built, "busgate.1")
    for action in docgen.documented_actions(root):
        for spelling in _spellings(action):
            assert f"\\fB{spelling}\\fR" in main, spelling
    checked = 0
    for name, (command, _) in docgen.subcommands(root).items():
        page = _page(built, f"busgate-{name}.1")
        parsers = [command, *(sub for sub, _ in docgen.subcommands(command).values())]
        for parser in parsers:
            if parser is not command:  # a poller or a keys action: its own subsection
                assert f".SS {parser.prog}\n" in page, parser.prog
            for action in docgen.documented_actions(parser):
                for spelling in _spellings(action):
                    assert f"\\fB{spelling}\\fR" in page, f"{parser.prog} {spelling}"
                    checked += 1
    assert checked > 50
    poll = _page(built, "busgate-poll.1")
    assert ".SS busgate poll wanna-build" in poll and "--dsn" in poll


def test_pages_have_their_sections(built: Path) -> None:
    for page in (built / "man").iterdir():
        text = page.read_text()
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SEE ALSO"):
            assert f"\n.SH {section}\n" in text, (page.name, section)
        assert text.startswith(f'.TH "{page.stem.upper().replace("-", chr(92) + "-")}" "1" "" ')
    main = _page(built, "busgate.1")
    for section in ("FILES", "ENVIRONMENT", "EXIT STATUS", "COMMANDS"):
        assert f"\n.SH {section}\n" in main
    for path in ("/etc/busgate/busgate.toml", "/var/lib/busgate", "/var/spool/busgate",
                 "BUSGATE_CONFIG"):
        assert path in main


def _render(page: Path) -> subprocess.CompletedProcess[str]:
    """The page through man (as lintian checks it), else groff, warnings on."""
    env = {**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "80", "MANROFFSEQ": ""}
    if shutil.which("man"):
        command = ["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", str(page)]
    elif shutil.which("groff"):
        command = ["groff", "-man", "-Tutf8", "-ww", str(page)]
    else:
        _need("man (man-db) and groff", "apt install man-db groff-base")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


def test_pages_render_without_warnings(built: Path, root: argparse.ArgumentParser) -> None:
    for page in sorted((built / "man").iterdir()):
        done = _render(page)
        assert done.returncode == 0 and done.stderr == "", (page.name, done.stderr)
        text = re.sub(r".\x08", "", done.stdout)  # no overstrike from a pager-less man
        name = page.stem
        assert f"{name} - " in " ".join(text.split()), page.name
    tail = re.sub(r".\x08", "", _render(built / "man" / "busgate-tail.1").stdout)
    assert "--topic PREFIX" in tail and "EXIT STATUS" not in tail
    main = re.sub(r".\x08", "", _render(built / "man" / "busgate.1").stdout)
    assert "EXIT STATUS" in main and "75" in main


def test_exit_status_lists_every_code_the_commands_return() -> None:
    """The codes written in the command modules (``return N``, ``EX_X = N``) are all in
    busgate(1)'s EXIT STATUS; a new one must be documented."""
    listed = {int(code) for code, _ in docgen.EXIT_STATUS}
    modules = [*(REPO / "gateway" / "cli").glob("*.py"), REPO / "adapters" / "scm" / "hook.py"]
    used = set()
    for module in modules:
        used |= {int(n) for n in re.findall(r"(?:\breturn|\bEX_\w+ =) (\d+)\b",
                                            module.read_text())}
    assert {0, 2, 65, 69, 75} <= used
    assert used <= listed, sorted(used - listed)


def test_output_is_reproducible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.setenv("COLUMNS", "40")
    narrow = docgen.man_pages()
    monkeypatch.setenv("COLUMNS", "200")
    assert docgen.man_pages() == narrow  # not wrapped to the terminal
    assert os.environ["COLUMNS"] == "200"  # and the setting is put back
    assert narrow["busgate.1"].startswith('.TH "BUSGATE" "1" "" ')
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    dated = docgen.man_pages()
    assert dated["busgate-run.1"].startswith('.TH "BUSGATE\\-RUN" "1" "2023-11-14" ')
    assert docgen.bash_completion() == docgen.bash_completion()


def test_bad_environment_and_missing_libraries_fail_clearly(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    assert docgen.main(["man", str(tmp_path / "man")]) == 2
    assert "SOURCE_DATE_EPOCH" in capsys.readouterr().err
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    for module in ("argparse_manpage", "argparse_manpage.manpage", "build_manpages",
                   "build_manpages.manpage", "shtab"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    assert docgen.main(["man", str(tmp_path / "man")]) == 69
    assert "python3-argparse-manpage" in capsys.readouterr().err
    assert docgen.main(["bash-completion", str(tmp_path / "busgate")]) == 69
    assert "python3-shtab" in capsys.readouterr().err
    assert not (tmp_path / "busgate").exists()


def test_no_registered_source_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Without the entry points the pages would lack the sources' commands: refuse."""
    from gateway import sources

    monkeypatch.setattr(sources, "_registry", {})
    assert docgen.main(["man", str(tmp_path / "man")]) == 69
    assert "no busgate source is registered" in capsys.readouterr().err
    assert not (tmp_path / "man").exists()


# --- bash completion --------------------------------------------------------------------

def _complete(script: Path, cwd: Path, *lines: list[str]) -> list[set[str]]:
    """COMPREPLY for each command line (its last word being completed), from the
    script's function called as bash's programmable completion calls it."""
    calls = []
    for words in lines:
        quoted = " ".join(f"'{w}'" for w in words)
        calls.append(f"drive {quoted}; echo '::'")
    program = f"""
source '{script}'
complete -p busgate || exit 3
drive() {{
  COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${{#COMP_LINE}}
  COMPREPLY=()
  local fn; fn=$(complete -p busgate | sed -n 's/.* -F \\([^ ]*\\) .*/\\1/p')
  "$fn" busgate "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
  printf '%s\\n' "${{COMPREPLY[@]}}"
}}
{chr(10).join(calls)}
"""
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], cwd=cwd,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    out = done.stdout.split("\n", 1)[1]  # after `complete -p`'s line
    blocks = out.split("::\n")[:len(lines)]
    return [{w for w in block.splitlines() if w} for block in blocks]


def test_bash_completes_commands_options_choices_and_paths(
        built: Path, root: argparse.ArgumentParser, tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("")
    (tmp_path / "b.toml").write_text("")
    (tmp_path / "repo.git").mkdir()
    commands = set(docgen.subcommands(root))
    pollers = set(docgen.subcommands(docgen.subcommands(root)["poll"][0]))
    got = _complete(built / "busgate.bash", tmp_path,
                    ["busgate", "ru"],
                    ["busgate", "tail", "--to"],
                    ["busgate", "--config", ""],
                    ["busgate", "status", "--config", "a"],
                    ["busgate", ""],
                    ["busgate", "poll", ""],
                    ["busgate", "run", "--log-format", ""],
                    ["busgate", "git-hook", "--install", ""],
                    ["busgate", "poll", "wanna-build", "--d"])
    assert got[0] == {"run"}
    assert got[1] == {"--topic"}
    assert got[2] == {"a.toml", "b.toml", "repo.git"}
    assert got[3] == {"a.toml"}
    assert got[4] == commands and "git-hook" in commands
    assert got[5] == pollers and len(pollers) >= 2  # every choice, shtab 1.5.5 too
    assert got[6] == {"text", "json"}
    assert got[7] == {"repo.git"}  # a directory, not the files
    assert got[8] == {"--dry-run", "--dsn"}


# --- README "Operating busgate" ---------------------------------------------------------

def _operating_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("\n## Operating busgate\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def readme_commands(section: str) -> list[list[str]]:
    """Every ``busgate`` command line the section shows: lines of code blocks that run
    ``busgate`` (first, or after a shell operator), an alias's ``"|/usr/bin/busgate …"``,
    and inline code starting with ``busgate``."""
    import shlex

    lines = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", section, re.MULTILINE | re.DOTALL):
        lines += [line for line in block.replace("\\\n", " ").splitlines()
                  if not line.lstrip().startswith("#")]
    prose = re.sub(r"^```.*?^```", "", section, flags=re.MULTILINE | re.DOTALL)
    lines += re.findall(r"`(busgate [^`]*)`", prose)
    found: list[list[str]] = []

    def scan(tokens: list[str]) -> None:
        command: list[str] | None = None
        previous = ";"
        for token in tokens:
            if command is not None:
                if token in OPERATORS or token[:1] in "<>" or token.startswith("2>"):
                    found.append(command)
                    command = None
                else:
                    command.append(token)
            elif "|/usr/bin/busgate " in token:  # an alias's pipe, maybe in quotes
                for pipe in re.findall(r"\|(/usr/bin/busgate [^\"']*)", token):
                    scan(shlex.split(pipe))
            elif (token == "busgate" and previous in OPERATORS) or \
                    token == "/usr/bin/busgate":
                command = []
            previous = token
        if command is not None:
            found.append(command)

    for line in lines:
        scan(shlex.split(line, comments=True))
    return found


OPERATORS = {";", "|", "||", "&&", "--"}


def test_readme_operating_commands_parse(root: argparse.ArgumentParser) -> None:
    """Each command line of README's "Operating busgate" is one the real parser accepts."""
    commands = readme_commands(_operating_section())
    assert len(commands) >= 10
    shown = {words[0] for words in commands}
    assert {"mail", "git-hook", "keys", "status", "check-config"} <= shown
    assert ["mail", "--config", "/etc/busgate/busgate.toml"] in commands  # the MTA pipe
    for words in commands:
        try:
            args = build_parser().parse_args(words)
        except SystemExit:
            pytest.fail(f"README: `busgate {' '.join(words)}` does not parse")
        assert hasattr(args, "handler"), words


def test_readme_command_extraction_catches_a_wrong_line() -> None:
    section = ("\n```sh\nbusgate git-hook --instll /srv/x.git\n```\n"
               "and `busgate keys rotate`\n")
    commands = readme_commands(section)
    assert commands == [["git-hook", "--instll", "/srv/x.git"], ["keys", "rotate"]]
    for words in commands:
        with pytest.raises(SystemExit):
            build_parser().parse_args(words)
