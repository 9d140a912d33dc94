"""Signed intake: POST /refund-request authenticated by a Standard Webhooks signature instead of the bearer token.

Signed payloads are built with the `standardwebhooks` library itself (`Webhook(secret).sign(...)`), as a sender
would. The library checks timestamps against the real clock, so these tests sign with the real time too.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from standardwebhooks import Webhook

from refunds import create_app
from refunds.config import ConfigError, load_settings
from refunds.intake_auth import IntakeAuth, IntakeCaller
from refunds.tables import refund_requests
from tests.conftest import INTAKE_SIGNING_SECRET, INTAKE_TOKEN, make_settings
from tests.fakes import FakeClock, FakeGateway, FakeNotifier

SECRET = INTAKE_SIGNING_SECRET
NEXT_SECRET = "whsec_" + base64.b64encode(b"the next intake secret, 32 bytes").decode()
REMOVED_SECRET = "whsec_" + base64.b64encode(b"an intake secret, now rotated out").decode()
SMALL = {"charge_id": "ch_small", "amount": 1500}


def body_of(data: Any) -> bytes:
    return json.dumps(data).encode()


def signed(body: bytes, *, msg_id: str = "msg_2mVdpKbXlJ0e", secret: str = SECRET,
           at: datetime | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`, signed by the library."""
    at = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode()),
    }


def send(client: FlaskClient, body: bytes, headers: dict[str, str]) -> Any:
    return client.post("/refund-request", data=body, headers={"Content-Type": "application/json", **headers})


def stored_requests(app: Flask) -> list[Any]:
    with app.extensions["refund_service"].db.transaction() as conn:
        return list(conn.execute(select(refund_requests).order_by(refund_requests.c.id)))


def assert_refused(response: Any) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == "unauthorized"
    assert isinstance(body["message"], str)
    assert set(body) == {"error", "message"}


@pytest.fixture
def signing_secrets() -> tuple[str, ...]:
    """The configured INTAKE_SIGNING_SECRET; tests about rotation parametrize it."""
    return (SECRET,)


@pytest.fixture
def app(database_url: str, gateway: FakeGateway, notifier: FakeNotifier, clock: FakeClock,
        signing_secrets: tuple[str, ...]) -> Iterator[Flask]:
    """The conftest app (SQLite and PostgreSQL), with signed intake configured besides the token."""
    app = create_app(make_settings(database_url, intake_signing_secrets=signing_secrets),
                     gateway=gateway, notifier=notifier, clock=clock)
    app.config["TESTING"] = True
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    yield app
    app.extensions["refund_service"].db.dispose()


# --- the HTTP contract, on SQLite and PostgreSQL ------------------------------------------------------------


def test_a_correctly_signed_request_is_refunded_on_stripe_with_its_webhook_id_as_idempotency_key(
    app: Flask, client: FlaskClient, gateway: FakeGateway
) -> None:
    body = body_of(SMALL)
    response = send(client, body, signed(body, msg_id="msg_first"))

    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["status"] == "auto_approved"
    assert [(r.refund_id, r.charge_id, r.amount) for r in gateway.refunds] == [(answer["refund_id"], "ch_small", 1500)]
    [call] = gateway.calls
    assert (call.charge_id, call.amount) == ("ch_small", 1500)
    [stored] = stored_requests(app)
    assert stored.idempotency_key == "webhook:msg_first"
    assert call.idempotency_key == stored.stripe_idempotency_key


def test_a_signed_request_whose_body_was_altered_is_refused_and_nothing_is_recorded_or_sent_to_stripe(
    app: Flask, client: FlaskClient, gateway: FakeGateway
) -> None:
    headers = signed(body_of(SMALL))
    response = send(client, body_of({**SMALL, "amount": 3000}), headers)

    assert_refused(response)
    assert gateway.calls == []
    assert stored_requests(app) == []


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)], ids=["6-min-old", "6-min-ahead"])
def test_a_timestamp_six_minutes_old_or_six_minutes_ahead_is_refused(
    app: Flask, client: FlaskClient, gateway: FakeGateway, offset: timedelta
) -> None:
    body = body_of(SMALL)
    assert_refused(send(client, body, signed(body, at=datetime.now(UTC) + offset)))
    assert gateway.calls == []
    assert stored_requests(app) == []


