"""The OpenAPI document is the contract: schemathesis checks every answer of the real app against it.

Requests go to the Flask app in-process (WSGI, no network), built on the fake Stripe and Slack
adapters. Every schemathesis check is on, with schema-valid (positive) and schema-invalid
(negative) data, in all its phases: examples, coverage (boundary values, missing and unexpected
parameters, undeclared methods), fuzzing, and stateful sequences that follow the document's links
(request -> approve or reject -> history). The intake operation runs twice: with the bearer token, and signed
(Standard Webhooks) as its second security alternative. So: no 5xx, no undocumented status code, content type,
header or body; valid input accepted, invalid input refused; declared authentication enforced.

SQLite only: the contract is the same on PostgreSQL (the handlers and the document do not depend
on the database, and the other test modules run every behaviour on both). The same run against
PostgreSQL passed when this was written.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.strategies as st
import pytest
import schemathesis
from flask import Flask
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import PositiveDataAcceptanceConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.schemas import BaseSchema
from slack_sdk.signature import SignatureVerifier
from standardwebhooks import Webhook

from refunds import create_app
from refunds.approvers import add as add_approver
from refunds.errors import ChargeNotFound
from refunds.identity import ambiguity
from refunds.service import utcnow
from refunds.tables import approvers, metadata
from tests.conftest import INTAKE_SIGNING_SECRET, INTAKE_TOKEN, WEBHOOK_SECRET, make_settings
from tests.fakes import FakeCharge, FakeGateway, FakeNotifier
from tests.stripe_events import sign

# Per operation, phase and generation mode; the module runs in about ten seconds.
MAX_EXAMPLES = 60
STATEFUL_STEPS = 6
SEED = 20240607
INTAKE_HEADERS = {"Authorization": f"Bearer {INTAKE_TOKEN}"}
SLACK_SIGNING_SECRET = "slack-signing-secret-for-the-contract"
SIGN_ME = "sign-me"  # a webhook delivery with this Stripe-Signature, or an intake request with this
# webhook-signature, gets a real one


class AnyChargeGateway(FakeGateway):
    """The fake Stripe, where every well-formed id names a charge, so generated bodies reach the handlers'
    success and refusal paths and not only `404 charge_not_found`.

    An unknown id becomes a charge of 30.00 USD (auto-approved) or 200.00 USD (queued for approval), picked
    by a checksum of the id so that runs repeat. Ids ending in `_missing` stay unknown.
    """

    def reset(self) -> None:
        """Stripe with only the charges of the other tests' `gateway` fixture."""
        self.charges.clear()
        self.refunds.clear()
        self.calls.clear()
        self._by_key.clear()
        self._ids = itertools.count(1)
        self.add_charge("ch_small", 3000)
        self.add_charge("ch_big", 20000, payment_intent_id="pi_big")

    def _find(self, charge_id: str | None, payment_intent_id: str | None) -> FakeCharge:
        try:
            return super()._find(charge_id, payment_intent_id)
        except ChargeNotFound:
            key = charge_id or payment_intent_id
            if key is None or key.endswith("_missing"):
                raise
            amount = (3000, 20000)[zlib.crc32(key.encode()) % 2]
            return self.add_charge(charge_id or f"ch_of_{key}", amount, payment_intent_id=payment_intent_id)


# The document's `unambiguous` string format (names and addresses that read one way only, see refunds/identity.py)
# is one no JSON Schema pattern can state: generate such values, as "name@example.com" so they fit the email pattern
# too. Values that break the format are proven refused in test_self_approval.py.
_LATIN = st.characters(min_codepoint=0x30, max_codepoint=0x24F, categories=["Ll", "Lu", "Nd"])
schemathesis.openapi.format("unambiguous", st.builds(
    "{}@{}.example".format, st.text(_LATIN, min_size=1, max_size=60), st.text(_LATIN, min_size=1, max_size=60),
).filter(lambda value: ambiguity(value) is None))


