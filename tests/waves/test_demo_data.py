"""The demo data: loaded through the real services, every state present, sign-ins that work."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.models import OrmQ

from mailboxes.models import (
    MAILBOX_IN_FLIGHT,
    Mailbox,
    MailboxStatus,
    Organisation,
    OrganisationType,
    RecipientType,
)
from portal.auth import Role, role_of
from waves.models import Booking, BookingStatus, Wave, WaveStatus

PASSWORD = "demo-password-1"
SIGN_INS = {
    "central": Role.CENTRAL_TEAM,
    "helpdesk": Role.HELPDESK,
    "lead": Role.IT_LEAD,
    "lead2": Role.IT_LEAD,
    "lead3": Role.IT_LEAD,
}

pytestmark = pytest.mark.django_db


def load_demo_data() -> str:
    out = StringIO()
    call_command("load_demo_data", "--mailboxes", "600", stdout=out)
    return out.getvalue()


@pytest.fixture
def demo(django_capture_on_commit_callbacks, settings) -> str:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast
    with django_capture_on_commit_callbacks(execute=True):
        return load_demo_data()


def test_it_creates_organisations_of_every_type(demo):
    organisations = Organisation.objects.all()
    assert 30 <= organisations.count() <= 50
    assert set(organisations.values_list("type", flat=True)) == set(OrganisationType.values)
    practices = organisations.filter(type=OrganisationType.GP_PRACTICE)
    assert not practices.filter(parent=None).exists()
    assert set(practices.values_list("parent__type", flat=True)) == {OrganisationType.ICB}
    assert not organisations.filter(mailboxes=None).exists()
    assert not organisations.filter(leads=None).exists()


def test_it_creates_the_mailboxes_asked_for(demo):
    mailboxes = Mailbox.objects.all()
    assert mailboxes.count() == 600
    assert {RecipientType.USER, RecipientType.SHARED} <= set(
        mailboxes.values_list("recipient_type", flat=True)
    )
    for mailbox in mailboxes.select_related("organisation"):
        assert mailbox.address == mailbox.address.lower()
        assert mailbox.address.endswith("@nhs.net")
        local = mailbox.address.removesuffix("@nhs.net")
        assert mailbox.upn == f"{local}@{mailbox.organisation.code.lower()}.nhs.uk"
        assert 0 < mailbox.size_bytes <= 215 * 1024**3
        assert mailbox.item_count > 0
    oversized = mailboxes.filter(size_bytes__gt=90 * 1024**3)
    assert sorted(oversized.values_list("organisation__code", "size_bytes")) == [
        ("RR8", 130 * 1024**3),
        ("RR8", 165 * 1024**3),
        ("RR8", 215 * 1024**3),
    ]
    sizes = {
        kind: sorted(o.mailboxes.count() for o in Organisation.objects.filter(type=kind))
        for kind in (OrganisationType.TRUST, OrganisationType.GP_PRACTICE)
    }
    assert sizes[OrganisationType.TRUST][-1] > 10 * sizes[OrganisationType.GP_PRACTICE][-1]


def test_it_makes_bookings_in_every_state(demo):
    assert set(Booking.objects.values_list("status", flat=True)) == set(BookingStatus.values)
    rejected = Booking.objects.filter(status=BookingStatus.REJECTED)
    assert all(booking.decision_reason for booking in rejected)


def test_it_makes_waves_in_every_state_but_paused_and_completing(demo):
    statuses = set(Wave.objects.values_list("status", flat=True))
    assert statuses == set(WaveStatus.values) - {WaveStatus.PAUSED, WaveStatus.COMPLETING}
    for wave in Wave.objects.all():
        assert wave.booking_deadline <= wave.starts_at < wave.cutover_at


def test_it_leaves_one_wave_running_with_its_bookings_in_progress(demo):
    running = Wave.objects.get(status=WaveStatus.RUNNING)
    now = timezone.now()
    assert running.starts_at < now < running.cutover_at
    assert running.booking_deadline < now
    bookings = running.bookings.all()
    assert bookings.count() >= 2
    assert {b.status for b in bookings} == {BookingStatus.IN_PROGRESS}
    assert running.batches.exists()
    in_wave = Mailbox.objects.filter(cohort_entries__booking__wave=running)
    assert in_wave.count() == sum(b.mailbox_count for b in bookings)
    assert set(in_wave.values_list("status", flat=True)) <= MAILBOX_IN_FLIGHT
    # The worker is asked to drive it on.
    names = {task.name() for task in OrmQ.objects.all()}
    assert f"drive-wave-{running.pk}" in names


def test_it_runs_the_pilot_to_the_end(demo):
    pilot = Wave.objects.get(status=WaveStatus.DONE)
    assert {b.status for b in pilot.bookings.all()} == {BookingStatus.DONE}
    statuses = set(
        Mailbox.objects.filter(cohort_entries__booking__wave=pilot).values_list("status", flat=True)
    )
    assert statuses <= {MailboxStatus.COMPLETED, MailboxStatus.FAILED}
    assert MailboxStatus.COMPLETED in statuses


def test_every_status_was_reached_through_a_recorded_transition(demo):
    for wave in Wave.objects.all():
        assert wave.events.last().to_status == wave.status
    for booking in Booking.objects.all():
        assert booking.events.last().to_status == booking.status
    moved = Mailbox.objects.exclude(status=MailboxStatus.NOT_SCHEDULED)
    assert moved.exists()
    for mailbox in moved:
        assert mailbox.events.last().to_status == mailbox.status


def test_the_sign_ins_work(demo, client):
    for username, role in SIGN_INS.items():
        assert client.login(username=username, password=PASSWORD), username
        assert role_of(get_user_model().objects.get(username=username)) == role
        client.logout()
    assert client.login(username="admin", password=PASSWORD)
    assert get_user_model().objects.get(username="admin").is_superuser
    for username in SIGN_INS:
        assert username in demo
    assert PASSWORD in demo


def test_lead_leads_a_large_trust_and_a_gp_practice(demo):
    lead = get_user_model().objects.get(username="lead")
    types = set(lead.led_organisations.values_list("type", flat=True))
    assert types == {OrganisationType.TRUST, OrganisationType.GP_PRACTICE}


def test_running_it_twice_changes_nothing(demo):
    counts = [model.objects.count() for model in (Organisation, Mailbox, Wave, Booking)]
    users = get_user_model().objects.count()

    out = load_demo_data()

    assert "Demo data already loaded" in out
    assert [model.objects.count() for model in (Organisation, Mailbox, Wave, Booking)] == counts
    assert get_user_model().objects.count() == users


def test_it_refuses_a_database_holding_other_data():
    Organisation.objects.create(code="RCF", name="Airedale", type=OrganisationType.TRUST)

    with pytest.raises(CommandError, match="empty database"):
        load_demo_data()

    assert not Mailbox.objects.exists()