@pytest.mark.parametrize("offset", [timedelta(minutes=-4), timedelta(minutes=4)], ids=["4-min-old", "4-min-ahead"])
def test_a_timestamp_four_minutes_off_either_way_is_still_accepted(
    client: FlaskClient, gateway: FakeGateway, offset: timedelta
) -> None:
    body = body_of(SMALL)
    assert send(client, body, signed(body, at=datetime.now(UTC) + offset)).status_code == 200
    assert len(gateway.refunds) == 1


def test_a_replayed_webhook_id_gets_the_first_answer_and_stripe_sees_nothing_more(
    app: Flask, client: FlaskClient, gateway: FakeGateway
) -> None:
    body = body_of(SMALL)
    headers = signed(body, msg_id="msg_once", at=datetime.now(UTC) - timedelta(seconds=30))
    first = send(client, body, headers)
    replayed = send(client, body, headers)  # the same bytes again: a captured request, or a duplicate delivery
    # The sender's retry: the same id and body, a later timestamp, so another signature.
    retried = send(client, body, signed(body, msg_id="msg_once"))
    assert retried.request.headers["webhook-signature"] != headers["webhook-signature"]

    assert first.status_code == replayed.status_code == retried.status_code == 200
    assert first.get_json() == replayed.get_json() == retried.get_json()
    assert len(gateway.refunds) == 1
    assert len(gateway.calls) == 1
    assert len(stored_requests(app)) == 1


def test_a_replayed_webhook_id_of_a_queued_refund_gets_the_same_pending_answer(
    app: Flask, client: FlaskClient, gateway: FakeGateway
) -> None:
    body = body_of({"charge_id": "ch_big", "amount": 15000})
    headers = signed(body, msg_id="msg_big")
    first, replayed = send(client, body, headers), send(client, body, headers)

    assert first.status_code == replayed.status_code == 202
    assert first.get_json() == replayed.get_json()
    assert first.get_json()["status"] == "pending_approval"
    assert gateway.calls == []
    assert len(stored_requests(app)) == 1


def test_the_same_webhook_id_with_another_body_gets_422_and_refunds_nothing_more(
    client: FlaskClient, gateway: FakeGateway
) -> None:
    first = body_of(SMALL)
    other = body_of({**SMALL, "amount": 500})
    assert send(client, first, signed(first, msg_id="msg_reused")).status_code == 200

    response = send(client, other, signed(other, msg_id="msg_reused"))

    assert response.status_code == 422
    assert response.get_json()["error"] == "idempotency_mismatch"
    assert len(gateway.refunds) == 1


