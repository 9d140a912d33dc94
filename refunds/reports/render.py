"""The daily report for people (a terminal table) and for machines (JSON, CSV rows).

Amounts are formatted here, at the edge, with `refunds.money` (1,500 JPY; 12.345 KWD); JSON and CSV
also keep the integer minor units and the currency.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..money import Money, format_money
from .model import DailyReport, Durations, Tally

__all__ = ["CSV_HEADER", "LABELS", "as_json", "csv_rows", "money_text", "seconds_text", "table"]

LABELS = {
    "auto_approved": "auto-approved", "approved": "approved by a manager", "rejected": "rejected",
    "expired": "expired", "failed": "failed at Stripe", "external": "made outside the service",
    "full": "full", "partial": "partial", "unknown": "charge unknown",
    "under_1_minute": "under 1 minute", "under_1_hour": "under 1 hour", "under_1_day": "under 1 day",
    "longer": "1 day or longer",
}
CSV_HEADER = ("date", "tz", "section", "key", "metric", "currency", "value")


def money_text(tally: Tally) -> str:
    """'45.00 USD, 1,500 JPY' (plus how many had no known amount), or '-' for none."""
    parts = [format_money(amount, currency) for currency, amount in sorted(tally.amounts.items())]
    if tally.unknown_amount:
        parts.append(f"{tally.unknown_amount} without a known amount")
    return ", ".join(parts) or "-"


def seconds_text(seconds: float | None) -> str:
    """'42 s', '3 min 12 s', '5 h 2 min', '2 d 3 h' or '-'."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def table(report: DailyReport) -> str:
    """The report as aligned text for a terminal."""
    lines = [f"Refunds on {report.day.isoformat()} ({report.tz}, {report.hours:g} hours: "
             f"{_utc(report.start)} to {_utc(report.end)})", ""]
    lines += _tallies("Refunds processed", report.paths)
    lines += _tallies("Partial or full (refunds executed)", report.refund_kinds)
    lines += ["Time to resolution (request to refund executed or rejected)",
              *[_durations(LABELS[path], d) for path, d in report.resolution.items()],
              _durations("approval wait (approved by a manager)", report.approval_wait),
              "  " + ", ".join(f"{LABELS[name]}: {count}" for name, count in report.resolution_buckets.items()), ""]
    lines.append(f"Refund rate by product (refunded charges / charges created that day; "
                 f"! fewer than {report.min_charges} charges)")
    for rate in report.products:
        shown = "no charges" if rate.rate is None else f"{rate.rate:.1%}"
        warn = " !" if rate.too_few_charges else ""
        lines.append(f"  {_name(rate.product):<32} {rate.refunded_charges:>6} / {rate.charges:<8} {shown}{warn}")
    lines += [] if report.products else ["  -"]
    lines.append("")
    lines += _tallies("By reason", report.reasons) + _tallies("By requesting agent", report.agents)
    lines += _tallies("By approver (approved or rejected)", report.approvers)
    fees = report.fees
    kept = ", ".join(format_money(a, c) for c, a in fees.kept.items()) or "-"
    lines += [f"Stripe fees kept on {fees.charges} refunded charges: {kept}"
              + (f" ({fees.unknown} unknown: run `flask --app app sync`)" if fees.unknown else ""), ""]
    queue = report.queue
    lines += [f"Approval queue at {_utc(queue.as_of)}: {queue.size} waiting, oldest waiting "
              f"{seconds_text(queue.oldest_age_seconds)}", ""]
    lines.append(f"Failed at Stripe: {len(report.failures)}")
    for f in report.failures:
        amount = format_money(f.amount, f.currency) if f.amount is not None and f.currency else "amount unknown"
        who = f"request {f.request_id}" if f.request_id is not None else f"refund {f.refund_id}"
        lines.append(f"  {who:<30} {f.charge_id or '-':<30} {amount:>20}  {f.reason}")
    return "\n".join(lines) + "\n"


def _tallies(title: str, tallies: dict[str, Tally]) -> list[str]:
    rows = [f"  {LABELS.get(key, _name(key)):<32} {t.count:>6}  {money_text(t)}" for key, t in tallies.items()]
    return [title, *(rows or ["  -"]), ""]


