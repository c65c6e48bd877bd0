"""Mail intake figures: parser throughput and ``busgate mail`` start-up.

    .venv/bin/python bench/mail_parse.py [--seconds 3] [--runs 20]

1. mails/s of ``adapters.mail.parse_mail`` (router + dak parser, what the daemon
   runs per spool item) over the fixture mix in fixtures/dak_mail plus the real
   samples in ../shared/samples when present, on one core (target >= 1000/s);
2. median wall time of ``busgate mail`` storing one mail (a fresh process each
   time; with ``--spool DIR``, and reading a temp BUSGATE_CONFIG) beside ``-c pass`` (the
   ``python3`` on PATH) and this interpreter's ``-c pass`` (target < 3x).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.daemon_state import adopt  # noqa: E402


def corpus() -> list[bytes]:
    mails = [p.read_bytes() for p in sorted((REPO / "fixtures" / "dak_mail").glob("*.eml"))]
    sample = REPO.parent / "shared" / "samples" / "dak-accepted-announce-hebcal_4.31-1.eml"
    if sample.exists():
        mails.append(sample.read_bytes())
    return mails


def parse_rate(seconds: float) -> tuple[float, int, int]:
    from adapters.mail import parse_mail

    mails = corpus()
    done = events = errors = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for raw in mails:
            try:
                events += len(parse_mail(raw))
            except ValueError:
                errors += 1
            done += 1
    elapsed = time.perf_counter() - started
    return done / elapsed, len(mails), errors * len(mails) // max(done, 1)


def median_wall(argv: list[str], runs: int, env: dict[str, str] | None = None,
                stdin_path: Path | None = None) -> float:
    times = []
    for _ in range(runs):
        stdin = stdin_path.open("rb") if stdin_path else subprocess.DEVNULL
        try:
            started = time.perf_counter()
            subprocess.run(argv, stdin=stdin, env=env, check=True)
            times.append(time.perf_counter() - started)
        finally:
            if stdin_path:
                stdin.close()  # type: ignore[union-attr]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    rate, kinds, errors = parse_rate(args.seconds)
    print(f"parser: {rate:,.0f} mails/s on one core over {kinds} mails "
          f"({errors} of them hostile, raising ParseError) - target >= 1,000")

    busgate = Path(sys.executable).with_name("busgate")
    if not busgate.exists():
        print(f"no {busgate}; install the package into this interpreter's venv")
        return
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "busgate.toml"
        cfg.write_text(f'[state]\ndir = "{tmp}/var"\n')
        mail = REPO / "fixtures" / "dak_mail" / "announce-signed.eml"
        env = {**os.environ, "BUSGATE_CONFIG": str(cfg)}
        adopt(cfg)
        median_wall([str(busgate), "mail"], 3, env, mail)  # warm the page cache
        pipe = median_wall([str(busgate), "mail"], args.runs, env, mail)
        spool = str(Path(tmp) / "var" / "spool")
        direct = median_wall([str(busgate), "mail", "--spool", spool], args.runs, None, mail)
        stored = len(list((Path(tmp) / "var" / "spool" / "new").iterdir()))
    python3 = shutil.which("python3") or sys.executable
    bare = median_wall([python3, "-c", "pass"], args.runs)
    own = median_wall([sys.executable, "-c", "pass"], args.runs)
    print(f"{sys.executable} -c pass: median {own * 1000:.1f} ms (python3 on PATH, "
          f"{python3}: {bare * 1000:.1f} ms)")
    print(f"busgate mail --spool DIR: median {direct * 1000:.1f} ms over {args.runs} runs -> "
          f"{direct / own:.2f}x the bare interpreter (target < 3x)")
    print(f"busgate mail reading its TOML configuration: median {pipe * 1000:.1f} ms -> "
          f"{pipe / own:.2f}x ({stored} mails spooled in all, fsync included)")


if __name__ == "__main__":
    main()