def start_afresh(app: Flask) -> None:
    """Forget every refund (approvers stay), then queue one large refund and make one small one, so that the
    approval queue and the history have something to show and pending id 1 exists."""
    service = app.extensions["refund_service"]
    with service.db.transaction() as conn:
        for table in reversed(metadata.sorted_tables):
            if table is not approvers:
                conn.execute(table.delete())
    service.gateway.reset()
    client = app.test_client()
    for body in ({"charge_id": "ch_big", "amount": 15000}, {"charge_id": "ch_small", "amount": 1000}):
        response = client.post("/refund-request", json=body, headers=INTAKE_HEADERS)
        assert response.status_code in (200, 202), response.get_json()


def sign_webhooks_like_stripe(app: Flask) -> None:
    """Play Stripe's part: sign the exact bytes of each webhook delivery whose Stripe-Signature is SIGN_ME.

    A generator cannot produce an HMAC of the body it generates, so without this every delivery would be
    an `invalid_signature` and the handler behind the check would go untested.
    """
    inner = app.wsgi_app

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_STRIPE_SIGNATURE") == SIGN_ME:
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            environ["HTTP_STRIPE_SIGNATURE"] = sign(body, WEBHOOK_SECRET)
        return inner(environ, start_response)

    app.wsgi_app = wsgi  # type: ignore[method-assign]


def sign_intake_like_a_sender(app: Flask) -> None:
    """Play a Standard Webhooks sender: sign the exact bytes of each intake request whose webhook-signature is
    SIGN_ME, now, with a webhook-id derived from the body (so a repeated body is a replayed message).

    A body that is not UTF-8 cannot be signed with the library and stays unsigned (401).
    """
    inner = app.wsgi_app

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_WEBHOOK_SIGNATURE") == SIGN_ME:
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            msg_id = "msg_" + hashlib.sha256(body).hexdigest()[:24]
            now = datetime.now(UTC)
            try:
                signature = Webhook(INTAKE_SIGNING_SECRET).sign(msg_id, now, body.decode())
            except UnicodeDecodeError:
                return inner(environ, start_response)
            environ.update(HTTP_WEBHOOK_ID=msg_id, HTTP_WEBHOOK_TIMESTAMP=str(int(now.timestamp())),
                           HTTP_WEBHOOK_SIGNATURE=signature)
        return inner(environ, start_response)

    app.wsgi_app = wsgi  # type: ignore[method-assign]


def sign_interactions_like_slack(app: Flask) -> None:
    """Play Slack's part: sign the exact bytes of each interaction whose X-Slack-Signature is SIGN_ME, now."""
    inner = app.wsgi_app

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_X_SLACK_SIGNATURE") == SIGN_ME:
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            timestamp = str(int(time.time()))
            try:
                signature = SignatureVerifier(SLACK_SIGNING_SECRET).generate_signature(timestamp=timestamp, body=body)
            except UnicodeDecodeError:  # slack_sdk signs text only; the service refuses such a body (401)
                return inner(environ, start_response)
            environ.update(HTTP_X_SLACK_REQUEST_TIMESTAMP=timestamp, HTTP_X_SLACK_SIGNATURE=signature)
        return inner(environ, start_response)

    app.wsgi_app = wsgi  # type: ignore[method-assign]


@pytest.fixture
def contract_app(tmp_path: Path) -> Iterator[Flask]:
    settings = make_settings(f"sqlite:///{tmp_path}/contract.db", intake_signing_secrets=(INTAKE_SIGNING_SECRET,),
                             slack_signing_secret=SLACK_SIGNING_SECRET)
    app = create_app(settings, gateway=AnyChargeGateway(), notifier=FakeNotifier())
    app.config["TESTING"] = True
    sign_webhooks_like_stripe(app)
    sign_intake_like_a_sender(app)
    sign_interactions_like_slack(app)
    start_afresh(app)
    yield app
    app.extensions["refund_service"].db.dispose()