def _durations(label: str, d: Durations) -> str:
    return (f"  {label:<38} {d.count:>6}  average {seconds_text(d.average)}, median {seconds_text(d.median)}, "
            f"90th percentile {seconds_text(d.p90)}")


def _name(value: str | None) -> str:
    return "(none)" if value is None else value


def _utc(value: Any) -> str:
    return str(value.strftime("%Y-%m-%d %H:%M UTC"))


def _tally_json(tally: Tally) -> dict[str, Any]:
    return {"count": tally.count, "unknown_amount": tally.unknown_amount,
            "amounts": [Money(a, c).as_json() for c, a in sorted(tally.amounts.items())]}


def _durations_json(d: Durations) -> dict[str, Any]:
    return {"count": d.count, "average_seconds": d.average, "median_seconds": d.median, "p90_seconds": d.p90}


def as_json(report: DailyReport) -> dict[str, Any]:
    """The report as JSON-ready data; amounts as `{"amount", "currency", "display"}`, durations in seconds."""
    tallies = {name: {key: _tally_json(t) for key, t in getattr(report, name).items()}
               for name in ("paths", "refund_kinds", "reasons", "agents", "approvers")}
    return {
        "date": report.day.isoformat(), "tz": report.tz, "start": report.start.isoformat(),
        "end": report.end.isoformat(), "hours": report.hours, **tallies,
        "resolution": {path: _durations_json(d) for path, d in report.resolution.items()},
        "resolution_buckets": report.resolution_buckets,
        "approval_wait": _durations_json(report.approval_wait),
        "products": [{"product": r.product, "refunded_charges": r.refunded_charges, "charges": r.charges,
                      "rate": r.rate, "too_few_charges": r.too_few_charges} for r in report.products],
        "min_charges": report.min_charges,
        "fees": {"kept": [Money(a, c).as_json() for c, a in report.fees.kept.items()],
                 "refunded_charges": report.fees.charges, "unknown": report.fees.unknown},
        "queue": {"as_of": report.queue.as_of.isoformat(), "size": report.queue.size,
                  "oldest_age_seconds": report.queue.oldest_age_seconds},
        "failures": [{"request_id": f.request_id, "refund_id": f.refund_id, "charge_id": f.charge_id,
                      "amount": f.amount, "currency": f.currency, "reason": f.reason} for f in report.failures],
    }


def csv_rows(report: DailyReport) -> Iterator[tuple[object, ...]]:
    """One row per figure, in `CSV_HEADER`'s columns (no header): long format, for a spreadsheet's pivot."""
    day, tz = report.day.isoformat(), report.tz

    def row(section: str, key: object, metric: str, value: object, currency: str = "") -> tuple[object, ...]:
        return (day, tz, section, "" if key is None else key, metric, currency, "" if value is None else value)

    for section in ("paths", "refund_kinds", "reasons", "agents", "approvers"):
        for key, t in getattr(report, section).items():
            yield row(section, key, "count", t.count)
            yield from (row(section, key, "amount", a, c) for c, a in sorted(t.amounts.items()))
    for key, d in [*report.resolution.items(), ("approval_wait", report.approval_wait)]:
        for metric in ("count", "average", "median", "p90"):
            yield row("resolution", key, metric if metric == "count" else f"{metric}_seconds", getattr(d, metric))
    yield from (row("resolution_buckets", k, "count", v) for k, v in report.resolution_buckets.items())
    for r in report.products:
        yield from (row("products", r.product, "refunded_charges", r.refunded_charges),
                    row("products", r.product, "charges", r.charges), row("products", r.product, "rate", r.rate))
    yield from (row("fees", "kept", "amount", a, c) for c, a in report.fees.kept.items())
    yield row("fees", "unknown", "count", report.fees.unknown)
    yield row("queue", "waiting", "count", report.queue.size)
    yield row("queue", "oldest", "age_seconds", report.queue.oldest_age_seconds)
    for f in report.failures:
        yield row("failures", f.request_id if f.request_id is not None else f.refund_id, f.reason, f.amount,
                  f.currency or "")
