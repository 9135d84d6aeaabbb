"""`turnlog credits`: operators' requests on the embedded log are decided and printed; mistakes are one clear line.

(On Kafka the fleet's governance role answers them: tests/turnlog/test_governance_on_kafka.py.)"""

import fcntl
import json
import os
from pathlib import Path

import pytest

from turnlog import cli

TIERS = """
[tiers.free]
start_balance = 100
monthly_refill = 100
reservation_units = 5
"""


@pytest.fixture(autouse=True)
def no_turnlog_environment(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("TURNLOG_"):
            monkeypatch.delenv(name)


@pytest.fixture
def tiers(tmp_path: Path) -> Path:
    path = tmp_path / "tiers.toml"
    path.write_text(TIERS)
    return path


def credits(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["credits", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_operators_grant_suspend_and_reinstate_on_a_stopped_embedded_server(tmp_path, tiers, capsys) -> None:
    common = ("--org-id", "org_acme", "--data-dir", str(tmp_path / "data"), "--tiers", str(tiers), "--by", "op_kim")
    code, out, err = credits(capsys, "grant", *common, "--units", "50", "--reason", "invoice 17")
    assert (code, err) == (0, "")
    grant = json.loads(out)
    assert (grant["fact"], grant["units"], grant["by"], grant["user_id"]) == ("CreditsGranted", 50, "op_kim", None)
    assert grant["balance"] == 150  # the tier's start balance, granted on first sight, and these 50

    code, out, _ = credits(capsys, "grant", *common, "--user-id", "user_ana", "--units=-20", "--reason", "correction")
    assert code == 0 and (json.loads(out)["units"], json.loads(out)["balance"]) == (-20, -20)
    code, out, _ = credits(capsys, "suspend", *common, "--user-id", "user_ana", "--for-s", "600", "--reason", "chargeback")
    assert code == 0 and json.loads(out)["fact"] == "UserSuspended"
    code, out, _ = credits(capsys, "reinstate", *common, "--user-id", "user_ana")
    assert code == 0 and json.loads(out)["fact"] == "UserReinstated"
    code, out, _ = credits(capsys, "budget", *common, "--monthly-tokens", "tier")
    assert code == 0 and json.loads(out)["monthly_tokens"] is None
    code, out, _ = credits(capsys, "refill", *common, "--units", "250")
    assert code == 0 and (json.loads(out)["fact"], json.loads(out)["units"]) == ("RefillScheduled", 250)


def test_the_embedded_log_needs_the_servers_tiers_file(tmp_path, capsys) -> None:
    code, out, err = credits(capsys, "grant", "--org-id", "org_a", "--units", "5", "--reason", "r", "--data-dir", str(tmp_path))
    assert (code, out) == (1, "")
    assert "give it the server's tiers file (--tiers or TURNLOG_TIERS)" in err


def test_a_running_embedded_server_is_pointed_to_the_admin_api(tmp_path, tiers, capsys) -> None:
    (tmp_path / "data").mkdir()
    lock = os.open(tmp_path / "data" / "log.db.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # what a running server holds
    try:
        code, _, err = credits(
            capsys, "grant", "--org-id", "org_a", "--units", "5", "--reason", "r", "--data-dir", str(tmp_path / "data"),
            "--tiers", str(tiers),
        )
    finally:
        os.close(lock)
    assert code == 1 and "a server is running on" in err and "/v1/admin/" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("suspend", "--user-id", "u", "--reason", "r"), "give either --until or --for-s"),
        (("suspend", "--user-id", "u", "--reason", "r", "--until", "2001-01-01T00:00:00Z"), "has passed"),
        (("suspend", "--user-id", "u", "--reason", "r", "--until", "tomorrow"), "--until must be an ISO 8601 instant"),
    ],
)
def test_a_suspension_needs_an_end_in_the_future(tmp_path, argv, expected, capsys) -> None:
    code, out, err = credits(capsys, *argv, "--org-id", "org_a", "--data-dir", str(tmp_path))
    assert (code, out) == (2, "") and expected in err


def test_a_bad_value_is_one_line_naming_the_option(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["credits", "grant", "--org-id", "org_a", "--units", "0", "--reason", "r"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().endswith("argument --units: must be a non-zero integer, got '0'")


def test_a_tiers_file_with_an_error_stops_serve_naming_its_line(tmp_path, capsys) -> None:
    bad = tmp_path / "tiers.toml"
    bad.write_text('[tiers.free]\nstart_balance = 10\n\n[tiers.free.user]\nrequests_per_minute = "many"\n')
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--engine", "scripted", "--data-dir", str(tmp_path / "data"), "--tiers", str(bad)])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        f'turnlog serve: error: {bad}:5: tiers.free.user.requests_per_minute: must be an integer >= 1, got "many"\n'
    )

