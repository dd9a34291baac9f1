"""The transfer engine: moves a running wave's mailboxes through the migration backend.

One call of `wave_advance` does every step that is due, and each step is idempotent:
  plan     pack approved cohorts into at most WAVE_MAX_BATCHES batches, recorded before any
           backend call, so a re-run sends the same batches under the same names;
  submit   create and start each planned batch ("already exists" is success), then mark it
           submitted and its mailboxes queued, in one transaction;
  pause / resume   stop or start batches to match the wave;
  poll     read each batch's users, map their statuses to ours, apply changes in bulk, retry
           failures up to MAILBOX_MAX_ATTEMPTS, then flag them as needing attention;
  cutover  at the wave's cutover time, complete every batch;
  finish   when nothing is in flight and no mailbox waits for approval of its skipped items
           (data consistency Investigate or Poor), mark bookings, batches and the wave done.
`wave_drive` holds a lease on the wave so that one worker drives it at a time.
`batches_remove_finished`, on its own schedule, removes finished waves' batches from the
backend BATCH_KEEP_HOURS after their wave finished.
"""

import heapq
import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import TypeVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Q
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django.utils.text import slugify
from django_q.tasks import async_task

from mailboxes.models import MAILBOX_IN_FLIGHT, MAILBOX_TRANSITIONS, Mailbox, MailboxStatus
from mailboxes.services import mailboxes_transition
from portal.lib.bulk import update_rows
from portal.lib.transitions import Actor, TransitionNotAllowed
from waves.backends import BackendError, MigrationBackend, get_backend, portal_status
from waves.models import (
    CONSISTENCY_NEEDS_APPROVAL,
    WAVE_ACTIVE,
    BookingStatus,
    CohortMailbox,
    MigrationBatch,
    MigrationBatchStatus,
    Wave,
    WaveStatus,
)
from waves.selectors import wave_awaiting_approval, wave_awaiting_investigate
from waves.services import (
    batches_transition,
    bookings_transition,
    cohort_transition,
    wave_transition,
)

log = logging.getLogger(__name__)
PROGRESS_FIELDS = [
    "backend_status",
    "bytes_transferred",
    "items_transferred",
    "last_error",
    "attempts",
    "last_activity_at",
    "consistency",
]
WORKER = "Migration worker"
M = MailboxStatus
K = TypeVar("K")


def wave_drive(wave_id: int, *, seconds: float, interval: float) -> bool:
    """Advance the wave every `interval` seconds for up to `seconds`; False if another holds it."""
    lease = _lease_until(interval)
    claimed = (
        Wave.objects.filter(pk=wave_id, status__in=WAVE_ACTIVE)
        .filter(Q(driver_lease_until=None) | Q(driver_lease_until__lt=timezone.now()))
        .update(driver_lease_until=lease)
    )
    if not claimed:
        return False
    deadline = time.monotonic() + seconds
    try:
        while True:
            wave = wave_advance(wave_id)
            if wave.status not in WAVE_ACTIVE or time.monotonic() + interval > deadline:
                break
            time.sleep(interval)
            # Renew before each step; a driver whose lease lapsed (it stalled) stops here.
            renewed = _lease_until(interval)
            if not Wave.objects.filter(pk=wave_id, driver_lease_until=lease).update(
                driver_lease_until=renewed
            ):
                break
            lease = renewed
    finally:
        Wave.objects.filter(pk=wave_id, driver_lease_until=lease).update(driver_lease_until=None)
    return True


def _lease_until(interval: float):
    margin = settings.WAVE_DRIVE_LEASE_MARGIN_SECONDS
    return timezone.now() + timedelta(seconds=interval + margin)


def wave_is_active(wave_id: int) -> bool:
    return Wave.objects.filter(pk=wave_id, status__in=WAVE_ACTIVE).exists()


def waves_needing_a_driver() -> list[int]:
    return list(
        Wave.objects.filter(status__in=WAVE_ACTIVE)
        .filter(Q(driver_lease_until=None) | Q(driver_lease_until__lt=timezone.now()))
        .values_list("pk", flat=True)
    )


