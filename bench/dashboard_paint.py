"""The dashboard's first paint in a real browser over 1,000,000 stored (issue 14: < 1 s).

    .venv/bin/python bench/dashboard_paint.py [--sqlite PATH ...] [--pg URL | --pg-template DB]
        [--loads N] [--month YYYY-MM] [--tree DIR ...]

Each history is served by a real ``busgate web`` (a subprocess of the tree's virtualenv;
``--tree`` twice compares two trees over the same databases) and opened in headless
Debian ``chromium`` (Selenium, ``chromium-driver``). Per page, ``--loads`` navigations,
interleaved across pages, histories and trees (the same load for all), each with the
browser cache off (a first visit: the CSS and script are fetched too). Read from the
Performance API: time to first byte (navigation ``responseStart``), first contentful paint
(``paint``), and when the 25 newest rows are in the DOM (a ``performance.mark`` set by a
MutationObserver the bench adds before the page's own code; the rows are server-rendered,
so this is the parser reaching the 25th). Pages: ``/``, and ``/user/NAME`` and
``/package/NAME`` of the most frequent user and package of bench/history_data.py for
``--month`` (default: the data's last month; the current month has no bench data).

The databases are only read: a SQLite ``--sqlite`` is copied first (into ``--scratch``, kept
there for the next run; with its write-ahead log and, since 008, its index file
``<history>-index``) since ``busgate web`` opens it for writing (migrations); one
``--sqlite`` per ``--tree``, in order, gives each tree its own copy (trees whose schemas
differ: a tree from before 008 cannot open a history a later one migrated); for
PostgreSQL, ``--pg-template`` makes ``CREATE DATABASE ... TEMPLATE`` a copy, dropped at the
end (it needs no other session on the template), or ``--pg`` names one served read-only
(the app of ``busgate web`` over a store opened ``readonly``, in sessions that refuse
writes: the lead's ``busgate_bench_history`` stays as it is).
p99 (nearest rank) of N loads is the worst but one at N = 100; under 100 loads the table
gives the worst instead (and says so).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import history_data as data  # noqa: E402
from history import pct  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Rows whose arrival in the DOM is timed (the dashboard's ``RECENT``; a name page shows
#: 50, its newest 25 are the first screen).
ROWS = 25
#: Seconds a page may take before the bench gives up on it (a hung server, not a figure).
PAGE_TIMEOUT = 60
#: Marks ``rows-25`` when the ROWS-th message line is in the DOM (before any page code).
OBSERVER = """
(function () {
  var want = ROWS, done = false;
  function check() {
    if (done) { return; }
    if (document.querySelectorAll('ol.messages > li').length >= want) {
      done = true; performance.mark('rows-' + want);
    }
  }
  new MutationObserver(check).observe(document, {childList: true, subtree: true});
  document.addEventListener('DOMContentLoaded', function () {
    check();
    if (!done) { done = true; performance.mark('rows-short'); }
  });
})();
""".replace("ROWS", str(ROWS))
READ = """
var nav = performance.getEntriesByType('navigation')[0];
var fcp = performance.getEntriesByName('first-contentful-paint')[0];
var rows = performance.getEntriesByName('rows-ROWS')[0];
return {ttfb: nav ? nav.responseStart : null, fcp: fcp ? fcp.startTime : null,
        rows: rows ? rows.startTime : null,
        short: performance.getEntriesByName('rows-short').length > 0,
        dcl: nav ? nav.domContentLoadedEventEnd : null, bytes: nav ? nav.transferSize : null,
        lines: document.querySelectorAll('ol.messages > li').length};
""".replace("ROWS", str(ROWS))


#: ``busgate`` as its console script runs it, from the tree on PYTHONPATH.
BUSGATE = "import sys; from gateway.cli import main; sys.argv[0] = 'busgate'; sys.exit(main())"
#: ``busgate web``'s app (its settings, type index and limits) over a store opened
#: read-only: a PostgreSQL history the bench must not write (``busgate web`` migrates on
#: open, a no-op DDL statement, which a read-only session refuses). Prints what the
#: command prints. Arguments: config, database URL.
READONLY_WEB = """
import sys, uvicorn
from gateway import config, sources
from gateway.history.backends import open_history_url
from gateway.history.web import limits, make_app
settings = config.load(sys.argv[1])
store = open_history_url(sys.argv[2], settings.history.query_timeout, readonly=True,
                         pool_size=settings.history.pool_size,
                         count_limit=settings.history.count_limit)
app = make_app(store, sources.type_index(settings), **limits(settings.history))
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                       access_log=False))
original = server.startup
async def startup(sockets=None):
    await original(sockets)
    for listener in server.servers:
        for sock in listener.sockets:
            host, port = sock.getsockname()[:2]
            print(f"busgate web: serving {store.where} on http://{host}:{port}", flush=True)
