"""Run the test job application's supervisor as a real process, from tests/:
``python -m support.run_worker URL [options]``."""

from __future__ import annotations

import argparse
import logging
import sys

from support.jobapp import app


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--queue", action="append")
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--drain", action="store_true")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--grace-period", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(process)d %(name)s %(message)s"
    )
    supervisor = app.supervisor(
        args.url,
        args.queue,
        concurrency=args.concurrency,
        drain=args.drain,
        grace_period=args.grace_period,
        poll_interval=args.poll_interval,
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
