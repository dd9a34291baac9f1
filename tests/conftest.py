"""Shared people and places for the tests.

alice leads Airedale NHS Foundation Trust (RCF); bob leads Bradford practice (B83001); carol is
in the central migration team; dave is on the helpdesk; eve has signed in but has no role.
"""

import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from mailboxes.models import (
    MAILBOX_TRANSITIONS,
    Mailbox,
    MailboxEvent,
    MailboxStatus,
    Organisation,
    OrganisationType,
    RecipientType,
)
from portal.auth import Role, grant_role
from waves.models import CohortMailbox, Wave, WaveKind
from waves.services import (
    booking_approve,
    booking_create,
    wave_close,
    wave_create,
    wave_open,
    wave_start,
)

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


def make_organisation(
    code: str,
    name: str,
    *,
    lead=None,
    mailboxes: int = 0,
    type_: OrganisationType = OrganisationType.TRUST,
    size_bytes: int = GB // 2,
) -> Organisation:
    organisation = Organisation.objects.create(
        code=code, name=name, type=type_, region="North East and Yorkshire"
    )
    if lead is not None:
        organisation.leads.add(lead)
    if mailboxes:
        make_mailboxes(organisation, mailboxes, size_bytes=size_bytes)
    return organisation


def make_approved_wave(central, cohorts: Iterable[tuple[Organisation, object]], **options) -> Wave:
    """A wave closed for booking, holding each (organisation, lead) cohort booked and approved."""
    wave = make_wave(central, **options)
    for organisation, lead in cohorts:
        booking = booking_create(wave=wave, organisation=organisation, actor=lead)
        booking_approve(booking=booking, actor=central)
    wave_close(wave=wave, actor=central)
    return wave


def start_wave_now(wave: Wave, actor, *, cutover_in: timedelta) -> Wave:
    """Start the wave now, its dates brought forward as if the day had come.

    The deadline passed two hours ago, the final sync began an hour ago, and cutover is
    `cutover_in` from now (negative: already past).
    """
    now = timezone.now()
    Wave.objects.filter(pk=wave.pk).update(
        booking_deadline=now - timedelta(hours=2),
        starts_at=now - timedelta(hours=1),
        cutover_at=now + cutover_in,
    )
    wave.refresh_from_db()
    wave_start(wave=wave, actor=actor)
    return wave


def mailbox_histories(mailbox_ids: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
    """Each mailbox's timeline as (from, to) pairs, in the order they were written."""
    histories: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for mailbox_id, from_status, to_status in (
        MailboxEvent.objects.filter(mailbox_id__in=list(mailbox_ids))
        .order_by("id")
        .values_list("mailbox_id", "from_status", "to_status")
    ):
        histories[mailbox_id].append((from_status, to_status))
    return histories


def assert_migration_histories(mailbox_ids: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
    """Each mailbox went booked, scheduled, queued once, then on by legal steps to an end.

    The timeline is unbroken (each step starts where the last one ended, so no step is written
    twice), every step is one the rules allow, and the last step is the mailbox's status now:
    completed, or failed (needs attention).
    """
    S = MailboxStatus
    mailbox_ids = list(mailbox_ids)
    histories = mailbox_histories(mailbox_ids)
    current = dict(Mailbox.objects.filter(pk__in=mailbox_ids).values_list("pk", "status"))
    for pk in mailbox_ids:
        path = histories[pk]
        assert path[:3] == [
            (S.NOT_SCHEDULED, S.BOOKED),
            (S.BOOKED, S.SCHEDULED),
            (S.SCHEDULED, S.QUEUED),
        ], f"mailbox {pk}: {path}"
        assert path.count((S.SCHEDULED, S.QUEUED)) == 1, f"mailbox {pk}: {path}"
        for (_, previous_to), step in zip(path, path[1:], strict=False):
            assert step[0] == previous_to, f"mailbox {pk} broken timeline: {path}"
        for from_status, to_status in path:
            assert from_status in MAILBOX_TRANSITIONS[to_status], f"mailbox {pk}: {path}"
        assert path[-1][1] == current[pk], f"mailbox {pk}: {path}, now {current[pk]}"
        assert current[pk] in {S.COMPLETED, S.FAILED}, f"mailbox {pk}: {path}"
    copies = dict(
        CohortMailbox.objects.filter(mailbox_id__in=mailbox_ids, active=True).values_list(
            "mailbox_id", "mailbox_status"
        )
    )
    assert copies == current, "the cohort rows' copy of the status disagrees with the mailboxes"
    return histories


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, request):
    """On SQLite, keep the test database in a file when the session runs a `worker` test.

    The default in-memory test database cannot be shared with the `qcluster` subprocess that
    those tests start; a file in WAL mode can, as in the embedded deployment. The file goes in
    /dev/shm where there is one (memory-backed, so the other tests run as fast as in memory).
    Sessions without worker tests keep the in-memory database.
    """
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3" or not any(
        item.get_closest_marker("worker") for item in request.session.items
    ):
        yield
        return
    shm = Path("/dev/shm")  # noqa: S108 - mkdtemp makes a private folder in it
    folder = Path(tempfile.mkdtemp(prefix="portal-tests-", dir=shm if shm.is_dir() else None))
    database.setdefault("TEST", {})["NAME"] = str(folder / "test_portal.sqlite3")
    yield
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Everyone here has the same password; hashing it the slow, safe way only costs time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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