server.startup = startup
server.run()
"""
#: Sessions of a ``--pg`` server refuse any write (belt and braces over ``readonly``).
PG_READ_ONLY = "options=-c%20default_transaction_read_only%3Don"


def tree_python(tree: Path) -> tuple[str, dict[str, str]]:
    """The tree's own virtualenv's Python (else this one) with the tree first on the
    path; it fails when the tree's ``gateway`` is not the one imported."""
    own = tree / ".venv" / "bin" / "python"
    python = str(own) if own.exists() else sys.executable
    env = {**os.environ, "PYTHONPATH": str(tree)}
    where = subprocess.run([python, "-c", "import gateway; print(gateway.__file__)"],
                           env=env, cwd=tree, capture_output=True, text=True, check=True)
    if not Path(where.stdout.strip()).is_relative_to(tree):
        raise SystemExit(f"{tree}: {python} imports gateway from {where.stdout.strip()}")
    return python, env


def start_web(tree: Path, database: str, scratch: Path,
              readonly: bool = False) -> tuple[subprocess.Popen[str], str]:
    """``busgate web`` of ``tree`` over ``database`` on a free port (``readonly``: its app
    over a store opened read-only); (process, base URL)."""
    conf = scratch / f"web-{abs(hash((str(tree), database)))}.toml"
    conf.write_text(f'[state]\ndir = "{scratch / "state"}"\n')
    python, env = tree_python(tree)
    command = [python, "-c", READONLY_WEB, str(conf), database] if readonly else \
        [python, "-c", BUSGATE, "web", "--config", str(conf), "--database", database,
         "--port", "0"]
    proc = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "busgate web: serving WHERE on http://HOST:PORT"
    found = re.search(r"on (http://\S+)$", line.strip())
    if not found:
        proc.kill()
        raise SystemExit(f"busgate web ({tree}) did not start: {line!r}")
    return proc, found.group(1)


def browser() -> Any:
    os.environ["SE_OFFLINE"] = "true"  # the driver is given by path: nothing downloaded
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": OBSERVER})
    return driver


def load(driver: Any, url: str) -> dict[str, Any]:
    """One navigation to ``url`` (a blank page first: no stream left open to it)."""
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + 10
    while True:  # the paint entry may come just after the load event
        got = driver.execute_script(READ)
        if got["fcp"] is not None or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def pg_copy(template: str, admin: str) -> tuple[str, str]:
    """A new database copied from ``template``; (its URL, its name)."""
    import psycopg

    name = f"paint_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return admin.rsplit("/", 1)[0] + "/" + name, name


