"""The Exchange Online stand-in speaks the shapes the guide records, checked on the wire.

Plain HTTP requests here, no portal code: if these drift, the backend's tests against the
stand-in stop proving anything about the real service.
"""

import base64
import subprocess
import sys
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
