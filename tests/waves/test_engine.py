"""The transfer engine, driven synchronously against the simulator backend.

The simulator's clock runs a million times faster than the wall clock, so an attempt at a
mailbox (queue, sync, completion) is over within a millisecond: each `wave_advance` sees where
every attempt ended. Three cohorts (102 mailboxes) are packed into two migration batches.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_q.models import OrmQ

from mailboxes.models import Mailbox, MailboxEvent, MailboxStatus
from portal.lib.transitions import TransitionNotAllowed
from tests.conftest import (
    assert_migration_histories,
    mailbox_histories,
    make_approved_wave,
    make_organisation,
    start_wave_now,
)
from tests.waves.conftest import MAX_ATTEMPTS, drive_to_the_end
from waves import tasks
from waves.backends import get_backend
from waves.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    CohortMailbox,
    MigrationBatch,
    MigrationBatchStatus,
    SimulatedBatch,
    SimulatedUser,
    Wave,
    WaveEvent,
    WaveStatus,
)
from waves.services import wave_pause, wave_resume
from waves.transfers import (
    mailbox_retry,
    mailbox_roll_back,
    wave_advance,
    wave_drive,
    wave_plan,
    waves_needing_a_driver,
)

S = MailboxStatus
W = WaveStatus


@pytest.fixture
def approved_wave(simulator, carol, airedale, alice, bradford, bob) -> Wave:
    leeds = make_organisation("RR8", "Leeds Teaching Hospitals", lead=carol, mailboxes=60)
    return make_approved_wave(carol, [(airedale, alice), (bradford, bob), (leeds, carol)])


def wave_mailbox_ids(wave: Wave) -> list[int]:
    return list(
        CohortMailbox.objects.filter(booking__wave=wave, active=True).values_list(
            "mailbox_id", flat=True
        )
    )


def assert_batches_match_the_backend(wave: Wave) -> None:
    """One simulated batch per migration batch, each user in it once."""
    names = sorted(wave.batches.values_list("name", flat=True))
    assert sorted(SimulatedBatch.objects.values_list("name", flat=True)) == names
    for batch in wave.batches.all():
        members = sorted(batch.members.values_list("mailbox__address", flat=True))
        users = sorted(
            SimulatedUser.objects.filter(batch__name=batch.name).values_list("address", flat=True)
        )
        assert users == members


def row_counts() -> dict[str, int]:
    models = (MigrationBatch, SimulatedBatch, SimulatedUser, MailboxEvent, BookingEvent, WaveEvent)
    return {model.__name__: model.objects.count() for model in models}


def test_a_wave_runs_from_start_to_done_through_the_worker_task(approved_wave, carol):
    wave = start_wave_now(approved_wave, carol, cutover_in=-timedelta(minutes=1))
    ids = wave_mailbox_ids(wave)

    assert tasks.drive_wave(wave.pk) is True

    wave.refresh_from_db()
    assert wave.status == W.DONE
    assert wave.driver_lease_until is None
    assert list(wave.events.values_list("from_status", "to_status")) == [
        ("", W.PLANNED),
        (W.PLANNED, W.OPEN),
        (W.OPEN, W.CLOSED),
        (W.CLOSED, W.RUNNING),
        (W.RUNNING, W.COMPLETING),
        (W.COMPLETING, W.DONE),
    ]
    assert wave.events.last().reason == "102 completed, 0 need attention"
    assert set(wave.bookings.values_list("status", flat=True)) == {BookingStatus.DONE}
    for booking in wave.bookings.all():
        assert list(booking.events.values_list("to_status", flat=True)) == [
            BookingStatus.SUBMITTED,
            BookingStatus.APPROVED,
            BookingStatus.IN_PROGRESS,
            BookingStatus.DONE,
        ]
    # Three cohorts in two batches, each cohort whole in one batch.
    assert wave.batches.count() == 2
    assert set(wave.batches.values_list("status", flat=True)) == {MigrationBatchStatus.COMPLETED}
    for batch in wave.batches.all():
        assert list(batch.events.values_list("from_status", "to_status")) == [
            (MigrationBatchStatus.PLANNED, MigrationBatchStatus.SUBMITTED),
            (MigrationBatchStatus.SUBMITTED, MigrationBatchStatus.COMPLETING),
            (MigrationBatchStatus.COMPLETING, MigrationBatchStatus.COMPLETED),
        ]
    for booking in wave.bookings.all():
        assert booking.cohort.values("batch").distinct().count() == 1
    assert_batches_match_the_backend(wave)
    assert set(Mailbox.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.COMPLETED}
    histories = assert_migration_histories(ids)
    assert len(histories) == 102
    cohort = CohortMailbox.objects.filter(booking__wave=wave)
    assert set(cohort.values_list("backend_status", flat=True)) == {"Completed"}
    assert not cohort.filter(bytes_transferred=0).exists()
    assert not cohort.filter(last_activity_at=None).exists()


def test_a_finished_wave_still_shows_the_mailboxes_its_bookings_moved(client, approved_wave, carol):
    booked = sum(approved_wave.bookings.values_list("mailbox_count", flat=True))
    size = sum(approved_wave.bookings.values_list("total_bytes", flat=True))
    wave = drive_to_the_end(start_wave_now(approved_wave, carol, cutover_in=-timedelta(minutes=1)))
    assert wave.status == W.DONE
    client.force_login(carol)

    listed = client.get(f"/api/waves/{wave.public_id}/").json()
    assert booked == 102
    assert (listed["used_mailboxes"], listed["used_bytes"]) == (booked, size)
    page = client.get(f"/waves/{wave.public_id}/").content.decode()
    assert f"102 of {wave.capacity_mailboxes:,}" in page


@pytest.mark.parametrize("max_attempts", [2, MAX_ATTEMPTS])
def test_failed_mailboxes_are_retried_then_flagged_as_needing_attention(
    approved_wave, carol, simulator, settings, max_attempts
):
    settings.MAILBOX_MAX_ATTEMPTS = max_attempts
    simulator["failure_rate"] = 1.0
    wave = start_wave_now(approved_wave, carol, cutover_in=-timedelta(minutes=1))
    ids = wave_mailbox_ids(wave)

    wave = drive_to_the_end(wave)

    assert wave.status == W.DONE
    assert wave.events.last().reason == "0 completed, 102 need attention"
    assert set(Mailbox.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.FAILED}
    attempts = CohortMailbox.objects.filter(mailbox_id__in=ids).values_list("attempts", flat=True)
    assert set(attempts) == {max_attempts}
    flagged = MailboxEvent.objects.filter(mailbox_id__in=ids, to_status=S.FAILED)
    assert flagged.count() == 102
    assert set(flagged.values_list("reason", flat=True)) == {
        f"Failed after {max_attempts} attempts: "
        "TransientException: the source server did not respond in time."
    }
    assert set(flagged.values_list("actor_label", flat=True)) == {"Migration worker"}
    # Every failed attempt is on the timeline, those that failed before leaving the queue too.
    retried = MailboxEvent.objects.filter(mailbox_id__in=ids, reason__contains="retrying")
    assert retried.count() == 102 * (max_attempts - 1)
    assert set(retried.values_list("reason", flat=True)) == {
        f"Attempt {attempt} of {max_attempts} failed, retrying: "
        "TransientException: the source server did not respond in time."
        for attempt in range(1, max_attempts)
    }
    assert_migration_histories(ids)
    assert set(wave.bookings.values_list("status", flat=True)) == {BookingStatus.DONE}


def test_after_the_wave_is_done_a_failed_mailbox_is_rolled_back_not_retried(
    approved_wave, carol, simulator, settings
):
    settings.MAILBOX_MAX_ATTEMPTS = 1
    simulator["failure_rate"] = 1.0
    wave = drive_to_the_end(start_wave_now(approved_wave, carol, cutover_in=-timedelta(minutes=1)))
    assert wave.status == W.DONE
    mailbox = Mailbox.objects.filter(pk__in=wave_mailbox_ids(wave)).first()
    assert (
        MailboxEvent.objects.filter(mailbox=mailbox)
        .last()
        .reason.startswith("Failed after 1 attempt: ")
    )

    with pytest.raises(TransitionNotAllowed, match="roll .* back and book it into another wave"):
        mailbox_retry(mailbox=mailbox, actor=carol)
    mailbox.refresh_from_db()
    assert mailbox.status == S.FAILED

    mailbox_roll_back(mailbox=mailbox, actor=carol, reason="Move it next week")
    mailbox.refresh_from_db()
    assert mailbox.status == S.ROLLED_BACK
    assert not CohortMailbox.objects.filter(mailbox=mailbox, active=True).exists()


def test_a_finished_waves_batches_are_removed_from_the_backend_once_kept_long_enough(
    client, approved_wave, carol, settings
):
    settings.BATCH_KEEP_HOURS = 0
    wave = wave_advance(start_wave_now(approved_wave, carol, cutover_in=timedelta(hours=1)).pk)
    assert wave.status == W.RUNNING
    assert tasks.remove_finished_batches() == 0  # a running wave's batches stay
    assert SimulatedBatch.objects.count() == 2

    Wave.objects.filter(pk=wave.pk).update(cutover_at=timezone.now())  # cutover time comes
    settings.BATCH_KEEP_HOURS = 24
    wave = drive_to_the_end(wave)
    assert tasks.remove_finished_batches() == 0  # finished, but not 24 hours ago
    assert SimulatedBatch.objects.count() == 2

    settings.BATCH_KEEP_HOURS = 0
    assert tasks.remove_finished_batches() == 2
    assert SimulatedBatch.objects.count() == SimulatedUser.objects.count() == 0
    for batch in wave.batches.all():
        assert batch.status == MigrationBatchStatus.REMOVED
        removal = batch.events.last()
        assert (removal.from_status, removal.actor_label) == (
            MigrationBatchStatus.COMPLETED,
            "Migration worker",
        )
    assert tasks.remove_finished_batches() == 0
    # The portal keeps every mailbox's record; the wave page says where its batches went.
    assert_migration_histories(wave_mailbox_ids(wave))
    client.force_login(carol)
    page = client.get(f"/waves/{wave.public_id}/").content.decode()
    assert page.count("Removed from the migration service") == 2


def test_a_batch_already_gone_from_the_backend_is_recorded_as_removed(
    approved_wave, carol, settings
):
    """A worker that stopped between removing a batch and recording it leaves no trace."""
    settings.BATCH_KEEP_HOURS = 0
    wave = drive_to_the_end(start_wave_now(approved_wave, carol, cutover_in=-timedelta(minutes=1)))
    first = wave.batches.order_by("name").first()
    get_backend().remove_batch(first.backend_ref)

    assert tasks.remove_finished_batches() == 2
    assert set(wave.batches.values_list("status", "last_error")) == {
        (MigrationBatchStatus.REMOVED, "")
    }


def test_a_failed_mailbox_is_rolled_back_after_its_batch_was_removed(
    approved_wave, carol, simulator, settings
):
    settings.MAILBOX_MAX_ATTEMPTS = 1
    settings.BATCH_KEEP_HOURS = 0
    simulator["failure_rate"] = 1.0
    wave = drive_to_the_end(start_wave_now(approved_wave, carol, cutover_in=-timedelta(minutes=1)))
    assert tasks.remove_finished_batches() == 2
    mailbox = Mailbox.objects.filter(pk__in=wave_mailbox_ids(wave), status=S.FAILED).first()

    mailbox_roll_back(mailbox=mailbox, actor=carol, reason="Book it next week")

    mailbox.refresh_from_db()
    assert mailbox.status == S.ROLLED_BACK
    assert not CohortMailbox.objects.filter(mailbox=mailbox, active=True).exists()


def test_some_failures_are_retried_into_success_and_the_rest_need_attention(
    approved_wave, carol, simulator
):
    simulator["failure_rate"] = 0.4
    wave = start_wave_now(approved_wave, carol, cutover_in=-timedelta(minutes=1))
    ids = wave_mailbox_ids(wave)

    wave = drive_to_the_end(wave)

    assert wave.status == W.DONE
    assert_migration_histories(ids)
    entries = CohortMailbox.objects.filter(mailbox_id__in=ids).select_related("mailbox")
    outcome = {S.COMPLETED: 0, S.FAILED: 0}
    for entry in entries:
        outcome[entry.mailbox.status] += 1
        if entry.mailbox.status == S.COMPLETED:
            assert entry.attempts < MAX_ATTEMPTS
            assert entry.backend_status == "Completed"
        else:
            assert entry.attempts == MAX_ATTEMPTS
            assert entry.backend_status == "Failed", (entry.mailbox.address, entry.backend_status)
            last = entry.mailbox.events.last()
            assert last.reason.startswith(f"Failed after {MAX_ATTEMPTS} attempts: ")
    assert outcome[S.COMPLETED] > 0 and outcome[S.FAILED] > 0, outcome
    assert entries.filter(attempts__gt=0, mailbox__status=S.COMPLETED).exists()  # retried, moved
    assert wave.events.last().reason == (
        f"{outcome[S.COMPLETED]} completed, {outcome[S.FAILED]} need attention"
    )


def test_a_mailbox_flagged_for_attention_is_not_migrated_behind_the_portals_back(
    approved_wave, carol, simulator
):
    simulator["failure_rate"] = 0.5
    wave = start_wave_now(approved_wave, carol, cutover_in=timedelta(hours=2))
    ids = wave_mailbox_ids(wave)
    for _ in range(MAX_ATTEMPTS + 2):
        wave = wave_advance(wave.pk)
        time.sleep(0.002)
    flagged = CohortMailbox.objects.filter(mailbox_id__in=ids, mailbox__status=S.FAILED)
    batch = max(
        MigrationBatch.objects.filter(wave=wave), key=lambda b: flagged.filter(batch=b).count()
    )
    assert flagged.filter(batch=batch).count() >= 2  # seeded: several, in the same batch
    retried = flagged.filter(batch=batch).first().mailbox

    mailbox_retry(mailbox=retried, actor=carol)  # the central team retries one of them
    Wave.objects.filter(pk=wave.pk).update(cutover_at=timezone.now())
    wave = drive_to_the_end(wave)

    migrated_unseen = CohortMailbox.objects.filter(
        mailbox_id__in=ids, mailbox__status=S.FAILED, backend_status="Completed"
    )
    assert not migrated_unseen.exists(), f"{migrated_unseen.count()} shown failed but migrated"


def test_pausing_stops_the_batches_and_resuming_carries_on_to_the_end(approved_wave, carol):
    wave = start_wave_now(approved_wave, carol, cutover_in=timedelta(hours=2))
    ids = wave_mailbox_ids(wave)
    wave = wave_advance(wave.pk)
    wave = wave_advance(wave.pk)
    assert wave.status == W.RUNNING
    assert set(Mailbox.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.SYNCED}

    wave_pause(wave=wave, actor=carol, reason="Network change tonight")
    wave = wave_advance(wave.pk)

    assert wave.status == W.PAUSED
    assert set(wave.batches.values_list("stopped", flat=True)) == {True}
    assert not SimulatedBatch.objects.filter(stopped_at=None).exists()
    assert set(Mailbox.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.STOPPED}
    events = MailboxEvent.objects.count()
    time.sleep(0.01)
    wave = wave_advance(wave.pk)  # nothing moves while paused
    assert wave.status == W.PAUSED
    assert MailboxEvent.objects.count() == events

    wave_resume(wave=wave, actor=carol)
    wave = wave_advance(wave.pk)

    assert set(wave.batches.values_list("stopped", flat=True)) == {False}
    assert not SimulatedBatch.objects.exclude(stopped_at=None).exists()
    assert not Mailbox.objects.filter(pk__in=ids, status=S.STOPPED).exists()
    Wave.objects.filter(pk=wave.pk).update(cutover_at=timezone.now())  # the evening comes
    wave = drive_to_the_end(wave)
    assert wave.status == W.DONE
    assert set(Mailbox.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.COMPLETED}
    histories = assert_migration_histories(ids)
    for pk in ids:
        assert (S.SYNCED, S.STOPPED) in histories[pk]
        assert histories[pk][histories[pk].index((S.SYNCED, S.STOPPED)) + 1][0] == S.STOPPED
    assert list(wave.events.values_list("to_status", flat=True))[3:] == [
        W.RUNNING,
        W.PAUSED,
        W.RUNNING,
        W.COMPLETING,
        W.DONE,
    ]


def test_advancing_twice_in_a_row_sends_nothing_twice(approved_wave, carol, simulator):
    simulator["time_scale"] = 1e-6  # the backend's clock stands still: nothing new to see
    wave = start_wave_now(approved_wave, carol, cutover_in=timedelta(hours=2))
    ids = wave_mailbox_ids(wave)

    wave_advance(wave.pk)
    before = row_counts()
    wave_advance(wave.pk)

    counts = row_counts()
    assert counts == before
    assert counts["SimulatedBatch"] == counts["MigrationBatch"] == 2
    assert counts["SimulatedUser"] == 102
    assert set(Mailbox.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.QUEUED}
    for pk, path in mailbox_histories(ids).items():
        assert path.count((S.SCHEDULED, S.QUEUED)) == 1, (pk, path)


def test_a_batch_created_by_a_worker_that_then_crashed_is_sent_once(approved_wave, carol):
    wave = start_wave_now(approved_wave, carol, cutover_in=-timedelta(minutes=1))
    ids = wave_mailbox_ids(wave)
    # A worker planned the batches, created and started them at the backend, and died
    # before it could record that they were submitted.
    wave_plan(wave)
    backend = get_backend()
    for batch in wave.batches.all():
        addresses = list(batch.members.values_list("mailbox__address", flat=True))
        backend.start_batch(
            backend.create_batch(
                name=batch.name,
                addresses=addresses,
                start_after=wave.starts_at,
                complete_after=wave.cutover_at,
            )
        )
    assert set(wave.batches.values_list("status", flat=True)) == {MigrationBatchStatus.PLANNED}
    assert set(Mailbox.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.SCHEDULED}

    wave = drive_to_the_end(wave)

    assert wave.status == W.DONE
    assert SimulatedBatch.objects.count() == MigrationBatch.objects.count() == 2
    assert SimulatedUser.objects.count() == 102
    assert_batches_match_the_backend(wave)
    assert_migration_histories(ids)  # queued exactly once each


def test_a_second_driver_stands_aside_while_the_first_holds_the_wave(approved_wave, carol):
    wave = start_wave_now(approved_wave, carol, cutover_in=-timedelta(minutes=1))
    held_until = timezone.now() + timedelta(seconds=30)
    Wave.objects.filter(pk=wave.pk).update(driver_lease_until=held_until)  # the first driver

    assert wave_drive(wave.pk, seconds=1, interval=0.01) is False
    assert tasks.drive_wave(wave.pk) is False

    wave.refresh_from_db()
    assert (wave.status, wave.driver_lease_until) == (W.RUNNING, held_until)
    assert not wave.batches.exists()
    assert wave.pk not in waves_needing_a_driver()


def test_a_lease_left_by_a_dead_driver_lapses_and_another_takes_over(approved_wave, carol):
    wave = start_wave_now(approved_wave, carol, cutover_in=-timedelta(minutes=1))
    Wave.objects.filter(pk=wave.pk).update(driver_lease_until=timezone.now() - timedelta(seconds=1))

    assert waves_needing_a_driver() == [wave.pk]
    assert tasks.drive_wave(wave.pk) is True

    wave.refresh_from_db()
    assert (wave.status, wave.driver_lease_until) == (W.DONE, None)
    assert waves_needing_a_driver() == []


def test_a_driver_whose_time_is_up_hands_the_wave_to_the_next_task_at_once(
    approved_wave, carol, settings
):
    settings.WAVE_DRIVE_SECONDS = 0.3
    settings.WAVE_POLL_SECONDS = 0.1
    wave = start_wave_now(approved_wave, carol, cutover_in=timedelta(hours=1))

    assert tasks.drive_wave(wave.pk) is True

    wave.refresh_from_db()
    assert (wave.status, wave.driver_lease_until) == (W.RUNNING, None)
    queued = [(task.func(), task.args()) for task in OrmQ.objects.all()]
    assert queued == [("waves.tasks.drive_wave", (wave.pk,))]


def test_a_driver_that_finishes_the_wave_queues_no_other(approved_wave, carol):
    wave = start_wave_now(approved_wave, carol, cutover_in=-timedelta(minutes=1))

    assert tasks.drive_wave(wave.pk) is True

    wave.refresh_from_db()
    assert wave.status == W.DONE
    assert not OrmQ.objects.exists()


def test_the_schedule_asks_for_a_driver_only_for_active_waves_nobody_drives(
    approved_wave, carol, django_capture_on_commit_callbacks
):
    assert tasks.drive_active_waves() == 0  # closed, not yet running
    wave = start_wave_now(approved_wave, carol, cutover_in=timedelta(hours=1))
    assert tasks.drive_active_waves() == 1
    assert [(task.func(), task.args()) for task in OrmQ.objects.all()] == [
        ("waves.tasks.drive_wave", (wave.pk,))
    ]
    Wave.objects.filter(pk=wave.pk).update(driver_lease_until=timezone.now() + timedelta(minutes=1))
    assert tasks.drive_active_waves() == 0


@pytest.mark.django_db(transaction=True)
def test_two_drivers_at_once_one_drives_and_the_other_returns_false(simulator, carol):
    if connection.vendor != "postgresql":
        pytest.skip(
            "Two drivers in two threads need PostgreSQL: the SQLite test database may be in "
            "memory, which threads cannot write to at once."
        )
    simulator["time_scale"] = 1.0  # a slow clock keeps the wave running while both try
    leeds = make_organisation("RR8", "Leeds Teaching Hospitals", lead=carol, mailboxes=20)
    wave = start_wave_now(
        make_approved_wave(carol, [(leeds, carol)]), carol, cutover_in=timedelta(hours=1)
    )
    results: list[bool] = []
    holding = threading.Event()

    def first_driver():
        try:
            results.append(wave_drive(wave.pk, seconds=1.5, interval=0.05))
        finally:
            connection.close()

    thread = threading.Thread(target=first_driver)
    thread.start()
    try:
        for _ in range(200):
            if Wave.objects.filter(pk=wave.pk).exclude(driver_lease_until=None).exists():
                holding.set()
                break
            time.sleep(0.01)
        assert holding.is_set(), "the first driver never took the wave"
        second = wave_drive(wave.pk, seconds=1, interval=0.05)
    finally:
        thread.join()

    assert second is False
    assert results == [True]
    assert Wave.objects.get(pk=wave.pk).driver_lease_until is None
    assert MigrationBatch.objects.count() == SimulatedBatch.objects.count() == 1
    assert Booking.objects.get().status == BookingStatus.IN_PROGRESS
