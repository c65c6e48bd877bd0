"""``busgate replay``: ask a publisher's replay endpoint for stored messages."""

from __future__ import annotations

import argparse
import json
import sys

EX_UNAVAILABLE = 69  # the replay endpoint did not answer (or answered an error)
HELP = "fetch stored messages from a replay endpoint (by seq_id, msg_id or time)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", metavar="URL",
                        help="replay endpoint (default: this gateway's [zmq] replay)")
    parser.add_argument("--seq-id", type=int, action="append", default=[], metavar="N")
    parser.add_argument("--seq-id-range", type=int, nargs=2, metavar=("LO", "HI"))
    parser.add_argument("--msg-id", action="append", default=[], metavar="ID")
    parser.add_argument("--time", type=float, nargs=2, metavar=("T0", "T1"),
                        help="epoch seconds, inclusive")
    parser.add_argument("--timeout", type=float, default=10.0)


def run(args: argparse.Namespace) -> int:
    from gateway import endpoints, replay
    from gateway.cli import load_settings

    settings = load_settings(args)
    endpoint = args.endpoint or settings.zmq.replay.replace("*", "127.0.0.1")
    if not endpoint:
        print("busgate replay: replay is disabled ([zmq] replay is empty); give --endpoint",
              file=sys.stderr)
        return 2
    problem = endpoints.problem(endpoint)
    if problem:
        print(f"busgate replay: --endpoint: {problem}", file=sys.stderr)
        return 2
    query: dict[str, object] = {}
    if args.seq_id:
        query["seq_ids"] = args.seq_id
    if args.seq_id_range:
        query["seq_id_range"] = list(args.seq_id_range)
    if args.msg_id:
        query["msg_ids"] = args.msg_id
    if args.time:
        query["time"] = list(args.time)
    if not query:
        print("busgate replay: give --seq-id, --seq-id-range, --msg-id or --time",
              file=sys.stderr)
        return 2
    # Paged: any answer size, printed page by page (a page is bounded by the server).
    try:
        for page in replay.pages(endpoint, query, timeout=args.timeout):
            for envelope in page.envelopes:
                print(json.dumps(envelope, sort_keys=True, ensure_ascii=False))
    except replay.ReplayError as exc:
        print(f"busgate replay: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    return 0
