"""The Slack webhook stand-in records what slack_sdk's WebhookClient posts."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.webhook import WebhookClient

from standins.slack_webhook import DEFAULT_PATH, SlackStandIn

REPO_ROOT = Path(__file__).resolve().parents[2]
BLOCKS: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Refund* re_123 succeeded"}}]


def post_raw(slack: SlackStandIn, body: bytes, content_type: str, path: str = DEFAULT_PATH) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", slack.port, timeout=5)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_start_returns_a_webhook_url_on_loopback(slack: SlackStandIn) -> None:
    assert slack.webhook_url == f"http://127.0.0.1:{slack.port}/services/T000/B000/standin"


def test_webhook_post_is_answered_ok_and_recorded(slack: SlackStandIn) -> None:
    response = WebhookClient(slack.webhook_url).send(text="Refund re_123 succeeded", blocks=BLOCKS)

    assert (response.status_code, response.body) == (200, "ok")
    assert slack.messages == [{"text": "Refund re_123 succeeded", "blocks": BLOCKS}]
    assert slack.attempts == 1


def test_down_webhook_answers_its_status_and_records_nothing(slack: SlackStandIn) -> None:
    slack.set_down()

    response = WebhookClient(slack.webhook_url).send(text="lost")

    assert response.status_code == 500
    assert slack.messages == []
    assert slack.attempts == 1


@pytest.mark.parametrize(("status", "error"), [(403, "invalid_token"), (404, "no_service"),
                                               (404, "channel_not_found"), (410, "channel_is_archived")])
def test_a_broken_webhook_answers_with_slacks_status_and_text(slack: SlackStandIn, status: int, error: str) -> None:
    slack.set_down(status, error)

    response = WebhookClient(slack.webhook_url).send(text="lost")
    slack.set_up()
    slack.fail_next(1, status, error=error)
    once = WebhookClient(slack.webhook_url).send(text="lost too")

    assert (response.status_code, response.body) == (status, error)
    assert (once.status_code, once.body) == (status, error)
    assert slack.messages == [] and slack.attempts == 2


def test_webhook_records_again_after_set_up(slack: SlackStandIn) -> None:
    client = WebhookClient(slack.webhook_url)
    slack.set_down(status=503)
    assert client.send(text="while down").status_code == 503

    slack.set_up()
    response = client.send(text="back up")

    assert response.status_code == 200
    assert [m["text"] for m in slack.messages] == ["back up"]
    assert slack.attempts == 2


def test_fail_next_fails_only_the_next_posts(slack: SlackStandIn) -> None:
    client = WebhookClient(slack.webhook_url)
    slack.fail_next(2, status=429)

    statuses = [client.send(text=f"message {i}").status_code for i in range(3)]

    assert statuses == [429, 429, 200]
    assert [m["text"] for m in slack.messages] == ["message 2"]
    assert slack.attempts == 3


def test_timeout_mode_records_the_message_but_the_client_times_out(
    slack: SlackStandIn,
) -> None:
    slack.set_timeout(2.0)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        WebhookClient(slack.webhook_url, timeout=0.2).send(text="slow")  # type: ignore[arg-type]

    assert time.monotonic() - started < 1.5
    assert [m["text"] for m in slack.wait_for(1, timeout=1)] == ["slow"]
    slack.set_up()
    assert WebhookClient(slack.webhook_url, timeout=2).send(text="fast").status_code == 200


def test_wait_for_returns_once_enough_messages_arrived(slack: SlackStandIn) -> None:
    def post_later() -> None:
        time.sleep(0.1)
        WebhookClient(slack.webhook_url).send(text="late")

    poster = threading.Thread(target=post_later)
    poster.start()
    try:
        messages = slack.wait_for(1, timeout=5)
    finally:
        poster.join()

    assert [m["text"] for m in messages] == ["late"]


def test_wait_for_names_how_many_arrived_when_too_few(slack: SlackStandIn) -> None:
    WebhookClient(slack.webhook_url).send(text="only one")

    with pytest.raises(AssertionError, match=r"at least 2 .* but 1 arrived"):
        slack.wait_for(2, timeout=0.1)


def test_concurrent_posts_are_all_recorded(slack: SlackStandIn) -> None:
    def post(i: int) -> None:
        WebhookClient(slack.webhook_url).send(text=f"message {i}")

    threads = [threading.Thread(target=post, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(m["text"] for m in slack.wait_for(20, timeout=5)) == sorted(f"message {i}" for i in range(20))
    assert slack.attempts == 20


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"not json", "application/json", (400, "invalid_payload")),
        (b"[1, 2]", "application/json", (400, "invalid_payload")),
        (b'{"username": "bot"}', "application/json", (400, "no_text")),
        (
            b"payload=" + json.dumps({"text": "legacy form"}).encode(),
            "application/x-www-form-urlencoded",
            (200, "ok"),
        ),
    ],
)
def test_bodies_are_checked_like_slack_does(
    slack: SlackStandIn, body: bytes, content_type: str, expected: tuple[int, str]
) -> None:
    assert post_raw(slack, body, content_type) == expected
    assert len(slack.messages) == (1 if expected[0] == 200 else 0)
    assert slack.attempts == 1


def test_other_paths_are_404_no_service_and_not_counted(slack: SlackStandIn) -> None:
    status = post_raw(slack, b'{"text": "x"}', "application/json", "/services/T000/B000/other")

    assert status == (404, "no_service")
    assert slack.attempts == 0


def test_clear_forgets_messages_and_attempts(slack: SlackStandIn) -> None:
    WebhookClient(slack.webhook_url).send(text="old")

    slack.clear()

    assert (slack.messages, slack.attempts) == ([], 0)


def test_on_message_sees_each_recorded_message() -> None:
    seen: list[dict[str, Any]] = []
    with SlackStandIn(on_message=seen.append) as slack:
        WebhookClient(slack.webhook_url).send(text="hello")

    assert seen == [{"text": "hello"}]


def test_cli_records_posts_until_terminated() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "standins.slack_webhook", "--port", "0"],
        cwd=REPO_ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(10, process.kill)
    watchdog.start()
    try:
        assert process.stderr is not None
        url = None
        for line in process.stderr:
            if "listening on " in line:
                url = line.split("listening on ")[1].split()[0]
                break
        assert url is not None, "the CLI never logged its URL"
        assert WebhookClient(url).send(text="from the CLI test").status_code == 200
        assert "from the CLI test" in process.stderr.readline()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


# -- Slack's Block Kit limits: a message over them is refused 400 and not recorded ----------------------------


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def post_blocks(slack: SlackStandIn, blocks: Any) -> tuple[int, str]:
    return post_raw(slack, json.dumps({"text": "fallback", "blocks": blocks}).encode(), "application/json")


def test_a_message_at_every_limit_is_accepted(slack: SlackStandIn) -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}},
        section("s" * 3000, block_id="b" * 255),
        {"type": "section", "fields": [{"type": "plain_text", "text": "f" * 2000}] * 10},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "c" * 3000, "verbatim": True}] * 10},
        *[{"type": "divider"}] * 46,
    ]
    assert post_blocks(slack, blocks) == (200, "ok")
    assert slack.messages[0]["blocks"] == blocks
    assert slack.refusals == []


@pytest.mark.parametrize(
    ("blocks", "error"),
    [
        ([section("x")] * 51, "invalid_blocks"),
        ([section("s" * 3001)], "invalid_blocks"),
        ([section("")], "invalid_blocks"),
        ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "invalid_blocks"),
        ([{"type": "header", "text": {"type": "mrkdwn", "text": "*h*"}}], "invalid_blocks"),
        ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}], "invalid_blocks"),
        ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}], "invalid_blocks"),
        ([{"type": "context", "elements": [{"type": "plain_text", "text": "c" * 3001}]}], "invalid_blocks"),
        ([{"type": "context", "elements": [{"type": "plain_text", "text": "c"}] * 11}], "invalid_blocks"),
        ([section("a", block_id="same"), section("b", block_id="same")], "invalid_blocks"),
        ([section("a", block_id="b" * 256)], "invalid_blocks"),
        ([{"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "b" * 76}}]}],
         "invalid_blocks"),
        ([{"type": "no_such_block"}], "invalid_blocks"),
        ({"type": "section"}, "invalid_blocks_format"),
    ],
    ids=["51 blocks", "section text 3001", "empty text", "header 151", "mrkdwn header", "field 2001",
         "11 fields", "context element 3001", "11 context elements", "duplicate block_id", "block_id 256",
         "button text 76", "unknown block type", "blocks not a list"],
)
def test_a_message_over_slacks_block_limits_is_refused_400_like_slack_and_not_recorded(
    slack: SlackStandIn, blocks: Any, error: str
) -> None:
    response = WebhookClient(slack.webhook_url).send_dict({"text": "fallback", "blocks": blocks})

    assert (response.status_code, response.body) == (400, error)
    assert slack.messages == []
    assert [e for e, _ in slack.refusals] == [error]
    assert slack.attempts == 1


def test_a_rate_limited_post_says_how_long_to_wait(slack: SlackStandIn) -> None:
    slack.fail_next(1, status=429, retry_after=30)

    response = WebhookClient(slack.webhook_url).send(text="later")

    assert (response.status_code, response.body) == (429, "rate_limited")
    assert response.headers["Retry-After"] == "30"
    assert slack.messages == []
