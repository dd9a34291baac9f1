"""Many leads booking at the same moment, each in their own thread and database connection.

Only PostgreSQL runs these: they rely on its row locks (`SELECT ... FOR UPDATE` on the wave)
and on many connections writing at once, which the in-memory SQLite test database cannot do.
"""

import threading

import pytest
from django.db import connection

from mailboxes.models import Mailbox, MailboxEvent, MailboxStatus
from tests.conftest import make_organisation, make_user, make_wave
from waves.models import Booking, BookingEvent, BookingStatus, CohortMailbox
from waves.services import BookingRefused, booking_create, wave_capacity_used

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="Concurrent booking needs PostgreSQL (row locks, many connections); "
        "set DATABASE_URL=postgres://... to run it.",
    ),
    pytest.mark.django_db(transaction=True),
]

S = MailboxStatus
LOSER_MESSAGES = (
    "Some of these mailboxes were booked by someone else a moment ago. Try again.",
    "Some of these mailboxes changed status while booking. Try again.",
)


def run_together(calls: list) -> list:
    """Run each call in its own thread, released at the same instant; return what each gave.

    A call's result is its return value or the exception it raised. Each thread closes its
    own database connection when done.
    """
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        try:
            barrier.wait(timeout=30)
            results[i] = call()
        except Exception as error:  # noqa: BLE001 - reported by the test's assertions
            results[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a booking thread hung"
    return results


def assert_booked_whole(booking: Booking, organisation, count: int) -> None:
    booking.refresh_from_db()
    assert booking.status == BookingStatus.SUBMITTED
    assert booking.mailbox_count == count
    cohort = CohortMailbox.objects.filter(booking=booking, active=True)
    assert cohort.count() == count
    assert set(cohort.values_list("mailbox__organisation", flat=True)) == {organisation.pk}
    assert set(organisation.mailboxes.values_list("status", flat=True)) == {S.BOOKED}
    events = MailboxEvent.objects.filter(mailbox__organisation=organisation)
    assert events.count() == count
    assert set(events.values_list("from_status", "to_status")) == {(S.NOT_SCHEDULED, S.BOOKED)}
    assert BookingEvent.objects.filter(booking=booking).count() == 1


def assert_untouched(organisation) -> None:
    assert set(organisation.mailboxes.values_list("status", flat=True)) == {S.NOT_SCHEDULED}
    assert not MailboxEvent.objects.filter(mailbox__organisation=organisation).exists()
    assert not CohortMailbox.objects.filter(mailbox__organisation=organisation).exists()
    assert not Booking.objects.filter(organisation=organisation).exists()


def test_leads_booking_at_once_never_overfill_the_wave_and_lose_no_booking(carol):
    wave = make_wave(carol, name="Concurrent 1", capacity_mailboxes=1000, capacity_gb=10_000)
    cohorts = []
    for i in range(8):
        lead = make_user(f"lead{i}")
        organisation = make_organisation(f"C{i:04d}", f"Practice {i}", lead=lead, mailboxes=300)
        cohorts.append((organisation, lead))

    results = run_together(
        [
            lambda o=organisation, lead=lead: booking_create(wave=wave, organisation=o, actor=lead)
            for organisation, lead in cohorts
        ]
    )

    unexpected = [r for r in results if not isinstance(r, Booking | BookingRefused)]
    assert not unexpected, unexpected
    won = [(cohorts[i][0], r) for i, r in enumerate(results) if isinstance(r, Booking)]
    lost = [(cohorts[i][0], r) for i, r in enumerate(results) if isinstance(r, BookingRefused)]
    # Bookings are taken one at a time under the wave's lock: three fit, the rest see room
    # for only 100 more.
    assert len(won) == 3
    for _, refusal in lost:
        assert str(refusal) == "Concurrent 1 has room for 100 more mailboxes; this cohort has 300."
    assert Booking.objects.count() == len(won)
    assert set(Booking.objects.values_list("pk", flat=True)) == {b.pk for _, b in won}
    used_mailboxes, _ = wave_capacity_used(wave)
    assert used_mailboxes == 900 <= wave.capacity_mailboxes
    assert CohortMailbox.objects.filter(active=True).count() == 900
    for organisation, booking in won:
        assert_booked_whole(booking, organisation, 300)
    for organisation, _ in lost:
        assert_untouched(organisation)
    assert Mailbox.objects.filter(status=S.BOOKED).count() == 900


@pytest.mark.parametrize("chosen", [False, True], ids=["all-not-yet-booked", "chosen-subset"])
def test_two_leads_booking_the_same_mailboxes_into_two_waves_only_one_wins(carol, chosen):
    waves = [make_wave(carol, name=f"Weeknight {n}") for n in (1, 2)]
    for round_ in range(4):
        leads = [make_user(f"lead{round_}a"), make_user(f"lead{round_}b")]
        organisation = make_organisation(f"D{round_:04d}", f"Trust {round_}", mailboxes=200)
        organisation.leads.add(*leads)
        ids = list(organisation.mailboxes.values_list("pk", flat=True)) if chosen else None

        results = run_together(
            [
                lambda w=w, lead=lead, o=organisation, ids=ids: booking_create(
                    wave=w, organisation=o, actor=lead, mailbox_ids=ids
                )
                for w, lead in zip(waves, leads, strict=True)
            ]
        )

        won = [r for r in results if isinstance(r, Booking)]
        lost = [r for r in results if not isinstance(r, Booking)]
        assert len(won) == 1 and len(lost) == 1, results
        (refusal,) = lost
        assert isinstance(refusal, BookingRefused), refusal
        assert str(refusal) in LOSER_MESSAGES + (
            f"{organisation.name} has no mailboxes left to book.",
            "200 of the chosen mailboxes are already booked or migrated.",
        )
        assert Booking.objects.filter(organisation=organisation).count() == 1
        assert_booked_whole(won[0], organisation, 200)
