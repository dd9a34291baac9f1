"""Status changes of waves and bookings, tried for every (from, to) pair of statuses.

A change the rules allow moves the row and writes exactly one event saying who, when, from, to
and why; any other changes nothing, writes nothing and, where one wave or booking was asked
for, says why in words. The rules are spelled out here on their own, so a change to the tables
in `waves.models` has to be made twice, on purpose.
"""

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from mailboxes.models import MailboxEvent, MailboxStatus
from portal.lib.transitions import TransitionNotAllowed
from waves.models import (
    BOOKING_TRANSITIONS,
    WAVE_TRANSITIONS,
    Booking,
    BookingEvent,
    BookingStatus,
    CohortMailbox,
    Wave,
    WaveEvent,
    WaveKind,
    WaveStatus,
)
from waves.services import (
    booking_approve,
    booking_create,
    booking_reject,
    booking_withdraw,
    bookings_transition,
    wave_cancel,
    wave_close,
    wave_open,
    wave_pause,
    wave_resume,
    wave_transition,
)

W = WaveStatus
B = BookingStatus
WAVE_ALLOWED = {
    W.PLANNED: set(),
    W.OPEN: {W.PLANNED, W.CLOSED},
    W.CLOSED: {W.OPEN},
    W.RUNNING: {W.CLOSED, W.PAUSED},
    W.PAUSED: {W.RUNNING},
    W.COMPLETING: {W.RUNNING},
    W.DONE: {W.COMPLETING},
    W.CANCELLED: {W.PLANNED, W.OPEN},
}
BOOKING_ALLOWED = {
    B.SUBMITTED: set(),
    B.APPROVED: {B.SUBMITTED},
    B.REJECTED: {B.SUBMITTED},
    B.WITHDRAWN: {B.SUBMITTED, B.APPROVED},
    B.IN_PROGRESS: {B.APPROVED},
    B.DONE: {B.IN_PROGRESS},
}
WAVE_PAIRS = list(itertools.product(W, W))
BOOKING_PAIRS = list(itertools.product(B, B))


def pair_id(pair) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def wave_in(status: WaveStatus, *, name: str = "Weekend 7") -> Wave:
    """Arrange a wave in a status, as if it had got there yesterday."""
    starts = timezone.now() + timedelta(days=3)
    return Wave.objects.create(
        name=name,
        kind=WaveKind.WEEKEND,
        status=status,
        status_changed_at=timezone.now() - timedelta(days=1),
        starts_at=starts,
        cutover_at=starts + timedelta(days=2),
        booking_deadline=starts - timedelta(days=1),
        capacity_mailboxes=83_000,
        capacity_gb=90_000,
    )


def test_the_rules_in_the_model_are_the_rules_written_here():
    assert {to: set(froms) for to, froms in WAVE_TRANSITIONS.items() if froms} == {
        to: froms for to, froms in WAVE_ALLOWED.items() if froms
    }
    assert {to: set(froms) for to, froms in BOOKING_TRANSITIONS.items() if froms} == {
        to: froms for to, froms in BOOKING_ALLOWED.items() if froms
    }


# Waves


@pytest.mark.parametrize(("from_", "to"), WAVE_PAIRS, ids=map(pair_id, WAVE_PAIRS))
def test_a_wave_moves_only_where_the_rules_allow_and_records_the_move(carol, from_, to):
    wave = wave_in(from_)
    bystander = wave_in(from_, name="Weekend 8")
    changed_at = wave.status_changed_at
    before = timezone.now()

    if from_ in WAVE_ALLOWED[to]:
        wave_transition(wave=wave, to=to, actor=carol, reason="Decided at the go/no-go meeting")

        after = timezone.now()
        assert wave.status == to  # the caller's copy is brought up to date
        assert Wave.objects.get(pk=wave.pk).status == to
        assert before <= wave.status_changed_at <= after
        (event,) = WaveEvent.objects.filter(wave=wave)
        assert (event.from_status, event.to_status) == (from_, to)
        assert (event.actor, event.actor_label) == (carol, "Carol")
        assert event.at == wave.status_changed_at
        assert event.reason == "Decided at the go/no-go meeting"
    else:
        with pytest.raises(TransitionNotAllowed) as refused:
            wave_transition(wave=wave, to=to, actor=carol, reason="Decided")

        assert str(refused.value) == (
            f"Weekend 7 is {from_.label.lower()}, so it cannot become {to.label.lower()}."
        )
        wave.refresh_from_db()
        assert (wave.status, wave.status_changed_at) == (from_, changed_at)
        assert not WaveEvent.objects.exists()
    assert Wave.objects.get(pk=bystander.pk).status == from_
    assert not WaveEvent.objects.filter(wave=bystander).exists()


WAVE_ACTIONS = {
    "open": (W.OPEN, lambda wave, actor: wave_open(wave=wave, actor=actor)),
    "close": (W.CLOSED, lambda wave, actor: wave_close(wave=wave, actor=actor)),
    "pause": (W.PAUSED, lambda wave, actor: wave_pause(wave=wave, actor=actor, reason="Hold")),
    "resume": (W.RUNNING, lambda wave, actor: wave_resume(wave=wave, actor=actor)),
    "cancel": (W.CANCELLED, lambda wave, actor: wave_cancel(wave=wave, actor=actor, reason="No")),
}
WAVE_ACTION_CASES = list(itertools.product(WAVE_ACTIONS, W))