def contract_config(approver_token: str, *, signed_intake: bool = False) -> schemathesis.Config:
    """Every check, positive and negative data, a fixed seed, and the right token per security scheme.

    Schemathesis authenticates with the first alternative of an operation's `security` it has credentials for:
    for the intake operation, the bearer token, or with `signed_intake` a signature (SIGN_ME, signed on the way in).
    """
    intake: dict[str, Any] = (
        {"signedIntake": {"api_key": SIGN_ME}} if signed_intake else {"intakeToken": {"bearer": INTAKE_TOKEN}}
    )
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        # Every check; the response-time limit is generous for an in-process call and catches a request that hangs.
        "checks": {"enabled": True, "max_response_time": 5.0},
        # Per scheme of `components.securitySchemes`: the intake token goes to the intake operation, the
        # approver token to the approver operations. Schemathesis leaves them out, or sends wrong ones, when
        # it tests that they are needed (`ignored_auth`, `missing_required_header`, negative headers).
        "auth": {"openapi": {**intake, "approverToken": {"bearer": approver_token}}},
        "operations": [{
            "include-operation-id": "requestRefund",
            # A schema-valid body may meet an Idempotency-Key already used with another body: the documented
            # `422 idempotency_mismatch` (the status the IETF Idempotency-Key draft prescribes). It depends on
            # what was sent before, not on the body; this API never answers 422 to an invalid body (that is
            # 400), so valid data wrongly refused is still caught.
            "checks": {"positive_data_acceptance": {
                "expected-statuses": [*PositiveDataAcceptanceConfig().expected_statuses, "422"],
            }},
        }, {
            "include-operation-id": "slackInteraction",
            # Slack's `payload` is JSON inside a form field: the document says so (`contentMediaType`), but JSON
            # Schema cannot make a string's content valid, so schema-valid data is any JSON text, which is not a
            # Slack interaction and gets `400 invalid_payload`. Real clicks are proven in test_slack_interactions.
            "checks": {"positive_data_acceptance": {
                "expected-statuses": [*PositiveDataAcceptanceConfig().expected_statuses, "400"],
            }},
        }],
    })


@pytest.fixture
def api_schema(contract_app: Flask) -> BaseSchema:
    token = add_approver(contract_app.extensions["refund_service"].db, "maria", utcnow())
    loaded = schemathesis.openapi.from_wsgi("/openapi.json", contract_app, config=contract_config(token))

    @loaded.hook
    def map_case(context: schemathesis.HookContext, case: schemathesis.Case[Any]) -> schemathesis.Case[Any]:
        # Webhook deliveries are signed, unless the case is about a wrong or missing Stripe-Signature.
        if case.operation.path == "/stripe/webhook" and not (
            case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
        ):
            case.headers["Stripe-Signature"] = SIGN_ME
        # The same for Slack's clicks: signed, unless the case is about a wrong or missing signature header.
        if case.operation.path == "/slack/interactions" and not (
            case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
        ):
            case.headers["X-Slack-Signature"] = SIGN_ME
        return case

    return loaded


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32.5's `from_fixture` tests read `request.node._nodeid`, which pytest 9.2 renamed;
    # without this alias they fail with AttributeError before running anything.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture
def signed_api_schema(contract_app: Flask) -> BaseSchema:
    token = add_approver(contract_app.extensions["refund_service"].db, "maria", utcnow())
    return schemathesis.openapi.from_wsgi("/openapi.json", contract_app,
                                          config=contract_config(token, signed_intake=True))


schema = schemathesis.pytest.from_fixture("api_schema")
signed_schema = schemathesis.pytest.from_fixture("signed_api_schema")


