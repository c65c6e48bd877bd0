"""``docs/schemas/`` generated from the message types, so the documents cannot drift.

Each message type owns its body's JSON Schema (:attr:`gateway.messages.Message.body_schema`);
this writes one document per type, named after its topic tokens
(``dak.package.accept.json``; a family ``wanna-build.build.*`` gives
``wanna-build.build.json``), with ``$schema``, ``$id``, a title, a description and the
type's name (``x-busgate-message``) ahead of the schema itself.

    python -m gateway.schemadocs            # rewrite docs/schemas from the registry's types
    python -m gateway.schemadocs --check    # exit 1 and list what differs (CI, tests)

``--types module:ATTR`` takes the types from a list instead of the registry (a third-party
source documenting its own); ``--out DIR`` writes elsewhere.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.messages import Message

DRAFT = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://busgate.example/schemas/"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"
#: Keys the generator writes itself, first and in this order.
_HEAD = ("$schema", "$id", "title", "description", "x-busgate-message")


def filename(cls: type[Message]) -> str:
    """``<tokens>.json``: the topic tokens after the prefix, ``*`` tokens left out."""
    return ".".join(t for t in cls.topic_tokens if t != "*") + ".json"


def document(cls: type[Message]) -> dict[str, Any]:
    """The published document of one type's body schema (validated as a JSON Schema)."""
    from jsonschema import Draft202012Validator

    schema = dict(cls.body_schema)
    Draft202012Validator.check_schema(schema)
    name = filename(cls)
    shape = ".".join(t if t != "*" else "<event>" for t in cls.topic_tokens)
    doc: dict[str, Any] = {
        "$schema": DRAFT,
        "$id": ID_BASE + name,
        "title": schema.get("title") or shape,
        "description": schema.get("description") or _first_paragraph(cls),
        "x-busgate-message": cls.name,
    }
    doc.update((k, v) for k, v in schema.items() if k not in _HEAD)
    if not doc["description"]:
        del doc["description"]
    return doc


def render(types: Iterable[type[Message]]) -> dict[str, str]:
    """File name -> text for every type with topic tokens (two types, one file: error)."""
    files: dict[str, str] = {}
    owners: dict[str, str] = {}
    for cls in types:
        if not cls.topic_tokens:
            continue
        name = filename(cls)
        if name in files:
            raise ValueError(f"{cls.name} and {owners[name]} would both be documented "
                             f"as {name}")
        owners[name] = cls.name
        files[name] = json.dumps(document(cls), indent=2, ensure_ascii=False) + "\n"
    return files


def differences(types: Iterable[type[Message]], directory: Path,
                strict: bool = True) -> list[str]:
    """What differs between ``directory`` and the generated documents, one line each.
    ``strict``: a committed ``*.json`` no type generates is a difference too."""
    files = render(types)
    found = []
    for name, text in sorted(files.items()):
        path = directory / name
        if not path.exists():
            found.append(f"{name}: missing")
        elif path.read_text(encoding="utf-8") != text:
            found.append(f"{name}: differs from its message type's schema")
    if strict and directory.is_dir():
        found += [f"{path.name}: no message type generates it"
                  for path in sorted(directory.glob("*.json")) if path.name not in files]
    return found


def write(types: Iterable[type[Message]], directory: Path) -> list[str]:
    """Write every generated document; return the names written."""
    files = render(types)
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return sorted(files)


def _first_paragraph(cls: type[Message]) -> str:
    doc = inspect.getdoc(cls) if cls.__doc__ else ""
    return " ".join((doc or "").split("\n\n")[0].split())


def _types(target: str | None) -> list[type[Message]]:
    if target:
        from gateway.sources import resolve

        return list(resolve(target))
    from gateway import config, sources

    return sources.type_index(config.load()).types()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.schemadocs",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing the documents that differ")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR,
                        help="directory of the documents (default: docs/schemas)")
    parser.add_argument("--types", metavar="MODULE:ATTR",
                        help="a list of message types (default: every registered source's)")
    args = parser.parse_args(argv)
    types = _types(args.types)
    if args.check:
        found = differences(types, args.out)
        for line in found:
            print(f"{args.out}/{line}", file=sys.stderr)
        if found:
            print("regenerate with: python -m gateway.schemadocs", file=sys.stderr)
        return 1 if found else 0
    for name in write(types, args.out):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