def test_a_webhook_id_never_collides_with_an_idempotency_key_and_the_header_cannot_take_its_prefix(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    body = body_of({**SMALL, "amount": 100})
    by_token = send(client, body, {**intake_headers, "Idempotency-Key": "msg_same"})
    by_signature = send(client, body, signed(body, msg_id="msg_same"))
    squatting = send(client, body, {**intake_headers, "Idempotency-Key": "webhook:msg_other"})

    assert by_token.status_code == by_signature.status_code == 200
    assert by_token.get_json()["refund_id"] != by_signature.get_json()["refund_id"]
    assert [r.idempotency_key for r in stored_requests(app)] == ["msg_same", "webhook:msg_same"]
    assert squatting.status_code == 400
    assert "Idempotency-Key" in squatting.get_json()["message"]
    assert len(gateway.refunds) == 2


def test_on_a_signed_request_the_idempotency_key_header_is_checked_but_the_webhook_id_is_the_key(
    app: Flask, client: FlaskClient, gateway: FakeGateway
) -> None:
    body = body_of(SMALL)
    headers = signed(body, msg_id="msg_keyed")
    # A replay cannot escape deduplication by adding a fresh Idempotency-Key: it is not signed.
    first = send(client, body, {**headers, "Idempotency-Key": "fresh-1"})
    second = send(client, body, {**headers, "Idempotency-Key": "fresh-2"})
    malformed = send(client, body, {**headers, "Idempotency-Key": "a\tb"})

    assert first.get_json() == second.get_json()
    assert malformed.status_code == 400
    assert [r.idempotency_key for r in stored_requests(app)] == ["webhook:msg_keyed"]
    assert len(gateway.refunds) == 1


def test_a_signed_request_whose_webhook_id_cannot_be_a_key_is_refused_naming_it(
    app: Flask, client: FlaskClient, gateway: FakeGateway
) -> None:
    body = body_of(SMALL)
    for msg_id in ("m" * 248, "msg\x00nul", "msg\ttab"):
        response = send(client, body, signed(body, msg_id=msg_id))
        assert response.status_code == 400, msg_id
        assert response.get_json()["message"].startswith("webhook-id:")
    assert gateway.calls == []
    assert stored_requests(app) == []


@pytest.mark.parametrize("signing_secrets", [(NEXT_SECRET, SECRET)], ids=["two-secrets"])
def test_during_rotation_a_message_signed_with_either_secret_is_accepted_and_a_removed_one_is_refused(
    client: FlaskClient, gateway: FakeGateway
) -> None:
    body = body_of({**SMALL, "amount": 100})
    by_new = send(client, body, signed(body, msg_id="msg_new", secret=NEXT_SECRET))
    by_old = send(client, body, signed(body, msg_id="msg_old", secret=SECRET))
    by_removed = send(client, body, signed(body, msg_id="msg_removed", secret=REMOVED_SECRET))

    assert by_new.status_code == by_old.status_code == 200
    assert_refused(by_removed)
    assert len(gateway.refunds) == 2


@pytest.mark.parametrize(
    "first",
    ["removed-secret", "v1,AAAA", "v1,abc", "v1", "v2,valid", "v1,a,b"],
    ids=["other-secret", "wrong-digest", "bad-padding", "no-comma", "unknown-version", "two-commas"],
)
def test_several_signatures_where_only_the_second_is_valid_are_accepted(
    client: FlaskClient, gateway: FakeGateway, first: str
) -> None:
    body = body_of(SMALL)
    headers = signed(body)
    valid = headers["webhook-signature"]
    if first == "removed-secret":
        first = signed(body, secret=REMOVED_SECRET)["webhook-signature"]
    elif first == "v2,valid":
        first = "v2," + valid.removeprefix("v1,")
    response = send(client, body, {**headers, "webhook-signature": f"{first} {valid}"})

    assert response.status_code == 200, response.get_json()
    assert len(gateway.refunds) == 1


def _malformed(headers: dict[str, str], case: str) -> dict[str, str]:
    name, _, change = case.partition(":")
    header = f"webhook-{name}"
    if change == "missing":
        return {k: v for k, v in headers.items() if k != header}
    if change == "empty":
        return {**headers, header: ""}
    value = {
        "no-comma": "v1",
        "comma-only": "v1,",
        "not-base64": "v1,!!!!$$$$",
        "not-an-integer": "soon",
        "fraction": headers["webhook-timestamp"] + ".0",
        "exponent": f"{int(headers['webhook-timestamp']) / 1e9}e9",
        "leading-zero": "0" + headers["webhook-timestamp"],
        "leading-space": " " + headers["webhook-timestamp"],
        "negative": "-" + headers["webhook-timestamp"],
        "huge": "9" * 400,
        "unicode": "☃ \ud800 \x00 \x85 ﷽",
        "arabic-digits": "١٧٠٠٠٠٠٠٠٠",
        "eleven-signatures": " ".join(["v1,AAAA"] * 10 + [headers["webhook-signature"]]),
        "v1-uppercase": "V1," + headers["webhook-signature"].removeprefix("v1,"),
    }[change]
    return {**headers, header: value}


@pytest.mark.parametrize("case", [
    "id:missing", "timestamp:missing", "signature:missing",
    "id:empty", "timestamp:empty", "signature:empty",
    "signature:no-comma", "signature:comma-only", "signature:not-base64", "signature:unicode",
    "signature:eleven-signatures", "signature:v1-uppercase",
    "timestamp:not-an-integer", "timestamp:fraction", "timestamp:exponent", "timestamp:leading-zero",
    "timestamp:leading-space", "timestamp:negative", "timestamp:huge", "timestamp:unicode", "timestamp:arabic-digits",
    "id:unicode",
])
def test_malformed_signature_headers_get_401_never_500(
    app: Flask, client: FlaskClient, gateway: FakeGateway, case: str
) -> None:
    body = body_of(SMALL)
    assert_refused(send(client, body, _malformed(signed(body), case)))
    assert gateway.calls == []
    assert stored_requests(app) == []


def test_a_body_that_is_not_utf8_is_refused_with_401_not_500(client: FlaskClient, gateway: FakeGateway) -> None:
    body = b'{"charge_id": "ch_small", "note": "\xff"}'
    headers = signed(body_of(SMALL))
    assert_refused(send(client, body, headers))
    assert gateway.calls == []


def test_the_bearer_token_still_works_alongside_signatures(
    client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    response = send(client, body_of(SMALL), {**intake_headers, "Idempotency-Key": "ticket-1"})
    assert response.status_code == 200
    assert [r.amount for r in gateway.refunds] == [1500]
    # A wrong token is refused, and so is a right token sent without the Bearer scheme.
    assert_refused(send(client, body_of(SMALL), {"Authorization": "Bearer wrong-token-0123456789"}))
    assert_refused(send(client, body_of(SMALL), {"Authorization": INTAKE_TOKEN}))
    assert len(gateway.calls) == 1


def test_a_valid_token_with_a_bad_signature_is_a_token_request_and_a_valid_signature_wins_over_a_token(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    body = body_of({**SMALL, "amount": 100})
    token_only = send(client, body, {**intake_headers, **signed(body, secret=REMOVED_SECRET, msg_id="msg_bad")})
    both = send(client, body, {**intake_headers, **signed(body, msg_id="msg_good")})

    assert token_only.status_code == both.status_code == 200
    assert [r.idempotency_key for r in stored_requests(app)] == [None, "webhook:msg_good"]


def test_without_an_intake_token_only_signed_requests_are_accepted(
    database_url: str, gateway: FakeGateway, notifier: FakeNotifier, clock: FakeClock
) -> None:
    settings = make_settings(database_url, intake_token=None, intake_signing_secrets=(SECRET,))
    app = create_app(settings, gateway=gateway, notifier=notifier, clock=clock)
    if not database_url.startswith("sqlite"):
        app.extensions["refund_service"].db.upgrade()
    client = app.test_client()
    body = body_of(SMALL)
    try:
        assert_refused(send(client, body, {"Authorization": f"Bearer {INTAKE_TOKEN}"}))
        assert send(client, body, signed(body)).status_code == 200
    finally:
        app.extensions["refund_service"].db.dispose()
    assert len(gateway.refunds) == 1


# --- 10,000 malformed and near-valid signatures ------------------------------------------------------------

# Any character but CR and LF (Werkzeug refuses them in a header value), lone surrogates included.
PRINTABLE = st.one_of(st.characters(exclude_characters="\r\n"), st.characters(categories=["Cs"]))
BODIES = [body_of(SMALL), body_of({"charge_id": "ch_big", "amount": 15000}), body_of({"payment_intent_id": "pi_big"})]


@st.composite
def near_valid(draw: st.DrawFn, body: bytes) -> dict[str, str]:
    """A correctly signed set of headers with exactly one change that must make it invalid."""
    msg_id = draw(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40))
    now = datetime.now(UTC)
    headers = signed(body, msg_id=msg_id)
    timestamp = int(headers["webhook-timestamp"])
    digest = base64.b64decode(headers["webhook-signature"].removeprefix("v1,"))
    change = draw(st.sampled_from([
        "flip-bit", "other-secret", "other-body", "other-id", "other-timestamp", "outside-window", "version",
        "truncated", "drop-header", "several-invalid",
    ]))
    if change == "flip-bit":
        index, bit = draw(st.integers(0, len(digest) - 1)), draw(st.integers(0, 7))
        flipped = bytearray(digest)
        flipped[index] ^= 1 << bit
        headers["webhook-signature"] = "v1," + base64.b64encode(bytes(flipped)).decode()
    elif change == "other-secret":
        secret = draw(st.sampled_from([REMOVED_SECRET, NEXT_SECRET]))
        headers["webhook-signature"] = signed(body, msg_id=msg_id, secret=secret, at=now)["webhook-signature"]
    elif change == "other-body":
        headers["webhook-signature"] = signed(body + b" ", msg_id=msg_id, at=now)["webhook-signature"]
    elif change == "other-id":
        headers["webhook-id"] = msg_id + draw(st.text(PRINTABLE, min_size=1, max_size=5))
    elif change == "other-timestamp":
        headers["webhook-timestamp"] = str(timestamp + draw(st.integers(-600, 600).filter(bool)))
    elif change == "outside-window":  # properly signed, but 5.5 minutes to ~3 years away
        seconds = draw(st.integers(330, 10**8)) * draw(st.sampled_from([-1, 1]))
        headers = signed(body, msg_id=msg_id, at=now + timedelta(seconds=seconds))
    elif change == "version":
        version = draw(st.sampled_from(["v2", "V1", "v1a", "v", "", "v1 ", "v0"]))
        headers["webhook-signature"] = f"{version},{headers['webhook-signature'].removeprefix('v1,')}"
    elif change == "truncated":
        signature = headers["webhook-signature"]
        headers["webhook-signature"] = signature[: draw(st.integers(0, len(signature) - 1))]
    elif change == "drop-header":
        del headers[draw(st.sampled_from(sorted(headers)))]
    else:
        wrong = [signed(body, msg_id=msg_id, secret=REMOVED_SECRET, at=now)["webhook-signature"], "v1", "v1,AAAA"]
        headers["webhook-signature"] = " ".join(draw(st.lists(st.sampled_from(wrong), min_size=2, max_size=12)))
    return headers


def _optional(values: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), values)


RANDOM_IDS = _optional(st.one_of(st.text(PRINTABLE, max_size=60), st.just("msg_2mVdpKbXlJ0e")))
RANDOM_TIMESTAMPS = _optional(st.one_of(
    st.integers(-(10**12), 10**16).map(str),
    st.builds(lambda offset: str(int(time.time()) + offset), st.integers(-400, 400)),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(PRINTABLE, max_size=20),
))
RANDOM_SIGNATURES = _optional(st.one_of(
    st.text(PRINTABLE, max_size=120),
    st.binary(min_size=0, max_size=40).map(lambda raw: "v1," + base64.b64encode(raw).decode()),
    st.lists(st.one_of(st.text(PRINTABLE, max_size=50),
                       st.binary(min_size=32, max_size=32).map(lambda raw: "v1," + base64.b64encode(raw).decode())),
             max_size=12).map(" ".join),
))


@st.composite
def random_headers(draw: st.DrawFn) -> dict[str, str]:
    """Each of the three headers independently absent, random, or plausible."""
    drawn = {"webhook-id": draw(RANDOM_IDS), "webhook-timestamp": draw(RANDOM_TIMESTAMPS),
             "webhook-signature": draw(RANDOM_SIGNATURES)}
    return {name: value for name, value in drawn.items() if value is not None}


def test_ten_thousand_malformed_or_near_valid_signatures_all_get_401_and_stripe_is_never_called(
    tmp_path: Path,
) -> None:
    # SQLite only: the signature is checked before any database access, so PostgreSQL would test the same code;
    # 10,000 requests run in-process with Flask's test client, in seconds.
    gateway = FakeGateway()
    gateway.add_charge("ch_small", 3000)
    gateway.add_charge("ch_big", 20000, payment_intent_id="pi_big")
    app = create_app(make_settings(f"sqlite:///{tmp_path}/fuzz.db", intake_signing_secrets=(SECRET,)),
                     gateway=gateway, notifier=FakeNotifier())
    client = app.test_client()
    statuses: set[int] = set()

    @settings(max_examples=10_000, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def every_answer_is_401(data: st.DataObject) -> None:
        body = data.draw(st.sampled_from(BODIES))
        headers = data.draw(st.one_of(random_headers(), near_valid(body)))
        response = send(client, body, headers)
        statuses.add(response.status_code)
        assert_refused(response)

    started = time.monotonic()
    try:
        every_answer_is_401()
    finally:
        app.extensions["refund_service"].db.dispose()
    print(f"10,000 signed-intake examples in {time.monotonic() - started:.1f} s")  # noqa: T201
    assert statuses == {401}
    assert gateway.calls == []
    assert stored_requests(app) == []


# --- configuration and the authenticator -------------------------------------------------------------------

GOOD = {"STRIPE_SECRET_KEY": "sk_test_abc"}


def test_intake_signing_secret_takes_several_secrets_separated_by_spaces_or_commas() -> None:
    settings = load_settings({**GOOD, "INTAKE_SIGNING_SECRET": f" {SECRET}, {NEXT_SECRET}\t{REMOVED_SECRET},"})
    assert settings.intake_signing_secrets == (SECRET, NEXT_SECRET, REMOVED_SECRET)
    assert settings.intake_token is None


@pytest.mark.parametrize("bad", [
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no whsec_ prefix
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!",  # not base64
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2La-aSw",  # the URL-safe alphabet
    "whsec_c2hvcnQ=",  # decodes to 5 bytes
    "whsec_",
])
def test_a_signing_secret_that_does_not_decode_stops_start_up_with_one_line_naming_it_not_echoing_it(
    bad: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**GOOD, "INTAKE_TOKEN": INTAKE_TOKEN, "INTAKE_SIGNING_SECRET": f"{SECRET} {bad}"})
    message = str(caught.value)
    assert message.startswith("INTAKE_SIGNING_SECRET: secret 2 of 2 ")
    assert "\n" not in message
    for fragment in ("MfKQ9r8G", "c2hvcnQ"):
        assert fragment not in message


def test_intake_token_is_optional_with_a_signing_secret_and_one_of_the_two_is_required() -> None:
    assert load_settings({**GOOD, "INTAKE_SIGNING_SECRET": SECRET}).intake_token is None
    with pytest.raises(ConfigError) as caught:
        load_settings({**GOOD, "INTAKE_TOKEN": " ", "INTAKE_SIGNING_SECRET": " , "})
    assert str(caught.value).startswith("INTAKE_TOKEN is not set, nor INTAKE_SIGNING_SECRET")


def test_signing_secrets_are_not_in_the_settings_repr() -> None:
    settings = load_settings({**GOOD, "INTAKE_SIGNING_SECRET": f"{SECRET} {NEXT_SECRET}"})
    for secret in (SECRET, NEXT_SECRET):
        assert secret.removeprefix("whsec_") not in repr(settings)


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"token": ""}, "token is empty"),
    ({"token": INTAKE_TOKEN, "signing_secrets": [""]}, "secret is empty"),
    ({"signing_secrets": ["whsec_"]}, "at least 24"),
    ({}, "neither"),
])
def test_the_authenticator_refuses_an_empty_token_or_secret(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        IntakeAuth(**kwargs)


def test_the_authenticator_says_who_authenticated_and_takes_headers_in_any_case() -> None:
    auth = IntakeAuth(token=INTAKE_TOKEN, signing_secrets=[SECRET])
    body = body_of(SMALL)
    shouted = {name.upper(): value for name, value in signed(body, msg_id="msg_caps").items()}
    assert auth.authenticate(shouted, body) == IntakeCaller("signed", "msg_caps")
    assert auth.authenticate({"authorization": f"bearer {INTAKE_TOKEN}"}, body) == IntakeCaller("token")
    assert auth.authenticate({"Authorization": "Bearer \ud800"}, body) is None
    assert auth.authenticate({}, body) is None
