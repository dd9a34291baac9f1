"""The central team approves every booking waiting for one wave at once, from the booking queue."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django_q.models import OrmQ

from mailboxes.models import MailboxEvent, MailboxStatus
from tests.conftest import make_organisation, make_user, make_wave, start_wave_now
from waves.models import BookingEvent, BookingStatus
from waves.services import booking_approve, booking_create, booking_reject, wave_close

S = MailboxStatus


@pytest.fixture
def two_waves(carol, alice, airedale, bob, bradford, wave):
    """Airedale (30) and Bradford (12) wait for Weeknight 1; Calderdale (5) for Weeknight 2."""
    other = make_wave(carol, name="Weeknight 2", starts_in=timedelta(days=4))
    calderdale = make_organisation("RWY", "Calderdale", lead=make_user("cara"), mailboxes=5)
    return {
        "first": [
            booking_create(wave=wave, organisation=airedale, actor=alice),
            booking_create(wave=wave, organisation=bradford, actor=bob),
        ],
        "second": booking_create(wave=other, organisation=calderdale, actor=carol),
        "other": other,
    }


def approve_all(client, wave):
    return client.post(reverse("waves:approve_bookings", args=[wave.public_id]), follow=True)


def test_approving_all_of_one_wave_schedules_its_mailboxes_and_leaves_the_others(
    client, carol, wave, two_waves, django_capture_on_commit_callbacks
):
    client.force_login(carol)
    queue = client.get(reverse("waves:booking_queue")).content.decode()
    assert "Approve all 2<span" in queue and "Approve all 1<span" in queue

    with django_capture_on_commit_callbacks(execute=True):
        page = approve_all(client, wave).content.decode()

    assert "Approved 2 bookings for Weeknight 1: 42 mailboxes scheduled." in page
    for booking in two_waves["first"]:
        booking.refresh_from_db()
        assert booking.status == BookingStatus.APPROVED
        assert set(booking.organisation.mailboxes.values_list("status", flat=True)) == {S.SCHEDULED}
    assert BookingEvent.objects.filter(to_status=BookingStatus.APPROVED).count() == 2
    assert (
        MailboxEvent.objects.filter(
            to_status=S.SCHEDULED, reason="Booking approved for Weeknight 1", actor=carol
        ).count()
        == 42
    )
    two_waves["second"].refresh_from_db()
    assert two_waves["second"].status == BookingStatus.SUBMITTED
    assert "Approve all 1<span" in page and "Approve all 2<span" not in page
    emails = [t.task for t in OrmQ.objects.all() if t.task["func"] == "waves.tasks.email_booking"]
    assert sorted(args for args in (t["args"] for t in emails)) == sorted(
        (booking.pk, BookingStatus.APPROVED) for booking in two_waves["first"]
    )


def test_a_wave_already_running_is_refused(client, carol, wave, two_waves):
    """A queue page opened before the start, its button pressed after: refused, with why."""
    airedale_booking, bradford_booking = two_waves["first"]
    booking_approve(booking=airedale_booking, actor=carol)
    booking_reject(booking=bradford_booking, actor=carol, reason="Not this wave")
    wave_close(wave=wave, actor=carol)
    started = start_wave_now(wave, carol, cutover_in=timedelta(hours=1))
    events = BookingEvent.objects.count()
    client.force_login(carol)

    page = approve_all(client, started).content.decode()

    assert "Weeknight 1 is running: bookings can no longer be approved." in page
    assert BookingEvent.objects.count() == events


def test_a_wave_with_nothing_waiting_says_so(client, carol, two_waves):
    client.force_login(carol)
    approve_all(client, two_waves["other"])

    page = approve_all(client, two_waves["other"]).content.decode()

    assert "No booking of Weeknight 2 is waiting for a decision." in page


@pytest.mark.parametrize("person", ["alice", "dave", "eve"])
def test_only_the_central_team_approves(client, request, person, wave, two_waves):
    client.force_login(request.getfixturevalue(person))

    response = client.post(reverse("waves:approve_bookings", args=[wave.public_id]))

    assert response.status_code == 403
    assert not BookingEvent.objects.filter(to_status=BookingStatus.APPROVED).exists()


def test_a_get_changes_nothing(client, carol, wave, two_waves):
    client.force_login(carol)

    assert client.get(reverse("waves:approve_bookings", args=[wave.public_id])).status_code == 405