@schema.parametrize()
def test_every_operation_answers_as_documented(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate()


@signed_schema.include(operation_id="requestRefund").parametrize()
def test_signed_intake_answers_as_documented(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate()


def test_sequences_that_follow_the_links_answer_as_documented(contract_app: Flask, api_schema: BaseSchema) -> None:
    class Workflows(api_schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # Each scenario starts from the same state, so that Hypothesis can replay and shrink it.
            start_afresh(contract_app)

    Workflows.run(settings=hypothesis.settings(
        max_examples=MAX_EXAMPLES, stateful_step_count=STATEFUL_STEPS, derandomize=True, database=None,
        deadline=None,
    ))


BUILT_IN_CHECKS = {
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
    "response_headers_conformance", "positive_data_acceptance", "negative_data_rejection", "missing_required_header",
    "ignored_auth", "object_level_authorization", "unsupported_method", "allow_header_conformance",
    "use_after_free", "ensure_resource_availability",
}


def test_every_schemathesis_check_is_on(api_schema: BaseSchema) -> None:
    load_all_checks()
    registered = set(CHECKS.get_all_names())
    assert registered >= BUILT_IN_CHECKS
    config: Any = api_schema.config.checks_config_for()
    assert {name for name in registered if not config.get_by_name(name=name).enabled} == set()
    assert config.max_response_time.enabled


# What schemathesis found once, pinned so that it stays fixed without depending on generation luck.
@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "named"),
    [
        # JSON Schema's "integer" includes 5.0; 5.5 stays refused.
        ("POST", "/refund-request", {"charge_id": "ch_small", "amount": 1000.0}, {}, 200, None),
        ("POST", "/refund-request", {"charge_id": "ch_small", "amount": 1000.5}, {}, 400, "amount"),
        ("POST", "/reject-refund", {"pending_id": 1.0}, {}, 200, None),
        # A path id beyond the documented maximum used to crash the database driver.
        ("GET", "/refunds/9223372036854775808", None, {}, 404, "9223372036854775808"),
        # The header pattern is documented now: visible ASCII, inner spaces allowed, no tabs.
        ("POST", "/refund-request", {"charge_id": "ch_small"}, {"Idempotency-Key": "ticket 42"}, 200, None),
        ("POST", "/refund-request", {"charge_id": "ch_small"}, {"Idempotency-Key": "a\tb"}, 400, "Idempotency-Key"),
        # Python's \s includes U+0085, JSON Schema's does not: the email pattern now spells it out.
        ("POST", "/refund-request", {"charge_id": "ch_small", "customer_email": "a\x85@b"}, {}, 400,
         "customer_email"),
        # PostgreSQL text cannot hold NUL: refused up front instead of a 500 there.
        ("POST", "/refund-request", {"charge_id": "ch_small", "note": "a\x00b"}, {}, 400, "note"),
        ("POST", "/refund-request", b"[" * 60_000, {}, 400, "JSON object"),
        # Signed by "Stripe" but not an event: a 400 naming the field, not a 500.
        ("POST", "/stripe/webhook", [None, None], {"Stripe-Signature": SIGN_ME}, 400, "Not a Stripe event"),
        ("POST", "/stripe/webhook", {"id": "evt_1", "type": "refund.updated", "created": 10**20,
                                     "data": {"object": {}}}, {"Stripe-Signature": SIGN_ME}, 400, "created"),
    ],
)
def test_what_schemathesis_found_stays_fixed(
    contract_app: Flask, approver_token_for_contract: str, method: str, path: str, body: Any,
    headers: dict[str, str], status: int, named: str | None,
) -> None:
    token = INTAKE_TOKEN if path == "/refund-request" else approver_token_for_contract
    data = body if isinstance(body, bytes) else None
    response = contract_app.test_client().open(
        path, method=method, data=data, json=None if data is not None or body is None else body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers},
    )
    assert response.status_code == status, response.get_json()
    if named is not None:
        assert named in response.get_json()["message"]


@pytest.fixture
def approver_token_for_contract(contract_app: Flask) -> str:
    return add_approver(contract_app.extensions["refund_service"].db, "ines", utcnow())


def test_every_reference_in_the_served_document_resolves(contract_app: Flask) -> None:
    document = contract_app.test_client().get("/openapi.json").get_json()

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    for ref in refs(document):
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, f"{ref} does not resolve"
            target = target[part]
