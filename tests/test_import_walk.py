"""Issue 11: the core knows sources only through the registry.

Walks every module under ``gateway/`` (its syntax tree, so comments are out of
sight by construction) and fails on an import of ``adapters`` (statement or
``importlib`` string) and on a string literal naming one of busgate's own sources,
docstrings excepted: the core neither imports a source nor branches on its name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

#: Words that name a built-in source, its table, package or command.
SOURCE_WORDS = re.compile(r"\b(debbugs|wanna-?build|dak(_mail)?|git-hook|git_hook|scm|bts)\b",
                          re.IGNORECASE)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (module, class, function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
        # attribute docstrings (``#:`` is a comment; a bare string after an assignment is not)
    return found


def problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: imports {a.name}" for a in node.names
                      if a.name.split(".")[0] == "adapters"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] == "adapters":
            found.append(f"{where}: imports from {node.module}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                id(node) not in docs:
            if node.value.split(".")[0].split(":")[0] == "adapters":
                found.append(f"{where}: names the module {node.value!r}")
            elif match := SOURCE_WORDS.search(node.value):
                found.append(f"{where}: names the source {match.group(0)!r} in {node.value!r}")
    return found


def test_no_gateway_module_imports_adapters_or_names_a_builtin_source() -> None:
    modules = sorted((REPO / "gateway").rglob("*.py"))
    assert len(modules) > 40
    found = [f"{module.parent.name}/{line}" for module in modules for line in problems(module)]
    assert not found, "\n".join(found)


def test_the_walk_sees_what_it_must_refuse(tmp_path: Path) -> None:
    bad = tmp_path / "probe.py"
    sample = ('"""Docstrings may say debbugs."""\n'
              "import adapters.mail\n"
              "from adapters.debbugs import poller\n"
              "PARSER = 'adapters.mail:parse_mail'\n"
              "def f(name):\n"
              "    '''wanna-build here is fine'''\n"
              "    return name == 'wanna-build'  # a comment on dak is fine\n")
    bad.write_text(sample)
    found = problems(bad)
    assert [line.split(": ", 1)[1] for line in found] == [
        "imports adapters.mail", "imports from adapters.debbugs",
        "names the module 'adapters.mail:parse_mail'",
        "names the source 'wanna-build' in 'wanna-build'"]
