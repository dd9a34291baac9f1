"""Helpers for the JSON API tests: signed-in clients, JSON posts, and a snapshot of the rows
a refused request must leave alone."""

from datetime import timedelta

import pytest
from django.utils import timezone

from mailboxes.models import Mailbox, MailboxEvent
from tests.conftest import make_wave
from waves.models import Booking, BookingEvent, CohortMailbox, Wave, WaveEvent
from waves.services import booking_create


def signed_in(client, user):
    if user is not None:
        client.force_login(user)
    return client


def post_json(client, url: str, body: dict | None = None):
    return client.post(url, body or {}, content_type="application/json")


def snapshot() -> dict:
    """Every row the API can write, with its status: equal before and after a refusal."""
    return {
        "waves": list(Wave.objects.order_by("pk").values_list("pk", "status", "name")),
        "wave_events": WaveEvent.objects.count(),
        "bookings": list(
            Booking.objects.order_by("pk").values_list("pk", "status", "decision_reason")
        ),
        "booking_events": BookingEvent.objects.count(),
        "cohort": list(CohortMailbox.objects.order_by("pk").values_list("pk", "active")),
        "mailboxes": list(Mailbox.objects.order_by("pk").values_list("pk", "status")),
        "mailbox_events": MailboxEvent.objects.count(),
    }


def expire_deadline(wave: Wave) -> None:
    """The booking deadline passed an hour ago (the wave itself has not started)."""
    Wave.objects.filter(pk=wave.pk).update(booking_deadline=timezone.now() - timedelta(hours=1))
    wave.refresh_from_db()


@pytest.fixture
def alice_booking(wave, airedale, alice):
    """All of Airedale's mailboxes, booked by alice and waiting for a decision."""
    return booking_create(wave=wave, organisation=airedale, actor=alice)


@pytest.fixture
def bob_booking(wave, bradford, bob):
    return booking_create(wave=wave, organisation=bradford, actor=bob)


@pytest.fixture
def planned_wave(carol):
    return make_wave(carol, name="Weekend 1", open_=False, starts_in=timedelta(days=10))


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """The shared fixtures set real passwords; the API tests sign in with force_login."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
