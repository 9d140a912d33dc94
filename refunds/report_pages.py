"""The daily report in a browser: `GET /reports/daily?date=YYYY-MM-DD` for approvers, who sign in at
`/sign-in` with their approver token (or send it as `Authorization: Bearer ...`, for machines), and
`POST /sign-out`. `?format=json` answers the report as `flask report daily --format json` prints it.

The pages' forms are CSRF-protected by a token kept in the signed session (see `sessions`). Without
SESSION_SECRET, sign-in is off: its pages answer 404 saying so, and only the bearer token opens the report.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.blueprints import BlueprintSetupState

from . import sessions
from .approval_pages import SECURITY_HEADERS
from .approvers import Approver, authenticate
from .http_errors import HttpRefusal
from .reports import daily_report
from .reports.chart import COLORS, bar_chart
from .reports.page import report_page
from .reports.render import LABELS, as_json, money_text, seconds_text
from .service import RefundService

__all__ = ["bp"]

bp = Blueprint("report_pages", __name__, template_folder="templates")
SIGN_IN_OFF = "Sign-in is off on this server: set SESSION_SECRET (32+ random characters) to turn it on."
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_FIRST_DAY, _LAST_DAY = date(1900, 1, 1), date(9899, 12, 31)


@bp.record_once
def _install_sessions(state: BlueprintSetupState) -> None:
    app = state.app
    assert isinstance(app, Flask)
    sessions.install(app, app.config["SETTINGS"].session_secret)


def _service() -> RefundService:
    service: RefundService = current_app.extensions["refund_service"]
    return service


@bp.get("/sign-in")
def sign_in_form() -> Response:
    """The sign-in form; an approver already signed in goes on to the page they asked for."""
    if not sessions.enabled(current_app):
        return _html("message.html", 404, title="Sign in", message=SIGN_IN_OFF)
    if sessions.signed_in(_service().db) is not None:
        return _redirect(_next())
    return _html("sign_in.html", 200, csrf_token=sessions.csrf_token(), next=_next())


@bp.post("/sign-in")
def sign_in() -> Response:
    """Sign in with an approver token: a new session cookie, then on to `next`. A wrong token sets nothing."""
    if not sessions.enabled(current_app):
        return _html("message.html", 404, title="Sign in", message=SIGN_IN_OFF)
    if not sessions.csrf_valid(request.form.get("csrf_token", "")):
        return _html("message.html", 403, title="Sign in",
                     message="This form expired or did not come from this site; open the sign-in page again.")
    approver = authenticate(_service().db, request.form.get("token", "").strip())
    if approver is None:
        return _html("sign_in.html", 401, csrf_token=sessions.csrf_token(), next=_next(),
                     message="That is not the token of an active approver.")
    sessions.sign_in(approver)
    return _redirect(_next())


@bp.post("/sign-out")
def sign_out() -> Response:
    """End the session (its cookie is removed), then back to the sign-in page."""
    if not sessions.enabled(current_app):
        return _html("message.html", 404, title="Sign out", message=SIGN_IN_OFF)
    if not sessions.csrf_valid(request.form.get("csrf_token", "")):
        return _html("message.html", 403, title="Sign out",
                     message="This form expired or did not come from this site; reload the page and try again.")
    sessions.sign_out()
    return _redirect(url_for("report_pages.sign_in_form"))


@bp.get("/reports/daily")
def daily() -> Response:
    """One day's report (default: yesterday in REPORT_TZ) with a 30-day chart, or `?format=json`."""
    approver = _viewer()
    if approver is None:
        return _redirect(url_for("report_pages.sign_in_form", next=request.full_path.rstrip("?")))
    settings = current_app.config["SETTINGS"]
    tz = ZoneInfo(settings.report_tz)
    now = _service().clock()
    day = _day(request.args.get("date"), now.astimezone(tz).date() - timedelta(days=1))
    fmt = request.args.get("format", "html")
    if fmt not in ("html", "json"):
        raise HttpRefusal("invalid_request", "format must be html or json.", 400)
    if fmt == "json":
        with _service().db.read() as conn:
            response = jsonify(as_json(daily_report(conn, day, tz, now=now)))
        response.headers.update(SECURITY_HEADERS)
        return response
    with _service().db.read() as conn:
        page = report_page(conn, day, tz, now=now)
    # A bearer caller has no session: no cookie is made for it, and no sign-out form shown.
    signed_in = "Authorization" not in request.headers
    return _html("report_daily.html", 200, report=page.report, chart=bar_chart(page.series), approver=approver,
                 csrf_token=sessions.csrf_token() if signed_in else None,
                 labels=LABELS, colors=COLORS, money_text=money_text, seconds_text=seconds_text)


def _day(text: str | None, default: date) -> date:
    """`date` as given (YYYY-MM-DD, 1900 to 9899), else `default`. Raises `HttpRefusal` 400 otherwise."""
    if text is None:
        return default
    try:
        day = date.fromisoformat(text) if _DAY.fullmatch(text) else None
    except ValueError:
        day = None
    if day is None or not _FIRST_DAY <= day <= _LAST_DAY:
        raise HttpRefusal("invalid_request", "date must be a day as YYYY-MM-DD, from 1900 to 9899.", 400)
    return day


def _viewer() -> Approver | None:
    """Who asks: the bearer token's approver, else the session's; None: they must sign in.
    Raises `HttpRefusal` 401 when the bearer token is wrong, or missing while sign-in is off."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        approver = authenticate(_service().db, token.strip()) if scheme.lower() == "bearer" else None
        if approver is None:
            raise HttpRefusal("unauthorized", "Send a valid approver token as 'Authorization: Bearer <token>'.", 401)
        return approver
    if not sessions.enabled(current_app):
        raise HttpRefusal("unauthorized", "Send 'Authorization: Bearer <approver token>'. " + SIGN_IN_OFF, 401)
    return sessions.signed_in(_service().db)


def _next() -> str:
    """Where to go after sign-in: `next` when it is a report page of this site, else the daily report."""
    target = request.values.get("next", "")
    try:
        parts = urlsplit(target)
    except ValueError:  # an unbalanced [ or ] in what would be a host: not a page of ours
        return url_for("report_pages.daily")
    if parts.scheme or parts.netloc or not parts.path.startswith("/reports/") or target.startswith("//"):
        return url_for("report_pages.daily")
    return target


def _redirect(location: str) -> Response:
    response = make_response(redirect(location, 303))
    response.headers.update(SECURITY_HEADERS)
    return response


def _html(template: str, status: int, **context: Any) -> Response:
    response = make_response(render_template(template, **context), status)
    response.headers.update(SECURITY_HEADERS)
    return response