def wave_advance(wave_id: int, backend: MigrationBackend | None = None) -> Wave:
    wave = Wave.objects.get(pk=wave_id)
    if wave.status not in WAVE_ACTIVE:
        return wave
    backend = backend or get_backend()
    wave_plan(wave)
    if wave.status in {WaveStatus.RUNNING, WaveStatus.COMPLETING}:
        for batch in wave.batches.filter(status=MigrationBatchStatus.PLANNED):
            _call(batch, batch_submit, batch, backend)
    _match_pause(wave, backend)
    for batch in wave.batches.exclude(status=MigrationBatchStatus.PLANNED):
        _call(batch, batch_poll, batch, backend)
    wave.refresh_from_db()
    if wave.status == WaveStatus.RUNNING and timezone.now() >= wave.cutover_at:
        wave_transition(
            wave=wave, to=WaveStatus.COMPLETING, actor=WORKER, reason="Cutover time reached"
        )
    if wave.status == WaveStatus.COMPLETING:
        for batch in wave.batches.filter(status=MigrationBatchStatus.SUBMITTED):
            _call(batch, batch_complete, batch, backend)
        wave_finish_if_settled(wave)
    return wave


def _call(batch: MigrationBatch, step, *args) -> None:
    """Run one step on one batch; a backend refusal is recorded on the batch, not raised."""
    try:
        step(*args)
    except BackendError as error:
        log.warning("Batch %s: %s", batch.name, error)
        MigrationBatch.objects.filter(pk=batch.pk).update(last_error=str(error)[:1000])


def pack_cohorts(cohorts: Sequence[tuple[K, int]], max_batches: int) -> list[list[K]]:
    """Pack (key, mailbox count) cohorts, each whole, into at most `max_batches` slices.

    Largest cohort first into the emptiest slice keeps slices within a cohort of each other.
    Pure: the plan of a wave, and the batch CSV of a wave not yet started, both come from it.
    """
    ordered = sorted(cohorts, key=lambda cohort: -cohort[1])  # stable: ties keep their order
    slices: list[list[K]] = [[] for _ in range(min(max_batches, len(ordered)))]
    load = [(0, i) for i in range(len(slices))]
    for key, size in ordered:
        total, i = heapq.heappop(load)
        slices[i].append(key)
        heapq.heappush(load, (total + size, i))
    return slices


def batch_name(wave: Wave, index: int) -> str:
    """The name of the wave's `index`-th batch (from 0): the same every time it is worked out."""
    return f"w{wave.pk}-{slugify(wave.name)[:40]}-{index + 1:03d}"


def _approved_cohorts(wave: Wave):
    return wave.bookings.filter(status=BookingStatus.APPROVED).order_by("-mailbox_count", "pk")


def wave_plan(wave: Wave) -> None:
    """Pack approved cohorts into batches, each cohort whole (shared mailboxes move with it)."""
    with transaction.atomic():
        wave = Wave.objects.select_for_update().get(pk=wave.pk)
        if wave.batches.exists():
            return
        slices = _unplanned_slices(wave)
        if not slices:
            return
        batches = MigrationBatch.objects.bulk_create(
            [MigrationBatch(wave=wave, name=batch_name(wave, i)) for i in range(len(slices))]
        )
        for batch, booking_ids in zip(batches, slices, strict=True):
            CohortMailbox.objects.filter(booking__in=booking_ids, active=True).update(batch=batch)
        bookings_transition(
            booking_ids=[pk for booking_ids in slices for pk in booking_ids],
            to=BookingStatus.IN_PROGRESS,
            actor=WORKER,
            reason=f"{wave.name} started",
        )


def _unplanned_slices(wave: Wave) -> list[list[int]]:
    """Booking ids of each batch a wave not yet planned would have if it started now."""
    cohorts = list(_approved_cohorts(wave).values_list("pk", "mailbox_count"))
    return pack_cohorts(cohorts, settings.WAVE_MAX_BATCHES)


def wave_batch_names(wave: Wave) -> list[str]:
    """The names of the wave's batches: as planned, or as they would be if it started now."""
    if wave.batches.exists():
        return list(wave.batches.order_by("name").values_list("name", flat=True))
    return [batch_name(wave, i) for i in range(len(_unplanned_slices(wave)))]


def wave_batch_assignments(wave: Wave) -> Iterator[tuple[str, str]]:
    """(address, batch name) of each mailbox of the wave, batch by batch, as planned or sent.

    A wave not yet planned is planned here without writing anything, as `wave_plan` would.
    """
    entries = CohortMailbox.objects.filter(active=True).order_by("mailbox__address")
    if wave.batches.exists():
        rows = entries.filter(batch__wave=wave).order_by("batch__name", "mailbox__address")
        yield from rows.values_list("mailbox__address", "batch__name").iterator(chunk_size=5000)
        return
    for i, booking_ids in enumerate(_unplanned_slices(wave)):
        name = batch_name(wave, i)
        rows = entries.filter(booking__in=booking_ids).values_list("mailbox__address", flat=True)
        for address in rows.iterator(chunk_size=5000):
            yield address, name


