"""Approvers' sign-in sessions for the HTML pages: Flask's signed-cookie session, with the cookie's flags
fixed here, and who is signed in checked against the database on every request.

The cookie is signed with SESSION_SECRET (itsdangerous, as Flask's default session), HttpOnly,
SameSite=Strict, Secure whenever the request came over HTTPS, and expires after `LIFETIME`. It holds the
approver's name, a hash identifying the token they signed in with, and the forms' CSRF token: revoking
the approver or rotating their token ends the session at its next request.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta

from flask import Flask, request, session
from flask.sessions import SecureCookieSessionInterface

from .approvers import Approver, active_in
from .db import Database

__all__ = ["COOKIE", "LIFETIME", "csrf_token", "csrf_valid", "enabled", "install", "sign_in", "sign_out", "signed_in"]

COOKIE = "refund_session"
LIFETIME = timedelta(hours=12)


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie with the flags this service needs, whatever the app's config says."""

    def get_cookie_name(self, app: Flask) -> str:
        return COOKIE

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure

    def get_cookie_samesite(self, app: Flask) -> str:
        return "Strict"

    def get_cookie_httponly(self, app: Flask) -> bool:
        return True


def install(app: Flask, secret: str | None) -> None:
    """Make `app`'s sessions these cookies, signed with `secret`; without one, sessions stay off."""
    app.session_interface = _SessionInterface()
    app.permanent_session_lifetime = LIFETIME
    if secret:
        app.secret_key = secret


def enabled(app: Flask) -> bool:
    return bool(app.secret_key)


def csrf_token() -> str:
    """The session's CSRF token for forms, made on first use."""
    token: str = session.setdefault("csrf", secrets.token_urlsafe(24))
    return token


def csrf_valid(submitted: str) -> bool:
    """Whether a form's token is the session's (constant-time); False when either is missing."""
    expected = session.get("csrf", "")
    return bool(expected) and hmac.compare_digest(str(expected).encode(), submitted.encode())


def sign_in(approver: Approver) -> None:
    """Start a new session for `approver` (a fresh cookie and CSRF token: nothing from before sign-in is kept)."""
    session.clear()
    session.permanent = True
    session.update(approver=approver.name, credential=approver.token_hash, csrf=secrets.token_urlsafe(24))


def sign_out() -> None:
    """End the session: its cookie is removed in this response."""
    session.clear()


def signed_in(db: Database) -> Approver | None:
    """The approver this request's session belongs to, if still active with the same token; else None (and
    a stale session is cleared)."""
    name, credential = session.get("approver"), session.get("credential")
    if not isinstance(name, str) or not isinstance(credential, str):
        return None
    with db.read() as conn:
        approver = active_in(conn, name)
    if approver is None or not hmac.compare_digest(approver.token_hash.encode(), credential.encode()):
        session.clear()
        return None
    return approver
