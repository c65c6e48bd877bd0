"""``python -m busgate_messages --write|--check``: the fedora.messages entry points in
setup.cfg, generated from busgate's source registry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from busgate_messages import entry_points

SETUP_CFG = Path(__file__).resolve().parent.parent / "setup.cfg"
BEGIN, END = "# BEGIN generated\n", "# END generated\n"


def render(points: dict[str, str]) -> str:
    return "".join(f"    {name} = {target}\n" for name, target in points.items())


def current(text: str) -> str:
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)]


def updated(text: str, points: dict[str, str]) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + render(points) + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m busgate_messages", description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite setup.cfg")
    parser.add_argument("--check", action="store_true", help="exit 1 when setup.cfg differs")
    args = parser.parse_args(argv)
    text = SETUP_CFG.read_text()
    new = updated(text, entry_points())
    if args.write:
        SETUP_CFG.write_text(new)
    elif args.check and new != text:
        print(f"{SETUP_CFG} is out of date: run python -m busgate_messages --write",
              file=sys.stderr)
        return 1
    else:
        sys.stdout.write(render(entry_points()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
