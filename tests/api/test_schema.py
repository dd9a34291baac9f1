"""The OpenAPI schema: generated without warnings, and describing every endpoint."""

import yaml
from django.core.management import call_command

from tests.api.conftest import signed_in

PATHS = {
    "/api/organisations/": {"get"},
    "/api/organisations/{code}/": {"get"},
    "/api/mailboxes/": {"get"},
    "/api/mailboxes/{mailbox_id}/": {"get"},
    "/api/lookup/": {"get"},
    "/api/programme/": {"get"},
    "/api/imports/": {"post"},
    "/api/imports/{id}/": {"get"},
    "/api/waves/": {"get", "post"},
    "/api/waves/{public_id}/": {"get"},
    **{
        f"/api/waves/{{public_id}}/{action}/": {"post"}
        for action in ["open", "close", "start", "pause", "resume", "cancel"]
    },
    "/api/bookings/": {"get", "post"},
    "/api/bookings/{public_id}/": {"get"},
    **{
        f"/api/bookings/{{public_id}}/{action}/": {"post"}
        for action in ["approve", "reject", "withdraw"]
    },
}


def test_the_schema_generates_and_validates_without_warnings(tmp_path):
    path = tmp_path / "schema.yml"
    # --fail-on-warn turns any drf-spectacular warning or error into a failure.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    schema = yaml.safe_load(path.read_text())
    assert {p: set(ops) - {"parameters"} for p, ops in schema["paths"].items()} == PATHS


def test_the_schema_names_one_enum_per_status(tmp_path):
    path = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(path))
    components = yaml.safe_load(path.read_text())["components"]["schemas"]
    for name in ["MailboxStatus", "WaveStatus", "BookingStatus", "WaveKind", "RecipientType"]:
        assert "enum" in components[name], name


def test_the_schema_is_served_at_api_schema(client, eve):
    response = signed_in(client, eve).get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert "/api/bookings/" in response.json()["paths"]
