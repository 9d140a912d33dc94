"""The pieces of `make bench` (bench/), checked without load: the baseline app, the stand-in's
counters, and how runs become figures and ratios."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.baseline_app import create_app
from bench.report import Run, compare, figure, figures, format_figures, format_slack_effect
from bench.standin_servers import API_KEY, BenchSlackStandIn, BenchStripeStandIn, charge_id

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def stripe() -> Iterator[BenchStripeStandIn]:
    with BenchStripeStandIn(charges=2) as standin:
        yield standin


def _stats(standin: BenchStripeStandIn) -> dict[str, int]:
    with urllib.request.urlopen(standin.base_url + "/bench/stats", timeout=5) as answer:
        stats: dict[str, int] = json.load(answer)
        return stats


def test_the_baseline_refunds_a_bench_charge_with_the_two_calls_the_service_makes(
        stripe: BenchStripeStandIn) -> None:
    client = create_app(API_KEY, stripe.base_url).test_client()

    answer = client.post("/refund-request", json={"charge_id": charge_id(1), "amount": 1},
                         headers={"Idempotency-Key": "bench-test-1"})

    assert answer.status_code == 200
    assert answer.get_json()["refund_id"].startswith("re_")
    assert [(call["method"], call["path"]) for call in stripe.requests] == [
        ("GET", "/v1/charges/ch_bench_0001"), ("POST", "/v1/refunds")]
    assert stripe.charge(charge_id(1))["amount_refunded"] == 1
    assert stripe.idempotency_keys() == ["bench-test-1"]


def test_the_bench_stand_in_counts_refunds_and_calls_without_counting_itself(stripe: BenchStripeStandIn) -> None:
    assert _stats(stripe) == {"refunds": 0, "calls": 0}
    create_app(API_KEY, stripe.base_url).test_client().post(
        "/refund-request", json={"charge_id": charge_id(0), "amount": 1}, headers={"Idempotency-Key": "k"})

    assert _stats(stripe) == {"refunds": 1, "calls": 2}


def test_the_bench_slack_stand_in_answers_late_and_counts_what_it_was_sent() -> None:
    with BenchSlackStandIn(delay=0.2) as slack:
        post = urllib.request.Request(slack.webhook_url, data=b'{"text": "refunded"}',
                                      headers={"Content-Type": "application/json"})
        started = time.monotonic()
        with urllib.request.urlopen(post, timeout=5) as answer:
            assert answer.status == 200
        assert time.monotonic() - started >= 0.2
        with urllib.request.urlopen(slack.webhook_url.split("/services/")[0] + "/bench/stats", timeout=5) as answer:
            assert json.load(answer) == {"messages": 1}


def test_the_wrk_scripts_ask_for_the_charges_the_stand_in_seeds() -> None:
    assert charge_id(42) == "ch_bench_0042"
    for script in ("refund.lua", "standin.lua"):
        assert '"ch_bench_%04d"' in (BENCH / script).read_text()


def _run(target: str, requests: int, p50: float, *, connections: int = 1, not_ok: int = 0,
         refunds: int | None = None) -> Run:
    return Run(target=target, connections=connections, requests=requests, seconds=10.0, p50_ms=p50, p99_ms=2 * p50,
               not_ok=not_ok, refunds=requests if refunds is None else refunds, calls=2 * requests,
               app_cpu=requests / 1000, standin_cpu=1.0)


def test_figures_are_medians_and_the_service_is_compared_with_the_baseline_at_the_same_connections() -> None:
    runs = [_run("baseline", 1000, 4.0), _run("service", 400, 9.0),
            _run("baseline", 3000, 3.0), _run("service", 500, 6.0),
            _run("baseline", 2000, 5.0), _run("service", 600, 7.0),
            _run("baseline", 5000, 20.0, connections=8), _run("service", 1000, 40.0, connections=8)]

    baseline, service, baseline_8, service_8 = figures(runs)

    assert (baseline.target, baseline.connections, baseline.throughput, baseline.p50_ms) == ("baseline", 1, 200.0, 4.0)
    assert (service.throughput, service.p50_ms, service.p99_ms) == (50.0, 7.0, 14.0)
    assert service.app_cpu_ms_per_request == 1.0 and service.calls_per_refund == 2.0
    assert service.standin_cores == 0.1
    comparison = compare(service, baseline)
    assert comparison is not None
    assert (comparison.throughput_ratio, comparison.p50_difference_ms) == (0.25, 3.0)
    table = format_figures([baseline, service, baseline_8, service_8])
    assert "x0.25 req/s, p50 +3.0 ms" in table
    assert "x0.20 req/s, p50 +20.0 ms" in table


def test_a_run_with_an_error_or_an_answer_without_a_refund_gives_no_figure() -> None:
    assert _run("service", 100, 5.0, refunds=101).valid  # one still at the server when wrk stopped
    failing = _run("service", 100, 5.0, not_ok=1)
    unrefunded = _run("service", 100, 5.0, refunds=99)
    too_many = _run("service", 100, 5.0, refunds=110)
    assert failing.problems == ["1 answers not 200 or failed"]
    assert unrefunded.problems == ["1 answers without a refund at the stand-in"]
    assert too_many.problems == ["10 more refunds at the stand-in than answers"]

    service = figure("service", 1, [_run("service", 100, 5.0), unrefunded])
    baseline = figure("baseline", 1, [_run("baseline", 100, 1.0)])

    assert service.throughput is None and compare(service, baseline) is None
    assert "(1 of 2 runs invalid)" in format_figures([baseline, service])


def test_slow_slack_moves_the_p50_by_its_share_of_the_service_p50() -> None:
    slow = figure("service+slack", 1, [_run("service+slack", 100, 10.5)])
    plain = figure("service", 1, [_run("service", 100, 10.0)])

    assert format_slack_effect([plain, slow], "service+slack") == [
        "    1  p50 10.0 ms -> 10.5 ms with slow Slack (+5.0%)"]