def batch_submit(batch: MigrationBatch, backend: MigrationBackend) -> None:
    members = batch.members.filter(active=True)
    addresses = list(
        members.order_by("mailbox__address").values_list("mailbox__address", flat=True)
    )
    ref = backend.create_batch(
        name=batch.name,
        addresses=addresses,
        start_after=batch.wave.starts_at,
        complete_after=batch.wave.cutover_at,
    )
    backend.start_batch(ref)
    with transaction.atomic():
        marked = batches_transition(
            batch_ids=[batch.pk],
            to=MigrationBatchStatus.SUBMITTED,
            actor=WORKER,
            reason=f"Created and started with {len(addresses):,} mailboxes",
            backend_ref=ref,
            submitted_at=timezone.now(),
            last_error="",
        )
        if marked:
            cohort_transition(
                mailbox_ids=list(members.values_list("mailbox_id", flat=True)),
                to=M.QUEUED,
                actor=WORKER,
                reason=f"Submitted in migration batch {batch.name}",
                expected_from={M.SCHEDULED},
            )


def _match_pause(wave: Wave, backend: MigrationBackend) -> None:
    submitted = wave.batches.exclude(status=MigrationBatchStatus.PLANNED)
    if wave.status == WaveStatus.PAUSED:
        for batch in submitted.filter(stopped=False):
            _call(batch, _set_stopped, batch, backend, True)
    else:
        for batch in submitted.filter(stopped=True):
            _call(batch, _set_stopped, batch, backend, False)


def _set_stopped(batch: MigrationBatch, backend: MigrationBackend, stopped: bool) -> None:
    (backend.stop_batch if stopped else backend.start_batch)(batch.backend_ref)
    MigrationBatch.objects.filter(pk=batch.pk).update(stopped=stopped)


def batch_poll(batch: MigrationBatch, backend: MigrationBackend) -> None:
    """Bring our record of the batch's users up to date with the backend, in bulk."""
    if batch.stopped and batch.wave.status != WaveStatus.PAUSED:
        return
    members = {
        row[0].lower(): row
        for row in batch.members.filter(active=True).values_list(
            "mailbox__address",
            "pk",
            "mailbox_id",
            "mailbox_status",
            "attempts",
            "backend_status",
            "bytes_transferred",
            "items_transferred",
            "last_error",
            "consistency",
        )
    }
    moves: dict[tuple[str, str], list[int]] = defaultdict(list)
    changed: list[tuple] = []
    retry = False
    now = timezone.now()
    for user in backend.user_statuses(batch.backend_ref):
        row = members.get(user.address.lower())
        if row is None:
            continue
        _, cohort_id, mailbox_id, status, attempts, seen, bytes_done, items_done, error, score = row
        target = portal_status(user.status)
        reported = user.status
        reason = f"Migration service reports {user.status}"
        retrying = False
        if target == M.FAILED and not (seen and portal_status(seen) == M.FAILED):
            attempts += 1
            if attempts < settings.MAILBOX_MAX_ATTEMPTS:
                target, retry, retrying = M.QUEUED, True, True
                # The retry leaves this failure behind: forget it, so that a failure of the
                # retry itself is counted, even if no poll sees the user between the two.
                reported = ""
                reason = f"Attempt {attempts} of {settings.MAILBOX_MAX_ATTEMPTS} failed, retrying: {user.error}"
            else:
                reason = f"Failed after {attempts} attempt{pluralize(attempts)}: {user.error}"
        elif target == M.FAILED:
            target = status  # still failed from a retry not yet picked up: nothing new
        # A retry is recorded even when the attempt failed before the mailbox left the queue.
        if target != status or retrying:
            moves[(target, reason)].append(mailbox_id)
        new = (
            reported,
            user.bytes_transferred,
            user.items_transferred,
            user.error[:1000],
            user.consistency,
        )
        if (
            target != status
            or new != (seen, bytes_done, items_done, error, score)
            or row[4] != attempts
        ):
            changed.append(
                (cohort_id, mailbox_id, status, (*new[:3], new[3] or error, attempts, now, new[4]))
            )
    with transaction.atomic():
        moved_to: dict[int, str] = {}
        for (target, reason), ids in moves.items():
            for mailbox_id in mailboxes_transition(
                mailbox_ids=ids, to=target, actor=WORKER, reason=reason
            ):
                moved_to[mailbox_id] = target
        # The cohort rows' copy of the status (see cohort_transition) is written with their
        # progress, in one UPDATE: one new version of each row, which keeps the update HOT.
        update_rows(
            CohortMailbox,
            [*PROGRESS_FIELDS, "mailbox_status"],
            [
                (cohort_id, *progress, moved_to.get(mailbox_id, status))
                for cohort_id, mailbox_id, status, progress in changed
            ],
        )
        MigrationBatch.objects.filter(pk=batch.pk).update(last_polled_at=now, last_error="")
    if retry:
        backend.start_batch(batch.backend_ref)