def pg_drop(name: str, admin: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


#: The files of a SQLite history: its own and its index file's (008), each with its log.
FILES = ("", "-wal", "-index", "-index-wal")


def evict(paths: list[Path]) -> None:
    """Drop ``paths`` (the bench's own copies) and their logs and index files from the
    OS page cache: the next reads come from the disk, as for a history nobody read
    lately."""
    for path in (Path(f"{p}{suffix}") for p in paths for suffix in FILES):
        if not path.exists():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def sqlite_copy(source: Path, scratch: Path) -> Path:
    """``source`` copied into ``scratch`` with its log and index file (:data:`FILES`);
    reused when each of these files is there with the same size."""
    scratch.mkdir(parents=True, exist_ok=True)
    target = scratch / source.name
    pairs = [(Path(f"{source}{suffix}"), Path(f"{target}{suffix}")) for suffix in FILES]
    if any(src.exists() != dst.exists() or (src.exists() and
                                            src.stat().st_size != dst.stat().st_size)
           for src, dst in pairs):
        for shm in ("-shm", "-index-shm"):  # a stale copy's, of another log
            Path(f"{target}{shm}").unlink(missing_ok=True)
        for src, dst in pairs:
            if src.exists():
                shutil.copyfile(src, dst)
            else:
                dst.unlink(missing_ok=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sqlite", type=Path, action="append", default=None,
                        help="a SQLite history to copy and serve (default: "
                             "/var/tmp/bgbench/sqlite-1000000.sqlite when there); one per "
                             "--tree, in order: each tree its own copy")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--pg", help="a postgresql:// URL served read-only")
    parser.add_argument("--pg-template", help="a PostgreSQL database to serve a copy of")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--scratch", type=Path, default=Path("/var/tmp/busgate-paint"))
    parser.add_argument("--tree", action="append", type=Path,
                        help="a tree with a .venv to serve from (repeatable; default this)")
    parser.add_argument("--loads", type=int, default=30, help="navigations per page")
    parser.add_argument("--month", default=None, help="YYYY-MM of the name pages")
    parser.add_argument("--cold", action="store_true",
                        help="drop the SQLite copy from the OS page cache before every "
                             "navigation (no warm-up load): a history not read lately")
    args = parser.parse_args()
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            raise SystemExit(f"{path} is missing: apt-get install chromium chromium-driver")
    trees = [t.resolve() for t in (args.tree or [REPO])]
    month = args.month or time.strftime("%Y-%m", time.gmtime(data.END - 1))
    pages = {"/": "/", "/user/NAME": f"/user/{data.user_name(0)}?month={month}",
             "/package/NAME": f"/package/{data.package_name(0)}?month={month}"}
    args.scratch.mkdir(parents=True, exist_ok=True)
    databases: list[tuple[str, list[str]]] = []  # (backend, its database per tree)
    sqlite = args.sqlite or [Path("/var/tmp/bgbench/sqlite-1000000.sqlite")]
    if len(sqlite) not in (1, len(trees)):
        raise SystemExit("--sqlite: one, or one per --tree")
    if not args.no_sqlite and (args.sqlite or sqlite[0].exists()):
        if len(sqlite) == 1:
            databases.append(("sqlite", [str(sqlite_copy(sqlite[0], args.scratch))]
                              * len(trees)))
        else:
            databases.append(("sqlite", [str(sqlite_copy(path, args.scratch / f"tree{i}"))
                                         for i, path in enumerate(sqlite)]))
    dropped: str | None = None
    if args.pg_template:
        url, dropped = pg_copy(args.pg_template, args.pg_admin)
        databases.append(("postgresql", [url] * len(trees)))
    elif args.pg:
        databases.append(("postgresql", [args.pg + ("&" if "?" in args.pg else "?")
                                         + PG_READ_ONLY] * len(trees)))
    if not databases:
        raise SystemExit("no history to serve: --sqlite, --pg or --pg-template")
    state = Path(tempfile.mkdtemp(prefix="paint-", dir=args.scratch))
    servers: dict[tuple[str, Path], tuple[subprocess.Popen[str], str]] = {}
    driver = None
    loads = [os.getloadavg()[0]]
    try:
        for backend, per_tree in databases:
            for tree, database in zip(trees, per_tree, strict=True):
                servers[backend, tree] = start_web(tree, database, state,
                                                   readonly=PG_READ_ONLY in database)
        driver = browser()
        version = driver.capabilities.get("browserVersion", "?")
        targets = [(backend, tree, page) for backend, _ in databases for tree in trees
                   for page in pages]
        copies = [Path(db) for backend, per_tree in databases if backend == "sqlite"
                  for db in sorted(set(per_tree))]
        for target in [] if args.cold else targets:  # unmeasured: the first queries
            load(driver, servers[target[:2]][1] + pages[target[2]])
        got: dict[tuple[str, Path, str], list[dict[str, Any]]] = {t: [] for t in targets}
        for i in range(args.loads):
            order = targets[i % len(targets):] + targets[:i % len(targets)]
            for target in order:
                if args.cold:
                    evict(copies)
                got[target].append(load(driver, servers[target[:2]][1] + pages[target[2]]))
            loads.append(os.getloadavg()[0])
        tail = "p99" if args.loads >= 100 else "max"
        cold = ", the SQLite files evicted before each" if args.cold else ""
        print(f"dashboard in headless chromium {version}, {args.loads} loads per page, "
              f"browser cache off, interleaved{cold}; month {month}; "
              f"load {min(loads):.1f}-{max(loads):.1f}")
        print(f"ms, p50 / {tail}: time to first byte, first contentful paint, the {ROWS} "
              f"newest rows in the DOM")
        for backend, per_tree in databases:
            print(f"\n{backend}: {', '.join(dict.fromkeys(per_tree))}")
            for tree in trees:
                if len(trees) > 1:
                    print(f"  tree {tree}")
                for page in pages:
                    runs = got[backend, tree, page]
                    cells = []
                    for key in ("ttfb", "fcp", "rows"):
                        values = [r[key] for r in runs if r[key] is not None]
                        worst = pct(values, 0.99 if tail == "p99" else 1)
                        cells.append(f"{pct(values, 0.5):7.0f} / {worst:5.0f}"
                                     + ("" if len(values) == len(runs) else
                                        f" ({len(runs) - len(values)} missing)"))
                    short = sum(r["short"] for r in runs)
                    print(f"  {page:<15}" + "  ".join(cells)
                          + f"   {runs[-1]['lines']} lines, {runs[-1]['bytes'] or 0:,} B"
                          + (f", {short} with < {ROWS} rows" if short else ""))
    finally:
        if driver is not None:
            driver.quit()
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
        if dropped:
            pg_drop(dropped, args.pg_admin)
        shutil.rmtree(state, ignore_errors=True)
    print(f"trees: {', '.join(map(str, trees))}")


if __name__ == "__main__":
    main()
