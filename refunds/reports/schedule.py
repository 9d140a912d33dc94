"""The worker's scheduled post of the daily report to Slack: once per day at REPORT_TIME in REPORT_TZ.

The report of day D is due from REPORT_TIME on day D + 1 (local wall-clock time). Each day is posted
once however many workers and instances run: a worker claims the day by inserting its `report_posts`
row (INSERT ... ON CONFLICT DO NOTHING, in a short transaction), posts outside any transaction, then
marks it posted. A claim not marked posted within `lease` (its worker died, or Slack failed: that is
the retry delay) is taken over by whichever worker comes next. A worker that dies after Slack took
the message but before marking it is the one case of a second post (at least once, as every message).

Catch-up: after downtime, every day not yet posted is posted, oldest first, at most `CATCH_UP_DAYS`
back and never before the first day the schedule ever posted: ops see each day's numbers once in the
channel, and a long outage (or turning the schedule on) does not flood it.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, bindparam, func, or_, select, update

from ..config import Settings
from ..db import Database
from ..dialects import ByDialect
from ..tables import UTCDateTime, report_posts
from .daily import daily_report
from .posting import post_report

__all__ = ["CATCH_UP_DAYS", "REPORT_LEASE", "ReportSchedule", "due_days", "post_due_reports"]

log = logging.getLogger(__name__)

CATCH_UP_DAYS = 7
REPORT_LEASE = timedelta(minutes=5)

_rp = report_posts
_CLAIM = ByDialect(lambda dialect: dialect.insert(_rp).on_conflict_do_nothing(index_elements=[_rp.c.day])
                   .returning(_rp.c.day))
_TAKE_OVER = (update(_rp)
              .where(_rp.c.day == bindparam("b_day"), _rp.c.posted_at.is_(None),
                     _rp.c.claimed_at <= bindparam("b_stale", type_=UTCDateTime()))
              .values(claim=bindparam("claim"), claimed_at=bindparam("claimed_at"), attempts=_rp.c.attempts + 1))
_MARK = (update(_rp).where(_rp.c.day == bindparam("b_day"), _rp.c.claim == bindparam("b_claim"))
         .values(posted_at=bindparam("posted_at"), last_error=None))
_FAILED = (update(_rp).where(_rp.c.day == bindparam("b_day"), _rp.c.claim == bindparam("b_claim"))
           .values(last_error=bindparam("last_error")))
_FIRST_DAY = select(func.min(_rp.c.day))
# Days from b_from on that are posted, or claimed by a worker still within its lease.
_TAKEN = select(_rp.c.day, _rp.c.posted_at.is_not(None)).where(_rp.c.day >= bindparam("b_from"), or_(
    _rp.c.posted_at.is_not(None), _rp.c.claimed_at > bindparam("b_stale", type_=UTCDateTime())))


@dataclass
class ReportSchedule:
    """When and where the report is posted. `posted_through` remembers (in this process) the last due
    day found posted, so that most worker passes skip the database."""

    at: time
    tz: ZoneInfo
    webhook_url: str
    timeout_seconds: int = 10
    lease: timedelta = REPORT_LEASE
    posted_through: date | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ReportSchedule | None:
        """The schedule REPORT_TIME and SLACK_WEBHOOK_URL ask for; None (off) when either is unset."""
        if settings.report_time is None or not settings.slack_webhook_url:
            return None
        return cls(at=time.fromisoformat(settings.report_time), tz=ZoneInfo(settings.report_tz),
                   webhook_url=settings.slack_webhook_url, timeout_seconds=settings.slack_timeout_seconds)

    def last_due_day(self, now: datetime) -> date:
        """The newest day whose report is due at `now`: yesterday once today's REPORT_TIME has come."""
        local = now.astimezone(self.tz)
        return local.date() - timedelta(days=1 if local.time() >= self.at else 2)


def due_days(conn: Connection, schedule: ReportSchedule, now: datetime) -> tuple[list[date], bool]:
    """The days to post at `now`, oldest first: not posted and not claimed within the lease, at most
    CATCH_UP_DAYS back, none before the first day ever posted (only yesterday when none was); and
    whether every day up to the last due one is posted."""
    last = schedule.last_due_day(now)
    first_ever = conn.execute(_FIRST_DAY).scalar()
    if first_ever is None:
        first = last if now.astimezone(schedule.tz).date() - last == timedelta(days=1) else last + timedelta(days=1)
    else:
        first = max(first_ever, last - timedelta(days=CATCH_UP_DAYS - 1))
    taken: dict[date, bool] = dict(conn.execute(_TAKEN, {"b_from": first, "b_stale": now - schedule.lease}).all())
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return [d for d in days if d not in taken], all(taken.get(d) for d in days)


def post_due_reports(db: Database, schedule: ReportSchedule | None, *, now: datetime) -> int:
    """Post every due day's report that this worker claims; returns how many were posted.

    Does nothing when `schedule` is None. A failed post is logged at ERROR (Slack's status, never the
    webhook's URL), recorded in `last_error`, and tried again after the lease; later days go on.
    """
    if schedule is None or (schedule.posted_through is not None
                            and schedule.posted_through >= schedule.last_due_day(now)):
        return 0
    with db.read() as conn:
        days, all_posted = due_days(conn, schedule, now)
    if all_posted:
        schedule.posted_through = schedule.last_due_day(now)
    posted = 0
    for day in days:
        claim = _claim(db, day, schedule, now)
        if claim is None:
            continue
        try:
            with db.read() as conn:
                report = daily_report(conn, day, schedule.tz, now=now)
            post_report(schedule.webhook_url, report, timeout_seconds=schedule.timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the claim's lease retries it later
            log.error("the daily report of %s was not posted to Slack; trying again in %s: %s",
                      day, schedule.lease, exc)
            with db.transaction() as conn:
                conn.execute(_FAILED, {"b_day": day, "b_claim": claim, "last_error": str(exc)[:500]})
            continue
        with db.transaction() as conn:
            conn.execute(_MARK, {"b_day": day, "b_claim": claim, "posted_at": now})
        log.info("posted the daily report of %s to Slack", day)
        posted += 1
    return posted


def _claim(db: Database, day: date, schedule: ReportSchedule, now: datetime) -> str | None:
    """Claim `day` for this worker: a new row, or a claim whose lease ran out. The claim's token, or None
    when another worker holds the day or posted it."""
    claim = secrets.token_hex(16)
    with db.transaction() as conn:
        values = {"day": day, "claim": claim, "claimed_at": now, "attempts": 1}
        if conn.execute(_CLAIM[conn.dialect.name], values).first() is not None:
            return claim
        taken = conn.execute(_TAKE_OVER, {"b_day": day, "b_stale": now - schedule.lease, "claim": claim,
                                          "claimed_at": now})
        return claim if taken.rowcount == 1 else None
