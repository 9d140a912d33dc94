"""The stand-ins as the benchmark runs them: each in its own process, on loopback.

    python -m bench.standin_servers stripe --charges 1000    # Stripe, with ch_bench_0000 ... ch_bench_0999
    python -m bench.standin_servers stripe --write-rate-limit 25   # ... answering 429 past 25 POSTs a second
    python -m bench.standin_servers slack --delay 0.5         # a Slack webhook that answers after 500 ms

Each prints one line, ``READY {"url": ...}``, on stdout once it listens, then serves until SIGINT or
SIGTERM. The Stripe stand-in also answers ``GET /bench/stats`` (no key) with how many refunds it
has created and how many calls it has received, so the benchmark can check that every answer it
counted was a real refund, made with the calls it expects; the Slack stand-in's says how many
messages it was sent.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from standins._http import StandInRequestHandler, run_in_foreground
from standins.slack_webhook import SlackStandIn
from standins.stripe_api import StripeStandIn

API_KEY = "sk_test_bench_0123456789"
CHARGE_PREFIX = "ch_bench_"
# Refunds are 1 cent each: a charge this large is never used up, however long the run.
CHARGE_AMOUNT = 1_000_000_000
STATS_PATH = "/bench/stats"


def charge_id(index: int) -> str:
    """The id of the bench charge number `index` (the wrk script builds the same ids)."""
    return f"{CHARGE_PREFIX}{index:04d}"


class BenchStripeStandIn(StripeStandIn):
    """The Stripe stand-in with its charges seeded and one extra route, ``GET /bench/stats``."""

    def __init__(self, charges: int, write_rate_limit: float | None = None) -> None:
        super().__init__(api_key=API_KEY, write_rate_limit=write_rate_limit)
        for index in range(charges):
            self.add_charge(CHARGE_AMOUNT, "usd", charge_id=charge_id(index))

    def _serve(self, handler: StandInRequestHandler) -> None:
        if handler.command == "GET" and handler.path == STATS_PATH:
            handler.read_body()
            with self._lock:
                stats = {"refunds": self._refund_creations, "calls": len(self._requests)}
                if self._write_limit is not None:
                    stats["rate_limited"] = self.rate_limited
            body = json.dumps(stats).encode()
            handler.send_bytes(200, body, "application/json")
            return
        super()._serve(handler)


class BenchSlackStandIn(SlackStandIn):
    """The Slack stand-in answering after `delay` seconds, with ``GET /bench/stats``: messages recorded."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.set_timeout(delay)

    def _serve(self, handler: StandInRequestHandler) -> None:
        if handler.command == "GET" and handler.path == STATS_PATH:
            handler.read_body()
            body = json.dumps({"messages": self.attempts}).encode()
            handler.send_bytes(200, body, "application/json")
            return
        super()._serve(handler)


def main(argv: list[str] | None = None) -> int:
    """Run one stand-in in the foreground; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.standin_servers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", required=True)
    stripe = kinds.add_parser("stripe", help="the Stripe stand-in with bench charges")
    stripe.add_argument("--charges", type=int, default=1000, help="how many charges to seed (default 1000)")
    stripe.add_argument("--write-rate-limit", type=float, default=None,
                        help="allow this many POSTs a second and answer 429 beyond (default: no limit)")
    slack = kinds.add_parser("slack", help="the Slack webhook stand-in")
    slack.add_argument("--delay", type=float, default=0.0, help="seconds before each answer (default 0)")
    for sub in (stripe, slack):
        sub.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    standin: BenchStripeStandIn | BenchSlackStandIn
    if args.kind == "stripe":
        standin = BenchStripeStandIn(args.charges, args.write_rate_limit)
    else:
        standin = BenchSlackStandIn(args.delay)
    url = standin.start("127.0.0.1", args.port)
    sys.stdout.write("READY " + json.dumps({"url": url}) + "\n")
    sys.stdout.flush()
    run_in_foreground(standin)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
