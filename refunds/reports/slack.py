"""The daily report as a Slack incoming-webhook message (Block Kit), within Slack's limits.

At most `slack_text.MAX_BLOCKS` blocks; a header of at most 150 characters; each section's text at most
3,000 characters: a long breakdown keeps its largest lines and says how many more there are. Values
typed by people (reasons, agents, approvers, products) go through `slack_text.literal`, so they
cannot format, mention or link.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import slack_text
from ..money import format_money
from .model import EXECUTED_PATHS, DailyReport, Tally
from .render import LABELS, money_text, seconds_text

__all__ = ["slack_message"]


def slack_message(report: DailyReport) -> dict[str, Any]:
    """`{"text": ..., "blocks": [...]}` for `WebhookClient.send`; pure."""
    title = f"Refunds on {report.day.isoformat()} ({report.tz})"
    paths = report.paths
    refunded = sum(t.count for k, t in paths.items() if k in EXECUTED_PATHS)
    summary = (f"{refunded} refunded, {paths['rejected'].count + paths['expired'].count} rejected or expired, "
               f"{paths['failed'].count} failed")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": slack_text.plain(title, slack_text.HEADER_TEXT)}},
        _section("Refunds processed", [f"{LABELS[k]}: {t.count} ({money_text(t)})" for k, t in report.paths.items()]),
        _section("Partial or full", [f"{LABELS[k]}: {t.count} ({money_text(t)})"
                                     for k, t in report.refund_kinds.items()]),
        _section("Time to resolution (median, 90th percentile)", [
            *(f"{LABELS[k]}: {d.count}, {seconds_text(d.median)}, {seconds_text(d.p90)}"
              for k, d in report.resolution.items() if d.count),
            f"approval wait: {seconds_text(report.approval_wait.median)}, {seconds_text(report.approval_wait.p90)}",
            ", ".join(f"{LABELS[k]}: {n}" for k, n in report.resolution_buckets.items())]),
        _section(f"Refund rate by product (:warning: fewer than {report.min_charges} charges)", [
            f"{slack_text.literal(r.product or '(none)', 200)}: {r.refunded_charges} of {r.charges}"
            + ("" if r.rate is None else f" ({r.rate:.1%})") + (" :warning:" if r.too_few_charges else "")
            for r in report.products]),
        _section("By reason", _tallies(report.reasons)),
        _section("By requesting agent", _tallies(report.agents)),
        _section("By approver", _tallies(report.approvers)),
        _section("Stripe fees kept on refunded charges", [
            ", ".join(format_money(a, c) for c, a in report.fees.kept.items()) or "none known",
            *([f"{report.fees.unknown} of {report.fees.charges} charges without a known fee"]
              if report.fees.unknown else [])]),
        _section("Approval queue", [f"{report.queue.size} waiting, the oldest for "
                                    f"{seconds_text(report.queue.oldest_age_seconds)}"]),
        _section(f"Failed at Stripe: {len(report.failures)}", [
            f"{slack_text.literal(f.charge_id or '-', 100)}: "
            f"{format_money(f.amount, f.currency) if f.amount is not None and f.currency else 'amount unknown'}, "
            f"{slack_text.literal(f.reason, 100)}" for f in report.failures]),
    ]
    return {"text": slack_text.fit(f"{title}: {summary}", slack_text.FALLBACK_TEXT),
            "blocks": blocks[: slack_text.MAX_BLOCKS]}


def _tallies(tallies: dict[str, Tally]) -> list[str]:
    return [f"{slack_text.literal(name, 200)}: {t.count} ({money_text(t)})" for name, t in tallies.items()]


def _section(title: str, lines: Sequence[str]) -> dict[str, Any]:
    """A mrkdwn section: a bold title, then one line per item, as many as fit in Slack's 3,000 characters."""
    head = f"*{title}*"
    items = [f"• {line}" for line in lines] or ["—"]
    text = head
    for shown, line in enumerate(items):
        more = f"\n… and {len(items) - shown} more"
        if len(text) + 1 + len(line) + len(more) > slack_text.SECTION_TEXT and shown < len(items) - 1:
            text += more
            break
        text += "\n" + line
    return {"type": "section", "text": {"type": "mrkdwn", "text": slack_text.fit(text, slack_text.SECTION_TEXT)}}