def batch_complete(batch: MigrationBatch, backend: MigrationBackend) -> None:
    backend.complete_batch(batch.backend_ref)
    batches_transition(
        batch_ids=[batch.pk],
        to=MigrationBatchStatus.COMPLETING,
        actor=WORKER,
        reason="Cutover: completion asked for",
        completion_requested_at=timezone.now(),
    )


def wave_finish_if_settled(wave: Wave) -> bool:
    with transaction.atomic():
        unsettled = CohortMailbox.objects.filter(
            booking__wave=wave,
            active=True,
            mailbox_status__in=MAILBOX_IN_FLIGHT | {M.SCHEDULED},
        ).exists()
        if unsettled or wave_awaiting_approval(wave).exists():
            return False
        outcome = dict(
            CohortMailbox.objects.filter(booking__wave=wave, active=True)
            .values_list("mailbox_status")
            .annotate(n=Count("pk"))
        )
        bookings_transition(
            booking_ids=list(
                wave.bookings.filter(status=BookingStatus.IN_PROGRESS).values_list("pk", flat=True)
            ),
            to=BookingStatus.DONE,
            actor=WORKER,
            reason=f"{wave.name} finished",
        )
        batches_transition(
            batch_ids=list(wave.batches.values_list("pk", flat=True)),
            to=MigrationBatchStatus.COMPLETED,
            actor=WORKER,
            reason=f"{wave.name} finished",
        )
        wave_transition(
            wave=wave,
            to=WaveStatus.DONE,
            actor=WORKER,
            reason=f"{outcome.get(M.COMPLETED, 0):,} completed, {outcome.get(M.FAILED, 0):,} need attention",
        )
    return True


def batches_remove_finished(backend: MigrationBackend | None = None) -> int:
    """Remove from the backend the batches of waves finished BATCH_KEEP_HOURS ago or more.

    Exchange Online holds at most 100 migration batches per tenant and keeps completed ones for
    60 days: without this, two 50-batch waves fill the tenant. The portal keeps its own record
    of every batch and mailbox. A refusal is recorded on the batch, which is tried again next
    time. Returns how many were removed.
    """
    due = timezone.now() - timedelta(hours=settings.BATCH_KEEP_HOURS)
    batch_ids = list(
        MigrationBatch.objects.filter(
            status=MigrationBatchStatus.COMPLETED,
            wave__status=WaveStatus.DONE,
            wave__status_changed_at__lte=due,
        ).values_list("pk", flat=True)
    )
    if not batch_ids:
        return 0
    backend = backend or get_backend()
    for batch in MigrationBatch.objects.filter(pk__in=batch_ids).select_related("wave"):
        _call(batch, batch_remove, batch, backend)
    return MigrationBatch.objects.filter(
        pk__in=batch_ids, status=MigrationBatchStatus.REMOVED
    ).count()


def batch_remove(batch: MigrationBatch, backend: MigrationBackend) -> None:
    """Remove a finished batch, and with it its users, from the backend.

    A batch the backend no longer has counts as removed (`remove_batch` says nothing), so a
    worker that stopped between the call and the record does no harm.
    """
    backend.remove_batch(batch.backend_ref)
    batches_transition(
        batch_ids=[batch.pk],
        to=MigrationBatchStatus.REMOVED,
        actor=WORKER,
        reason=f"{batch.wave.name} finished; the portal keeps the batch's record",
        last_error="",
    )


def _cohort_entry(mailbox: Mailbox) -> CohortMailbox:
    entry = (
        CohortMailbox.objects.select_related("batch", "booking__wave")
        .filter(mailbox=mailbox, active=True)
        .first()
    )
    if entry is None or entry.batch is None or entry.batch.status == MigrationBatchStatus.PLANNED:
        raise TransitionNotAllowed(f"{mailbox.address} is not in a running migration batch.")
    return entry


