"""Configuration comes from the environment; bad values stop start-up and name the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "PORTAL_SECRET_KEY": "a-long-random-production-secret-" + "x" * 40,
    "PORTAL_ALLOWED_HOSTS": "portal.example.nhs.uk",
    "DATABASE_URL": "sqlite:///:memory:",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    # A fresh process, as on a server: nothing from this test run's own environment.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "DJANGO_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deployment_checklist():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PORTAL_SECRET_KEY", "", "PORTAL_SECRET_KEY: not set"),
        ("PORTAL_DEBUG", "maybe", "PORTAL_DEBUG: expected true or false, got 'maybe'"),
        ("PORTAL_Q_WORKERS", "lots", "PORTAL_Q_WORKERS: expected a whole number, got 'lots'"),
        ("PORTAL_Q_WORKERS", "0", "PORTAL_Q_WORKERS: must be at least 1, got 0"),
        (
            "PORTAL_SIMULATOR_FAILURE_RATE",
            "1.5",
            "PORTAL_SIMULATOR_FAILURE_RATE: must be between 0.0 and 1.0",
        ),
        ("PORTAL_MIGRATION_BACKEND", "carrier-pigeon", "PORTAL_MIGRATION_BACKEND: expected one of"),
        ("PORTAL_Q_TIMEOUT", "900", "PORTAL_Q_TIMEOUT: must be below PORTAL_Q_RETRY"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(variable, value, message):
    result = manage("check", **{**PRODUCTION, variable: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_email_links_point_at_the_first_allowed_host_unless_told_otherwise():
    def portal_url(**env: str) -> str:
        code = "from django.conf import settings; print(settings.PORTAL_URL)"
        result = manage("shell", "--no-imports", "-c", code, **{**PRODUCTION, **env})
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    assert portal_url() == "https://portal.example.nhs.uk"
    assert portal_url(PORTAL_URL="https://migration.nhs.uk/") == "https://migration.nhs.uk"


def test_a_secret_can_come_from_a_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file-" + "y" * 50 + "\n")
    env = {k: v for k, v in PRODUCTION.items() if k != "PORTAL_SECRET_KEY"}
    assert manage("check", PORTAL_SECRET_KEY_FILE=str(secret), **env).returncode == 0
    missing = manage("check", PORTAL_SECRET_KEY_FILE=str(tmp_path / "nope"), **env)
    assert "PORTAL_SECRET_KEY_FILE: cannot read" in missing.stderr


def test_responses_carry_security_headers(client, db, settings):
    settings.SECURE_SSL_REDIRECT = False
    response = client.get("/sign-in/")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "csrfmiddlewaretoken" in response.content.decode()
