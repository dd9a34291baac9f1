"""The Exchange Online stand-in speaks the shapes the guide records, checked on the wire.

Plain HTTP requests here, no portal code: if these drift, the backend's tests against the
stand-in stop proving anything about the real service.
"""

import base64
import ctypes
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from standins.exchange_online import CLIENT_ID, CLIENT_SECRET, TENANT_ID, start_standin

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def standin():
    _, server = start_standin(page_size=2)
    yield server
    server.stop()


def token_for(server, secret=CLIENT_SECRET) -> requests.Response:
    return requests.post(
        f"{server.url}/{TENANT_ID}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": secret,
            "scope": "https://outlook.office365.com/.default",
        },
        verify=server.ca_file,
        timeout=10,
    )


def invoke(server, token, cmdlet, url=None, **parameters) -> requests.Response:
    return requests.post(
        url or f"{server.url}/adminapi/beta/{TENANT_ID}/InvokeCommand",
        json={"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}},
        headers={"Authorization": f"Bearer {token}"},
        verify=server.ca_file,
        timeout=10,
    )


def test_discovery_names_the_token_endpoint(standin):
    config = requests.get(
        f"{standin.url}/{TENANT_ID}/v2.0/.well-known/openid-configuration",
        verify=standin.ca_file,
        timeout=10,
    ).json()
    assert config["token_endpoint"] == f"{standin.url}/{TENANT_ID}/oauth2/v2.0/token"
    assert config["issuer"] == f"{standin.url}/{TENANT_ID}/v2.0"

    unknown = requests.get(
        f"{standin.url}/nope/v2.0/.well-known/openid-configuration",
        verify=standin.ca_file,
        timeout=10,
    )
    assert unknown.status_code == 400
    assert unknown.json()["error_codes"] == [90002]


def test_a_wrong_secret_gets_entras_error_body(standin):
    response = token_for(standin, secret="wrong")

    assert response.status_code == 401
    body = response.json()
    assert list(body) == [
        "error",
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
        "error_uri",
    ]
    assert body["error"] == "invalid_client"
    assert body["error_codes"] == [7000215]
    first, trace, correlation, timestamp = body["error_description"].split("\r\n")
    assert first.startswith("AADSTS7000215: Invalid client secret provided.")
    assert trace == f"Trace ID: {body['trace_id']}"
    assert correlation == f"Correlation ID: {body['correlation_id']}"
    assert timestamp == f"Timestamp: {body['timestamp']}"
    assert body["error_uri"] == "https://login.microsoftonline.com/error?code=7000215"


def test_invoke_command_pages_refuses_and_reports_like_exchange(standin):
    assert invoke(standin, "not-a-token", "Get-MigrationBatch").status_code == 401
    token = token_for(standin).json()["access_token"]

    csv = base64.b64encode(b"EmailAddress\r\na@x.nhs.net\r\nb@x.nhs.net\r\nc@x.nhs.net\r\n")
    created = invoke(
        standin,
        token,
        "New-MigrationBatch",
        Name="b1",
        CSVData=csv.decode(),
        SourceEndpoint=standin.standin.source_endpoint,
        TargetDeliveryDomain="x.mail.onmicrosoft.com",
    )
    assert created.status_code == 200
    assert created.json()["value"][0]["Status"] == "Created"

    first = invoke(standin, token, "Get-MigrationUser", BatchId="b1").json()
    assert [u["Identity"] for u in first["value"]] == ["a@x.nhs.net", "b@x.nhs.net"]
    second = invoke(standin, token, "Get-MigrationUser", url=first["@odata.nextLink"]).json()
    assert [u["Identity"] for u in second["value"]] == ["c@x.nhs.net"]
    assert "@odata.nextLink" not in second

    missing = invoke(standin, token, "Start-MigrationBatch", Identity="nope")
    error = missing.json()["error"]
    assert (error["code"], error["message"]) == ("NotFound", "Error executing cmdlet")
    error_id, exception, text = error["details"][0]["message"].split("|")
    assert error_id.startswith("Ex")
    assert exception.endswith("ManagementObjectNotFoundException")
    assert "'nope' couldn't be found" in text

    unknown = invoke(standin, token, "Set-Mailbox", Identity="a@x.nhs.net")
    assert (unknown.status_code, unknown.content) == (403, b"")


def test_it_runs_from_the_command_line_and_says_it_is_a_stand_in():
    process = subprocess.Popen(
        [sys.executable, "-m", "standins.exchange_online", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(14)]
    finally:
        process.terminate()
        process.wait(timeout=10)
    output = "".join(lines)
    assert "[stand-in Exchange Online] listening at https://127.0.0.1:" in output
    assert "PORTAL_MIGRATION_BACKEND=exchange_online" in output
    assert "PORTAL_EXCHANGE_CA_BUNDLE=" in output


def test_it_stops_on_sigterm_whichever_of_its_threads_the_kernel_hands_it_to():
    """Python runs signal handlers in the main thread only: a SIGTERM given to the server's
    thread once left the stand-in running for ever (and this module's first test timing out)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "tgkill"):
        pytest.skip("needs glibc's tgkill (Linux)")
    process = subprocess.Popen(
        [sys.executable, "-m", "standins.exchange_online", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        [process.stdout.readline() for _ in range(14)]
        time.sleep(0.3)  # past the line that sets the SIGTERM handler
        threads = [int(t) for t in os.listdir(f"/proc/{process.pid}/task")]
        server_thread = next(t for t in threads if t != process.pid)
        assert libc.tgkill(process.pid, server_thread, signal.SIGTERM) == 0

        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
        process.wait()


def test_it_prints_exactly_the_settings_a_portal_needs_to_drive_it(tmp_path):
    env_file = tmp_path / "standin.env"
    process = subprocess.Popen(
        [sys.executable, "-m", "standins.exchange_online", "--port", "0", "--env-file", env_file],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = []
        while not lines or "anchor calls to" not in lines[-1]:
            line = process.stdout.readline()
            assert line, f"the stand-in stopped: {''.join(lines)}"
            lines.append(line)
        settings = [line.strip() for line in lines if re.match(r"[A-Z_]+=", line)]
        printed = dict(shlex.split(line)[0].split("=", 1) for line in settings)
        assert list(printed) == [
            "PORTAL_MIGRATION_BACKEND",
            "PORTAL_EXCHANGE_TENANT_ID",
            "PORTAL_EXCHANGE_CLIENT_ID",
            "PORTAL_EXCHANGE_CLIENT_SECRET",
            "PORTAL_EXCHANGE_ORGANIZATION",
            "PORTAL_EXCHANGE_SOURCE_ENDPOINT",
            "PORTAL_EXCHANGE_TARGET_DELIVERY_DOMAIN",
            "PORTAL_EXCHANGE_AUTHORITY",
            "PORTAL_EXCHANGE_BASE_URL",
            "PORTAL_EXCHANGE_CA_BUNDLE",
        ]
        assert env_file.read_text() == "\n".join(settings) + "\n"
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"  # it holds the client secret

        # A portal given those settings, sourced as the README says, and nothing else of ours,
        # signs in and finds the migration endpoint.
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "DATABASE"))}
        check = (
            "from waves.backends import get_backend; b = get_backend(); "
            "print(b.check_sign_in()); print(b.check_endpoint())"
        )
        result = subprocess.run(
            ["bash", "-c", 'set -a; . "$1"; set +a; exec "$2" manage.py shell -c "$3"', "-"]
            + [str(env_file), sys.executable, check],
            cwd=ROOT,
            env=clean | {"PORTAL_SECRET_KEY": "x" * 50, "DATABASE_URL": "sqlite:///:memory:"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert f"A token for {printed['PORTAL_EXCHANGE_BASE_URL']} came from" in result.stdout
        assert (
            "'Hybrid Migration Endpoint - EWS (Default Web Site)' answers: ExchangeRemoteMove"
            in result.stdout
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert not Path(printed["PORTAL_EXCHANGE_CA_BUNDLE"]).exists()  # cleaned up on SIGTERM


def test_grades_approvals_endpoints_and_recipients_on_the_wire():
    _, server = start_standin(
        time_scale=10000.0,
        consistency={"b@x.nhs.net": "Investigate"},
        absent_recipients=["gone@x.nhs.net"],
    )
    try:
        token = token_for(server).json()["access_token"]
        csv = base64.b64encode(b"EmailAddress\r\na@x.nhs.net\r\nb@x.nhs.net\r\n").decode()
        invoke(
            server,
            token,
            "New-MigrationBatch",
            Name="b1",
            CSVData=csv,
            SourceEndpoint=server.standin.source_endpoint,
            TargetDeliveryDomain="x.mail.onmicrosoft.com",
        )
        invoke(server, token, "Start-MigrationBatch", Identity="b1")
        invoke(server, token, "Complete-MigrationBatch", Identity="b1")
        deadline = time.monotonic() + 10
        while True:
            users = invoke(server, token, "Get-MigrationUser", BatchId="b1").json()["value"]
            rows = {u["Identity"]: (u["Status"], u["DataConsistencyScore"]) for u in users}
            if rows["a@x.nhs.net"][0] == "Completed" or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert rows == {
            "a@x.nhs.net": ("Completed", "Perfect"),
            "b@x.nhs.net": ("Synced", "Investigate"),  # held for approval
        }

        approved = invoke(
            server, token, "Set-MigrationUser", Identity="b@x.nhs.net", ApproveSkippedItems=True
        )
        assert (approved.status_code, approved.json()["value"]) == (200, [])
        time.sleep(0.1)
        user = invoke(server, token, "Get-MigrationUser", Identity="b@x.nhs.net").json()
        assert user["value"][0]["Status"] == "Completed"
        wrong = invoke(server, token, "Set-MigrationUser", Identity="b@x.nhs.net", SyncNow=True)
        assert (
            "A parameter cannot be found that matches parameter name 'SyncNow'"
            in (wrong.json()["error"]["details"][0]["message"])
        )

        endpoint = invoke(server, token, "Get-MigrationEndpoint").json()["value"]
        assert [e["Identity"] for e in endpoint] == [server.standin.source_endpoint]
        assert invoke(server, token, "Get-MigrationEndpoint", Identity="x").status_code == 404

        found = invoke(
            server,
            token,
            "Get-Recipient",
            Filter="(EmailAddresses -eq 'smtp:a@x.nhs.net') -or (EmailAddresses -eq "
            "'smtp:gone@x.nhs.net') -or (EmailAddresses -eq 'smtp:new@x.nhs.net')",
        ).json()["value"]
        assert [(r["PrimarySmtpAddress"], r["RecipientTypeDetails"]) for r in found] == [
            ("a@x.nhs.net", "UserMailbox"),  # moved
            ("new@x.nhs.net", "MailUser"),
        ]
        assert invoke(server, token, "Get-Recipient", Filter="Name -like '*'").status_code == 400
    finally:
        server.stop()
