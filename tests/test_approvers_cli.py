"""`flask --app app approvers add | set | list`: roles, limits and the Slack user whose clicks count."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from refunds import approvers
from refunds.money import Money
from tests.fakes import FakeGateway


def invoke(app: Flask, *args: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["approvers", *args])
    return result.exit_code, result.output


def test_add_takes_a_role_a_limit_and_a_slack_user(app: Flask) -> None:
    code, output = invoke(app, "add", "li", "--role", "admin", "--limit", "500.00:usd", "--slack-user", "U024BE7LH")

    assert code == 0, output
    token = output.strip().splitlines()[-1]
    found = approvers.authenticate(app.extensions["refund_service"].db, token)
    assert found is not None
    assert (found.name, found.role, found.limits, found.slack_user_id) == (
        "li", "admin", (Money(50000, "usd"),), "U024BE7LH")


def test_add_without_options_makes_an_approver_with_no_limit(app: Flask) -> None:
    assert invoke(app, "add", "maria")[0] == 0
    [maria] = approvers.list_all(app.extensions["refund_service"].db)
    assert (maria.role, maria.limits, maria.slack_user_id) == ("approver", (), None)


def test_set_changes_the_limit_role_and_slack_user_and_keeps_the_token(app: Flask) -> None:
    _, output = invoke(app, "add", "maria", "--limit", "1.00:usd")
    token = output.strip().splitlines()[-1]

    code, output = invoke(app, "set", "maria", "--limit", "750.00:usd", "--role", "admin", "--slack-user", "U061F7AUR")
    assert code == 0, output
    assert "admin, limit 750.00 USD, slack U061F7AUR" in output
    code, output = invoke(app, "set", "maria", "--no-limit")
    assert code == 0, output

    found = approvers.authenticate(app.extensions["refund_service"].db, token)
    assert found is not None
    assert (found.role, found.limits, found.slack_user_id) == ("admin", (), "U061F7AUR")
    assert approvers.by_slack_user(app.extensions["refund_service"].db, "U061F7AUR") == found


def test_list_shows_each_approvers_role_limit_and_slack_user(app: Flask) -> None:
    invoke(app, "add", "li", "--limit", "50.00:usd", "--slack-user", "U024BE7LH")
    invoke(app, "add", "old")
    invoke(app, "revoke", "old")

    code, output = invoke(app, "list")

    assert code == 0
    li, old = output.strip().splitlines()
    assert li.startswith("li\tactive\t") and li.endswith("approver, limit 50.00 USD, slack U024BE7LH")
    assert old.startswith("old\trevoked ")


def test_a_slack_user_linked_to_someone_else_is_refused_by_name(app: Flask) -> None:
    invoke(app, "add", "li", "--slack-user", "U024BE7LH")
    invoke(app, "add", "maria")

    for args in (["add", "ana", "--slack-user", "U024BE7LH"], ["set", "maria", "--slack-user", "U024BE7LH"]):
        code, output = invoke(app, *args)
        assert code != 0
        assert "U024BE7LH is already linked to another approver" in output


def test_wrong_options_are_refused_with_a_reason_and_change_nothing(app: Flask) -> None:
    invoke(app, "add", "maria", "--limit", "1.00:usd")
    for args, reason in [
        (["add", "li", "--slack-user", "li@example.com"], "Slack member id"),
        (["add", "li", "--limit", "-1"], "--limit"),
        (["add", "li", "--role", "owner"], "--role"),
        (["set", "maria", "--limit", "0.05:usd", "--no-limit"], "not both"),
        (["set", "maria"], "nothing to change"),
        (["set", "nobody", "--limit", "0.05:usd"], "No active approver named 'nobody'"),
    ]:
        code, output = invoke(app, *args)
        assert code != 0, args
        assert reason in output, (args, output)
    [maria] = approvers.list_all(app.extensions["refund_service"].db)
    assert maria.limits == (Money(100, "usd"),)


def test_cli_approval_follows_the_rules_and_audit_shows_every_step_with_its_channel(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    invoke(app, "add", "maria", "--limit", "100.00:usd")
    invoke(app, "add", "li")
    pending = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000},
                          headers=intake_headers).get_json()
    runner = app.test_cli_runner()
    over = runner.invoke(args=["approve", str(pending["pending_id"]), "--as", "maria"])
    assert over.exit_code != 0 and "over maria's approval limit" in over.output
    assert gateway.calls == []
    done = runner.invoke(args=["approve", str(pending["pending_id"]), "--as", "li"])
    assert done.exit_code == 0, done.output
    assert f"approved: refund {gateway.refunds[0].refund_id}" in done.output

    audit = runner.invoke(args=["audit", str(pending["request_id"])])
    assert audit.exit_code == 0, audit.output
    lines = audit.output.splitlines()
    assert "120.00 USD" in lines[0] and "succeeded" in lines[0]
    steps = [line.split()[1:4] for line in lines[1:]]
    assert steps[0] == ["requested", "intake", "api"]
    assert ["approved", "li", "cli"] in steps
    assert steps[-1][0] == "refunded"


def test_cli_rejection_needs_an_approver_and_keeps_the_note(
    app: Flask, client: FlaskClient, intake_headers: dict[str, str], gateway: FakeGateway
) -> None:
    pending = client.post("/refund-request", json={"charge_id": "ch_big", "amount": 12000},
                          headers=intake_headers).get_json()
    runner = app.test_cli_runner()
    stranger = runner.invoke(args=["reject", str(pending["pending_id"]), "--as", "nobody"])
    assert stranger.exit_code != 0 and "not an active approver" in stranger.output
    invoke(app, "add", "li")
    done = runner.invoke(args=["reject", str(pending["pending_id"]), "--as", "li", "--note", "too late"])
    assert done.exit_code == 0, done.output
    audit = runner.invoke(args=["audit", str(pending["request_id"])]).output
    assert "rejected" in audit and "too late" in audit and "cli" in audit
    assert gateway.calls == []
