"""`mailboxes_transition`: the one function that moves a mailbox's migration status.

Every (from, to) pair of statuses is tried: a move the rules allow changes the row and writes
exactly one timeline event saying who, when, from, to and why; any other changes nothing and
writes nothing. The rules are spelled out here on their own, so a change to the table in
`mailboxes.models` has to be made twice, on purpose.
"""

import itertools
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError
from django.utils import timezone

from mailboxes.models import MAILBOX_TRANSITIONS, Mailbox, MailboxEvent, MailboxStatus
from mailboxes.services import mailboxes_transition
from portal.lib.transitions import CHUNK
from tests.conftest import make_mailboxes, make_organisation, make_user

S = MailboxStatus
IN_FLIGHT = {S.QUEUED, S.SYNCING, S.SYNCED, S.COMPLETING, S.STOPPED}
# to: the statuses it may be reached from.
ALLOWED = {
    S.NOT_SCHEDULED: {S.BOOKED, S.SCHEDULED},
    S.BOOKED: {S.NOT_SCHEDULED, S.ROLLED_BACK},
    S.SCHEDULED: {S.BOOKED},
    # A queued mailbox may be queued again: a retry of an attempt that failed in the queue.
    S.QUEUED: {S.SCHEDULED, S.QUEUED, S.FAILED, S.SYNCING, S.SYNCED, S.STOPPED},
    S.SYNCING: {S.QUEUED, S.SYNCED, S.STOPPED, S.FAILED},
    S.SYNCED: {S.QUEUED, S.SYNCING, S.STOPPED, S.FAILED},
    S.COMPLETING: {S.QUEUED, S.SYNCING, S.SYNCED, S.FAILED},
    S.COMPLETED: {S.QUEUED, S.SYNCING, S.SYNCED, S.COMPLETING, S.FAILED},
    S.FAILED: IN_FLIGHT,
    S.STOPPED: {S.QUEUED, S.SYNCING, S.SYNCED},
    S.ROLLED_BACK: {S.QUEUED, S.SYNCING, S.SYNCED, S.STOPPED, S.FAILED},
}
PAIRS = list(itertools.product(S, S))


def pair_id(pair) -> str:
    return f"{pair[0].value}->{pair[1].value}"


@pytest.fixture
def mailboxes(airedale):
    return list(airedale.mailboxes.order_by("pk"))


def put(mailbox: Mailbox, status: MailboxStatus, *, ago=timedelta(days=1)) -> Mailbox:
    """Arrange a mailbox in a status, as if it had got there a while ago."""
    Mailbox.objects.filter(pk=mailbox.pk).update(
        status=status, status_changed_at=timezone.now() - ago
    )
    mailbox.refresh_from_db()
    return mailbox


def test_the_rules_in_the_model_are_the_rules_written_here():
    assert {to: set(froms) for to, froms in MAILBOX_TRANSITIONS.items()} == ALLOWED


@pytest.mark.parametrize(("from_", "to"), PAIRS, ids=map(pair_id, PAIRS))
def test_a_mailbox_moves_only_where_the_rules_allow_and_records_the_move(
    mailboxes, carol, from_, to
):
    mailbox = put(mailboxes[0], from_)
    bystander = put(mailboxes[1], from_)
    before = timezone.now()

    moved = mailboxes_transition(
        mailbox_ids=[mailbox.pk], to=to, actor=carol, reason="Checked by the central team"
    )

    after = timezone.now()
    old_changed_at = mailbox.status_changed_at
    mailbox.refresh_from_db()
    if from_ in ALLOWED[to]:
        assert moved == [mailbox.pk]
        assert mailbox.status == to
        assert before <= mailbox.status_changed_at <= after
        (event,) = MailboxEvent.objects.filter(mailbox=mailbox)
        assert (event.from_status, event.to_status) == (from_, to)
        assert event.actor == carol
        assert event.actor_label == "Carol"
        assert event.at == mailbox.status_changed_at
        assert event.reason == "Checked by the central team"
    else:
        assert moved == []
        assert mailbox.status == from_
        assert mailbox.status_changed_at == old_changed_at
        assert not MailboxEvent.objects.filter(mailbox=mailbox).exists()
    # The mailbox next to it was not asked to move and did not.
    bystander_before = bystander.status_changed_at
    bystander.refresh_from_db()
    assert (bystander.status, bystander.status_changed_at) == (from_, bystander_before)
    assert not MailboxEvent.objects.filter(mailbox=bystander).exists()


def test_a_worker_named_in_words_is_recorded_as_the_actor(mailboxes):
    mailbox = put(mailboxes[0], S.QUEUED)

    mailboxes_transition(mailbox_ids=[mailbox.pk], to=S.SYNCING, actor="Migration worker")

    (event,) = mailbox.events.all()
    assert event.actor is None
    assert event.actor_label == "Migration worker"
    assert event.reason == ""