def mailbox_retry(
    *, mailbox: Mailbox, actor: Actor, backend: MigrationBackend | None = None
) -> None:
    """An operator retries a mailbox that needs attention: its attempts start again."""
    if mailbox.status != M.FAILED:
        raise TransitionNotAllowed(f"{mailbox.address} does not need attention.")
    entry = _cohort_entry(mailbox)
    wave = entry.booking.wave
    if wave.status not in {WaveStatus.RUNNING, WaveStatus.COMPLETING}:
        raise TransitionNotAllowed(
            f"{wave.name} is {wave.get_status_display().lower()}: roll {mailbox.address} back "
            "and book it into another wave."
        )
    (backend or get_backend()).start_batch(entry.batch.backend_ref)
    with transaction.atomic():
        CohortMailbox.objects.filter(pk=entry.pk).update(attempts=0, backend_status="")
        cohort_transition(
            mailbox_ids=[mailbox.pk],
            to=M.QUEUED,
            actor=actor,
            reason="Retried by the central team",
            expected_from={M.FAILED},
        )


def mailbox_approve_skipped_items(
    *, mailbox: Mailbox, actor: Actor, backend: MigrationBackend | None = None
) -> None:
    """The central team approves the items a held mailbox's move skipped; completion goes on."""
    entry = _cohort_entry(mailbox)
    if (
        entry.consistency not in CONSISTENCY_NEEDS_APPROVAL
        or entry.skipped_items_approved_at is not None
        or mailbox.status == M.COMPLETED
    ):
        raise TransitionNotAllowed(f"{mailbox.address} has no skipped items waiting for approval.")
    (backend or get_backend()).approve_skipped_items(entry.batch.backend_ref, mailbox.address)
    CohortMailbox.objects.filter(pk=entry.pk, skipped_items_approved_at=None).update(
        skipped_items_approved_at=timezone.now(),
        skipped_items_approved_by=None if isinstance(actor, str) else actor,
    )
    log.info("%s: skipped items approved (data consistency %s)", mailbox.address, entry.consistency)


def wave_queue_investigate_approvals(*, wave: Wave, actor: AbstractBaseUser) -> int:
    """Queue `wave_approve_investigate_items` for a worker; how many mailboxes it will approve
    (none queued when no mailbox graded Investigate waits)."""
    count = wave_awaiting_investigate(wave).count()
    if count:
        transaction.on_commit(
            lambda: async_task(
                "waves.tasks.approve_investigate_items",
                wave.pk,
                actor.pk,
                task_name=f"approve-investigate-{wave.pk}",
            )
        )
    return count


def wave_approve_investigate_items(
    wave_id: int, *, actor: Actor, backend: MigrationBackend | None = None
) -> int:
    """Approve the skipped items of every mailbox of the wave held with an Investigate grade.

    For the central team's "approve all" when a weekend wave holds hundreds of them: a worker
    makes one call to the backend for each mailbox. Poor grades mean major data loss, so they
    are left to be decided one by one. A mailbox the backend refuses stays held, listed on the
    wave page, and the rest go on; one approved meanwhile is skipped, so the task can run again.
    Returns how many were approved.
    """
    backend = backend or get_backend()
    wave = Wave.objects.get(pk=wave_id)
    held = list(wave_awaiting_investigate(wave).values_list("mailbox_id", flat=True))
    approved = 0
    for mailbox in Mailbox.objects.filter(pk__in=held).order_by("address").iterator():
        try:
            mailbox_approve_skipped_items(mailbox=mailbox, actor=actor, backend=backend)
        except (TransitionNotAllowed, BackendError) as refusal:
            log.warning("%s: skipped items not approved: %s", mailbox.address, refusal)
        else:
            approved += 1
    log.info("%s: skipped items of %d of %d mailboxes approved", wave.name, approved, len(held))
    return approved


def mailbox_roll_back(
    *, mailbox: Mailbox, actor: Actor, reason: str, backend: MigrationBackend | None = None
) -> None:
    """Take a mailbox that has not completed out of its batch; it stays on the old service."""
    if mailbox.status not in MAILBOX_TRANSITIONS[M.ROLLED_BACK]:
        raise TransitionNotAllowed(
            f"{mailbox.address} is {mailbox.get_status_display().lower()}: only a mailbox that has "
            "not started completing can be rolled back."
        )
    if not reason.strip():
        raise TransitionNotAllowed("Give a reason for rolling the mailbox back.")
    entry = _cohort_entry(mailbox)
    # A removed batch took its users with it: there is nothing left to take the mailbox out of.
    if entry.batch.status != MigrationBatchStatus.REMOVED:
        (backend or get_backend()).remove_user(entry.batch.backend_ref, mailbox.address)
    with transaction.atomic():
        cohort_transition(
            mailbox_ids=[mailbox.pk],
            to=M.ROLLED_BACK,
            actor=actor,
            reason=f"Rolled back: {reason.strip()}",
        )
        CohortMailbox.objects.filter(pk=entry.pk).update(active=False)
