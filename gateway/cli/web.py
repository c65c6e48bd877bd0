"""``busgate web``: the datagrepper-compatible history API."""

from __future__ import annotations

import argparse
import sys

HELP = ("serve the history over HTTP: the live dashboard (/) and datagrepper's API "
        "(/raw, /id, /v2/search, /v2/id)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", metavar="PATH|URL",
                        help="history database, a path or a postgresql:// URL (default: "
                             "history.database, else <state.dir>/history.sqlite)")
    parser.add_argument("--host", help="address to bind (default: history.host)")
    parser.add_argument("--port", type=int, help="TCP port (default: history.port; 0: any "
                                                 "free port, printed)")


def run(args: argparse.Namespace) -> int:

    from gateway import optional, sources

    optional.require("starlette", "busgate web")
    uvicorn = optional.require("uvicorn", "busgate web")
    from gateway.cli import load_settings
    from gateway.history.backends import open_history
    from gateway.history.store import HistoryError
    from gateway.history.web import limits, make_app

    settings = load_settings(args)
    conf = settings.history
    try:
        store = open_history(settings, database=args.database)
    except HistoryError as exc:
        print(f"busgate web: {exc}", file=sys.stderr)
        return 73
    app = make_app(store, sources.type_index(settings), **limits(conf))
    import inspect

    options: dict[str, object] = {}
    if "timeout_graceful_shutdown" in inspect.signature(uvicorn.Config).parameters:
        options["timeout_graceful_shutdown"] = 2  # live streams do not hold a shut-down
    server = uvicorn.Server(uvicorn.Config(
        app, host=args.host or conf.host, port=conf.port if args.port is None else args.port,
        log_level="warning", access_log=False, server_header=False, proxy_headers=False,
        **options))  # (uvicorn 0.17, Debian 12's, has no grace timeout: streams end first)
    original = server.startup

    async def startup(sockets=None):  # type: ignore[no-untyped-def]
        await original(sockets)
        for listener in server.servers:
            for sock in listener.sockets:
                host, port = sock.getsockname()[:2]
                print(f"busgate web: serving {store.where} on http://{host}:{port}", flush=True)

    server.startup = startup  # type: ignore[method-assign]
    closing = server.shutdown

    async def shutdown(sockets=None):  # type: ignore[no-untyped-def]
        await app.state.streams.stop()  # live streams end now, not at the grace timeout
        await closing(sockets)

    server.shutdown = shutdown  # type: ignore[method-assign]
    try:
        server.run()
    finally:
        store.close()
    return 0