def test_expected_from_narrows_the_statuses_that_may_move(mailboxes, carol):
    queued = put(mailboxes[0], S.QUEUED)
    synced = put(mailboxes[1], S.SYNCED)

    moved = mailboxes_transition(
        mailbox_ids=[queued.pk, synced.pk], to=S.FAILED, actor=carol, expected_from={S.QUEUED}
    )

    assert moved == [queued.pk]
    assert Mailbox.objects.get(pk=synced.pk).status == S.SYNCED
    assert list(MailboxEvent.objects.values_list("mailbox_id", flat=True)) == [queued.pk]


def test_expected_from_cannot_widen_the_rules(mailboxes, carol):
    mailbox = put(mailboxes[0], S.NOT_SCHEDULED)

    moved = mailboxes_transition(
        mailbox_ids=[mailbox.pk], to=S.COMPLETED, actor=carol, expected_from={S.NOT_SCHEDULED}
    )

    assert moved == []
    assert Mailbox.objects.get(pk=mailbox.pk).status == S.NOT_SCHEDULED
    assert not MailboxEvent.objects.exists()


def test_ids_that_do_not_exist_or_repeat_are_ignored(mailboxes, carol):
    mailbox = put(mailboxes[0], S.QUEUED)

    moved = mailboxes_transition(
        mailbox_ids=[mailbox.pk, mailbox.pk, 987_654_321], to=S.SYNCING, actor=carol
    )

    assert moved == [mailbox.pk]
    assert MailboxEvent.objects.count() == 1


def test_a_long_reason_is_cut_to_fit_the_timeline(mailboxes, carol):
    mailbox = put(mailboxes[0], S.QUEUED)

    mailboxes_transition(mailbox_ids=[mailbox.pk], to=S.FAILED, actor=carol, reason="x" * 2000)

    assert mailbox.events.get().reason == "x" * 500


def test_a_person_with_a_very_long_name_can_still_move_mailboxes(mailboxes):
    # First and last names hold 150 characters each; the timeline's label holds 150 in all.
    long_named = make_user("longname")
    long_named.first_name, long_named.last_name = "A" * 150, "B" * 150
    long_named.save()
    mailbox = put(mailboxes[0], S.QUEUED)

    moved = mailboxes_transition(mailbox_ids=[mailbox.pk], to=S.SYNCING, actor=long_named)

    assert moved == [mailbox.pk]
    event = mailbox.events.get()
    assert event.actor == long_named
    assert event.actor_label == ("A" * 150 + " " + "B" * 150)[:150]


def test_a_bulk_move_of_thousands_moves_only_the_allowed_and_records_each_once(carol):
    organisation = make_organisation("RR8", "Leeds Teaching Hospitals NHS Trust", lead=carol)
    statuses = list(S)
    by_status = {status: [] for status in statuses}
    for i, mailbox in enumerate(make_mailboxes(organisation, 5000)):
        by_status[statuses[i % len(statuses)]].append(mailbox.pk)
    for status, ids in by_status.items():
        Mailbox.objects.filter(pk__in=ids).update(status=status)
    all_ids = [pk for ids in by_status.values() for pk in ids]

    moved = mailboxes_transition(
        mailbox_ids=all_ids, to=S.FAILED, actor="Migration worker", reason="Batch failed"
    )

    expected = sorted(pk for status in ALLOWED[S.FAILED] for pk in by_status[status])
    assert sorted(moved) == expected
    assert len(expected) > CHUNK  # more than one chunk of the bulk update
    assert Mailbox.objects.filter(pk__in=expected, status=S.FAILED).count() == len(expected)
    events = MailboxEvent.objects.all()
    assert events.count() == len(expected)
    assert sorted(events.values_list("mailbox_id", flat=True)) == expected
    from_of = dict(events.values_list("mailbox_id", "from_status"))
    for status in ALLOWED[S.FAILED]:
        assert {from_of[pk] for pk in by_status[status]} == {status}
    for status in set(statuses) - ALLOWED[S.FAILED] - {S.FAILED}:
        assert set(
            Mailbox.objects.filter(pk__in=by_status[status]).values_list("status", flat=True)
        ) == {status}
    # The mailboxes that were already failed stay as they were, with no new event.
    assert not events.filter(mailbox_id__in=by_status[S.FAILED]).exists()


@pytest.mark.django_db(transaction=True)
def test_the_status_and_its_events_are_written_together_or_not_at_all(airedale):
    """If the events cannot be written, the statuses do not change either.

    The events name the person who made the change; here that person's account is deleted
    between their request and the write, so the event rows break a foreign key when the
    transaction commits (both databases check foreign keys at commit).
    """
    departed = make_user("departed")
    get_user_model().objects.filter(pk=departed.pk).delete()  # the instance keeps its pk
    ids = list(airedale.mailboxes.values_list("pk", flat=True))
    Mailbox.objects.filter(pk__in=ids).update(status=S.QUEUED)

    with pytest.raises(IntegrityError):
        mailboxes_transition(mailbox_ids=ids, to=S.SYNCING, actor=departed, reason="Too late")

    assert set(Mailbox.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.QUEUED}
    assert not MailboxEvent.objects.exists()
