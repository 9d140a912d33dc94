"""Posting the daily report to a Slack incoming webhook: shared by `report daily --post-slack` and the
worker's scheduled post."""

from __future__ import annotations

from ..notifier import quiet_client_log
from .model import DailyReport
from .slack import slack_message

__all__ = ["ReportNotPosted", "post_report"]


class ReportNotPosted(Exception):
    """Slack did not take the report: its status and (the start of) its answer; never the webhook's URL,
    which is a secret."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"Slack answered {status}: {body[:200]}")
        self.status = status


def post_report(webhook_url: str, report: DailyReport, *, timeout_seconds: int) -> None:
    """Send `report` as one Slack message. Raises `ReportNotPosted` unless Slack answers 200, and what
    the HTTP client raises (a timeout, a refused connection) as it raises it."""
    # Imported here, not at the top: slack_sdk costs each worker ~2 MB, and a service without Slack never needs it.
    from slack_sdk.webhook import WebhookClient

    body = slack_message(report)
    client = WebhookClient(webhook_url, timeout=timeout_seconds, logger=quiet_client_log)
    response = client.send(text=body["text"], blocks=body["blocks"])
    if response.status_code != 200:
        raise ReportNotPosted(response.status_code, str(response.body))
