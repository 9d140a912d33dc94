"""The daily report of issue 10: figures from the database (`daily`), as data (`model`), shown as a
table, JSON or CSV (`render`) or a Slack message (`slack`); `sync` fills the Stripe charge cache."""

from __future__ import annotations

from .daily import MIN_CHARGES, daily_report, day_window
from .model import DailyReport

__all__ = ["MIN_CHARGES", "DailyReport", "daily_report", "day_window"]