@pytest.mark.parametrize(
    ("action", "from_"),
    WAVE_ACTION_CASES,
    ids=[f"{a}-from-{f.value}" for a, f in WAVE_ACTION_CASES],
)
def test_an_operator_action_on_a_wave_follows_the_same_rules(
    carol, action, from_, django_capture_on_commit_callbacks
):
    to, act = WAVE_ACTIONS[action]
    wave = wave_in(from_)

    with django_capture_on_commit_callbacks() as queued:
        if from_ in WAVE_ALLOWED[to]:
            act(wave, carol)
            assert Wave.objects.get(pk=wave.pk).status == to
            assert list(WaveEvent.objects.values_list("from_status", "to_status")) == [(from_, to)]
        else:
            with pytest.raises(TransitionNotAllowed, match=r"^Weekend 7 is .*, so it cannot "):
                act(wave, carol)
            assert Wave.objects.get(pk=wave.pk).status == from_
            assert not WaveEvent.objects.exists()
    # Pausing and resuming ask the worker to act at once, and only when they happened.
    expect_task = action in {"pause", "resume"} and from_ in WAVE_ALLOWED[to]
    assert len(queued) == int(expect_task)


# Bookings


@pytest.fixture
def booking(wave, airedale, alice) -> Booking:
    return booking_create(wave=wave, organisation=airedale, actor=alice)


def arrange(booking: Booking, status: BookingStatus) -> None:
    """Put a booking in a status, as if it had got there yesterday (test set-up only)."""
    Booking.objects.filter(pk=booking.pk).update(
        status=status, status_changed_at=timezone.now() - timedelta(days=1)
    )
    booking.refresh_from_db()


@pytest.mark.parametrize(("from_", "to"), BOOKING_PAIRS, ids=map(pair_id, BOOKING_PAIRS))
def test_a_booking_moves_only_where_the_rules_allow_and_records_the_move(booking, carol, from_, to):
    arrange(booking, from_)
    events_before = set(BookingEvent.objects.values_list("pk", flat=True))
    changed_at = booking.status_changed_at
    before = timezone.now()

    moved = bookings_transition(
        booking_ids=[booking.pk], to=to, actor=carol, reason="Agreed with the trust"
    )

    after = timezone.now()
    booking.refresh_from_db()
    new_events = BookingEvent.objects.exclude(pk__in=events_before)
    if from_ in BOOKING_ALLOWED[to]:
        assert moved == [booking.pk]
        assert booking.status == to
        assert before <= booking.status_changed_at <= after
        (event,) = new_events
        assert event.booking == booking
        assert (event.from_status, event.to_status) == (from_, to)
        assert (event.actor, event.actor_label) == (carol, "Carol")
        assert event.at == booking.status_changed_at
        assert event.reason == "Agreed with the trust"
    else:
        assert moved == []
        assert (booking.status, booking.status_changed_at) == (from_, changed_at)
        assert not new_events.exists()


BOOKING_ACTIONS = {
    "approve": (B.APPROVED, lambda b, actor: booking_approve(booking=b, actor=actor)),
    "reject": (
        B.REJECTED,
        lambda b, actor: booking_reject(booking=b, actor=actor, reason="Too big"),
    ),
    "withdraw": (B.WITHDRAWN, lambda b, actor: booking_withdraw(booking=b, actor=actor)),
}
BOOKING_ACTION_CASES = list(itertools.product(BOOKING_ACTIONS, B))


@pytest.mark.parametrize(
    ("action", "from_"),
    BOOKING_ACTION_CASES,
    ids=[f"{a}-from-{f.value}" for a, f in BOOKING_ACTION_CASES],
)
def test_a_decision_on_a_booking_follows_the_rules_or_says_why_not(booking, carol, action, from_):
    to, act = BOOKING_ACTIONS[action]
    arrange(booking, from_)
    cohort = list(booking.cohort.values_list("mailbox_id", flat=True))
    booking_events = BookingEvent.objects.filter(booking=booking)
    mailbox_events = MailboxEvent.objects.filter(mailbox_id__in=cohort)
    assert (booking_events.count(), mailbox_events.count()) == (1, len(cohort))  # as booked

    if from_ not in BOOKING_ALLOWED[to]:
        with pytest.raises(TransitionNotAllowed) as refused:
            act(booking, carol)

        assert str(refused.value) == (
            f"This booking is {from_.label.lower()}, so it cannot be {to.label.lower()}."
        )
        assert Booking.objects.get(pk=booking.pk).status == from_
        assert (booking_events.count(), mailbox_events.count()) == (1, len(cohort))
        assert CohortMailbox.objects.filter(booking=booking, active=True).count() == len(cohort)
        assert set(booking.organisation.mailboxes.values_list("status", flat=True)) == {
            MailboxStatus.BOOKED
        }
        return

    act(booking, carol)

    assert Booking.objects.get(pk=booking.pk).status == to
    (event,) = booking_events.exclude(to_status=B.SUBMITTED)
    assert (event.from_status, event.to_status, event.actor) == (from_, to, carol)
    mailbox_to = MailboxStatus.SCHEDULED if to == B.APPROVED else MailboxStatus.NOT_SCHEDULED
    assert set(booking.organisation.mailboxes.values_list("status", flat=True)) == {mailbox_to}
    assert mailbox_events.filter(
        from_status=MailboxStatus.BOOKED, to_status=mailbox_to
    ).count() == len(cohort)
    still_held = CohortMailbox.objects.filter(booking=booking, active=True).count()
    assert still_held == (len(cohort) if to == B.APPROVED else 0)
