"""Who may file a refund request: the intake token, or a Standard Webhooks signature.

Standard Webhooks (https://www.standardwebhooks.com/): the sender signs `{webhook-id}.{webhook-timestamp}.{body}`
with HMAC-SHA256 under a shared `whsec_<base64>` secret and sends three headers: `webhook-id` (a unique message
id), `webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,<base64 signature>`, several separated by
spaces while a secret is being rotated). Signatures are verified by the `standardwebhooks` library, with its
tolerance of 5 minutes either way between the timestamp and our clock.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from standardwebhooks import Webhook

__all__ = ["MAX_SIGNATURES", "MIN_SECRET_BYTES", "SECRET_PREFIX", "WEBHOOK_KEY_PREFIX", "Headers",
           "IntakeAuth", "IntakeCaller", "decode_signing_secret"]

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
# A signed request's idempotency key is this prefix and its webhook-id; Idempotency-Key headers may not start so.
WEBHOOK_KEY_PREFIX = "webhook:"
# Standard Webhooks: secrets should be 24 to 64 random bytes. Shorter ones are refused.
MIN_SECRET_BYTES = 24
# More than enough for a rotation; bounds the HMACs one request can cost (signatures x secrets).
MAX_SIGNATURES = 10
# Unix seconds exactly as signed: ASCII digits, no sign, fraction, exponent or leading zero. The library would
# also take "1.7e9", " 1700000000.9" or "01700000000", and check the signature against the whole seconds it
# reads from them, i.e. against another string than the header that was sent.
_TIMESTAMP = re.compile(r"[1-9][0-9]{0,14}")


class Headers(Protocol):
    """A dict of headers, or Werkzeug's `request.headers`."""

    def items(self) -> Iterable[tuple[str, str]]: ...


@dataclass(frozen=True)
class IntakeCaller:
    """Who authenticated an intake request.

    `channel` is "token" (the bearer INTAKE_TOKEN) or "signed" (a Standard Webhooks signature);
    `webhook_id` is the signed message's `webhook-id` for "signed", None for "token".
    """

    channel: Literal["token", "signed"]
    webhook_id: str | None = None


def decode_signing_secret(secret: str) -> bytes:
    """The key of a `whsec_<base64>` secret (standard base64, padding optional).

    Raises ValueError if the prefix is missing, the rest is not base64, or the key is shorter than
    MIN_SECRET_BYTES. The message says which; it never contains the secret.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"does not start with {SECRET_PREFIX}")
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"is not base64 after {SECRET_PREFIX}") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"decodes to {len(key)} bytes; at least {MIN_SECRET_BYTES} are needed")
    return key


class IntakeAuth:
    """Authenticates intake requests by bearer token or by Standard Webhooks signature.

    Immutable once built, so one instance serves every thread.
    """

    def __init__(self, *, token: str | None = None, signing_secrets: Iterable[str] = ()) -> None:
        """`token`: the bearer token, or None for none. `signing_secrets`: `whsec_<base64>` secrets, each valid.

        Raises ValueError for an empty token or secret, for a secret `decode_signing_secret` refuses, and when
        neither a token nor a secret is given (nothing could ever authenticate).
        """
        if token == "":
            raise ValueError("the intake token is empty")
        secrets = list(signing_secrets)
        if any(secret == "" for secret in secrets):
            raise ValueError("a signing secret is empty")
        if token is None and not secrets:
            raise ValueError("neither an intake token nor a signing secret is configured")
        self._token = token.encode(errors="surrogatepass") if token is not None else None
        # Given the decoded key, the library does not decode the secret again (more leniently than we did).
        self._webhooks = tuple(Webhook(decode_signing_secret(secret)) for secret in secrets)

    def authenticate(self, headers: Headers, body: bytes) -> IntakeCaller | None:
        """Who sent this request, or None if nobody we know did.

        `headers`: the request's headers (names in any case); `body`: its raw bytes, exactly as received.

        A request is "signed" when `webhook-id`, `webhook-timestamp` and `webhook-signature` are all present
        and non-empty, the timestamp is Unix seconds in plain digits (no sign, fraction or leading zero) within
        5 minutes of now (either way), and at least one of the space-separated signatures (at most
        MAX_SIGNATURES) verifies under at least one configured secret. A valid signature wins over a token, so a
        signed message is always deduplicated by its id.
        Otherwise, `Authorization: Bearer <token>` matching the configured token (constant-time) makes it a
        "token" request. Anything else, including any exception the library raises on malformed headers or
        body, is None: never an error.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        signed = self._signed(lowered, body)
        if signed is not None:
            return signed
        given = _bearer(lowered.get("authorization", ""))
        # surrogatepass: header (and environment) text may hold lone surrogates; this encoding is one-to-one.
        if self._token is not None and given and hmac.compare_digest(given.encode(errors="surrogatepass"),
                                                                     self._token):
            return IntakeCaller("token")
        return None

    def _signed(self, headers: Mapping[str, str], body: bytes) -> IntakeCaller | None:
        msg_id = headers.get("webhook-id")
        timestamp = headers.get("webhook-timestamp")
        signatures = [s for s in headers.get("webhook-signature", "").split(" ") if s]
        if not (self._webhooks and msg_id and timestamp and signatures) or len(signatures) > MAX_SIGNATURES:
            return None
        if not _TIMESTAMP.fullmatch(timestamp):
            return None
        # One signature at a time: given them all, the library stops at the first malformed one (`v1` with no
        # comma, bad padding, ...) with a ValueError, even when a later one is valid.
        for signature in signatures:
            for webhook in self._webhooks:
                one = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
                if _verifies(webhook, body, one):
                    return IntakeCaller("signed", msg_id)
        return None


def _verifies(webhook: Webhook, body: bytes, headers: dict[str, str]) -> bool:
    try:
        webhook.verify(body, headers, json_parse=False)
    # Not only WebhookVerificationError: malformed input also raises ValueError (`v1` with no comma, or more
    # than one), binascii.Error (padding), UnicodeError (a body that is not UTF-8, an id with a lone
    # surrogate), ... Whatever it is, the request is not authenticated.
    except Exception:  # noqa: BLE001
        return False
    return True


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
