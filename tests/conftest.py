"""Shared people and places for the tests.

alice leads Airedale NHS Foundation Trust (RCF); bob leads Bradford practice (B83001); carol is
in the central migration team; dave is on the helpdesk; eve has signed in but has no role.
"""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from mailboxes.models import Mailbox, Organisation, OrganisationType, RecipientType
from portal.auth import Role, grant_role
from waves.models import Wave, WaveKind
from waves.services import wave_create, wave_open

GB = 1024**3
PASSWORD = "correct horse battery staple"


def make_user(username: str, role: Role | None = None):
    user = get_user_model().objects.create_user(
        username, password=PASSWORD, first_name=username.capitalize()
    )
    if role:
        grant_role(user, role)
    return user


def make_mailboxes(
    organisation: Organisation, count: int, *, size_bytes: int = GB // 2
) -> list[Mailbox]:
    domain = organisation.code.lower()
    return Mailbox.objects.bulk_create(
        [
            Mailbox(
                address=f"user{i:05d}@{domain}.nhs.net",
                upn=f"user{i:05d}@{domain}.nhs.uk",
                display_name=f"User {i:05d} {organisation.code}",
                recipient_type=RecipientType.SHARED if i % 10 == 9 else RecipientType.USER,
                size_bytes=size_bytes,
                item_count=1000,
                organisation=organisation,
            )
            for i in range(count)
        ]
    )


def make_wave(
    actor,
    *,
    name="Weeknight 1",
    capacity_mailboxes=1000,
    capacity_gb=1000,
    open_=True,
    starts_in=timedelta(days=3),
    **overrides,
) -> Wave:
    starts = timezone.now() + starts_in
    wave = wave_create(
        name=name,
        kind=overrides.get("kind", WaveKind.WEEKNIGHT),
        starts_at=overrides.get("starts_at", starts),
        cutover_at=overrides.get("cutover_at", starts + timedelta(hours=12)),
        booking_deadline=overrides.get("booking_deadline", starts - timedelta(days=1)),
        capacity_mailboxes=capacity_mailboxes,
        capacity_gb=capacity_gb,
        actor=actor,
    )
    if open_:
        wave_open(wave=wave, actor=actor)
    return wave


@pytest.fixture(autouse=True)
def plain_static_files(settings):
    """Tests render templates without running collectstatic first, so no manifest is needed."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def alice(db):
    return make_user("alice", Role.IT_LEAD)


@pytest.fixture
def bob(db):
    return make_user("bob", Role.IT_LEAD)


@pytest.fixture
def carol(db):
    return make_user("carol", Role.CENTRAL_TEAM)


@pytest.fixture
def dave(db):
    return make_user("dave", Role.HELPDESK)


@pytest.fixture
def eve(db):
    return make_user("eve")


@pytest.fixture
def airedale(alice):
    org = Organisation.objects.create(
        code="RCF",
        name="Airedale NHS Foundation Trust",
        type=OrganisationType.TRUST,
        region="North East and Yorkshire",
    )
    org.leads.add(alice)
    make_mailboxes(org, 30)
    return org


@pytest.fixture
def bradford(bob):
    org = Organisation.objects.create(
        code="B83001",
        name="Bradford Road Practice",
        type=OrganisationType.GP_PRACTICE,
        region="North East and Yorkshire",
    )
    org.leads.add(bob)
    make_mailboxes(org, 12)
    return org


@pytest.fixture
def wave(carol):
    return make_wave(carol)


def client_for(client, user):
    client.force_login(user)
    return client
