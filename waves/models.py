import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from mailboxes.models import Mailbox, MailboxStatus, Organisation, StatusEvent


class WaveKind(models.TextChoices):
    PILOT = "pilot", "Pilot"
    WEEKNIGHT = "weeknight", "Weeknight"
    WEEKEND = "weekend", "Weekend"


class WaveStatus(models.TextChoices):
    PLANNED = "planned", "Planned"
    OPEN = "open", "Open for booking"
    CLOSED = "closed", "Closed for booking"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETING = "completing", "Completing"
    DONE = "done", "Done"
    CANCELLED = "cancelled", "Cancelled"


W = WaveStatus
WAVE_TRANSITIONS: dict[str, set[str]] = {
    W.OPEN: {W.PLANNED, W.CLOSED},
    W.CLOSED: {W.OPEN},
    W.RUNNING: {W.CLOSED, W.PAUSED},
    W.PAUSED: {W.RUNNING},
    W.COMPLETING: {W.RUNNING},
    W.DONE: {W.COMPLETING},
    W.CANCELLED: {W.PLANNED, W.OPEN},
}
WAVE_ACTIVE = {W.RUNNING, W.PAUSED, W.COMPLETING}
WAVE_STATUS_COLOURS = {
    W.PLANNED: "grey",
    W.OPEN: "blue",
    W.CLOSED: "purple",
    W.RUNNING: "aqua-green",
    W.PAUSED: "orange",
    W.COMPLETING: "yellow",
    W.DONE: "green",
    W.CANCELLED: "grey",
}


class Wave(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=WaveKind.choices)
    status = models.CharField(max_length=20, choices=WaveStatus.choices, default=W.PLANNED)
    status_changed_at = models.DateTimeField(auto_now_add=True)
    starts_at = models.DateTimeField(help_text="When the final sync of the wave begins.")
    cutover_at = models.DateTimeField(help_text="When mailboxes switch to Exchange Online.")
    booking_deadline = models.DateTimeField()
    capacity_mailboxes = models.PositiveIntegerField()
    capacity_gb = models.PositiveIntegerField()
    # A worker driving this wave holds it until then; another takes over only after it lapses.
    driver_lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(booking_deadline__lte=models.F("starts_at")),
                name="wave_deadline_before_start",
            ),
            models.CheckConstraint(
                condition=Q(cutover_at__gt=models.F("starts_at")), name="wave_cutover_after_start"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def capacity_bytes(self) -> int:
        return self.capacity_gb * 1024**3

    @property
    def free_mailboxes(self) -> int:
        """Room left; needs `used_mailboxes` from `waves.selectors.waves_with_capacity`."""
        return max(self.capacity_mailboxes - self.used_mailboxes, 0)

    @property
    def free_bytes(self) -> int:
        return max(self.capacity_bytes - self.used_bytes, 0)

    @property
    def status_colour(self) -> str:
        return WAVE_STATUS_COLOURS[self.status]


class BookingStatus(models.TextChoices):
    SUBMITTED = "submitted", "Submitted"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"
    IN_PROGRESS = "in_progress", "In progress"
    DONE = "done", "Done"


B = BookingStatus
BOOKING_TRANSITIONS: dict[str, set[str]] = {
    B.APPROVED: {B.SUBMITTED},
    B.REJECTED: {B.SUBMITTED},
    B.WITHDRAWN: {B.SUBMITTED, B.APPROVED},
    B.IN_PROGRESS: {B.APPROVED},
    B.DONE: {B.IN_PROGRESS},
}
# Bookings that hold capacity in their wave and hold their mailboxes.
BOOKING_ACTIVE = {B.SUBMITTED, B.APPROVED, B.IN_PROGRESS}
# Bookings counted against their wave's capacity: the active ones, and those done, so a
# finished wave still shows what it moved.
BOOKING_COUNTED = BOOKING_ACTIVE | {B.DONE}
BOOKING_STATUS_COLOURS = {
    B.SUBMITTED: "blue",
    B.APPROVED: "green",
    B.REJECTED: "red",
    B.WITHDRAWN: "grey",
    B.IN_PROGRESS: "aqua-green",
    B.DONE: "green",
}


class Booking(models.Model):
    """One organisation's cohort in one wave."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    wave = models.ForeignKey(Wave, on_delete=models.PROTECT, related_name="bookings")
    organisation = models.ForeignKey(
        Organisation, on_delete=models.PROTECT, related_name="bookings"
    )
    status = models.CharField(max_length=20, choices=BookingStatus.choices)
    status_changed_at = models.DateTimeField(auto_now_add=True)
    # Fixed when the booking is made: the wave's capacity check sums these under a row lock.
    mailbox_count = models.PositiveIntegerField()
    total_bytes = models.BigIntegerField()
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="bookings_submitted"
    )
    decision_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["wave", "status"]), models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"{self.organisation.code} in {self.wave.name}"

    @property
    def status_colour(self) -> str:
        return BOOKING_STATUS_COLOURS[self.status]


class MigrationBatchStatus(models.TextChoices):
    PLANNED = "planned", "Planned"
    SUBMITTED = "submitted", "Submitted"
    COMPLETING = "completing", "Completing"
    COMPLETED = "completed", "Completed"  # its wave is done: every mailbox in it settled
    REMOVED = "removed", "Removed from the migration service"


MB = MigrationBatchStatus
MIGRATION_BATCH_TRANSITIONS: dict[str, set[str]] = {
    MB.SUBMITTED: {MB.PLANNED},
    MB.COMPLETING: {MB.SUBMITTED},
    # A batch whose completion was never asked for: all its mailboxes failed or rolled back.
    MB.COMPLETED: {MB.SUBMITTED, MB.COMPLETING},
    MB.REMOVED: {MB.COMPLETED},
}


class MigrationBatch(models.Model):
    """A slice of a wave sent to the backend as one migration batch.

    Recorded, with its mailboxes, before the backend is called, so a re-run after a crash sends
    the same batch under the same name instead of a second one.
    """

    wave = models.ForeignKey(Wave, on_delete=models.PROTECT, related_name="batches")
    name = models.CharField(max_length=64, unique=True)
    status = models.CharField(
        max_length=20, choices=MigrationBatchStatus.choices, default=MigrationBatchStatus.PLANNED
    )
    status_changed_at = models.DateTimeField(auto_now_add=True)
    backend_ref = models.CharField(max_length=200, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    completion_requested_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=1000, blank=True)
    # Stopped at the backend while the wave is paused; started again when it resumes.
    stopped = models.BooleanField(default=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DataConsistency(models.TextChoices):
    """Exchange Online's data consistency grade of a move (DataConsistencyScore)."""

    PERFECT = "Perfect", "Perfect"
    GOOD = "Good", "Good"
    INVESTIGATE = "Investigate", "Investigate"
    POOR = "Poor", "Poor"


# Grades whose skipped items must be approved before the move completes (Microsoft: approval is
# required for Investigate and Poor; Poor also calls for Microsoft support).
CONSISTENCY_NEEDS_APPROVAL = {DataConsistency.INVESTIGATE, DataConsistency.POOR}
# A cohort row whose move waits for its skipped items to be approved before it completes.
AWAITING_APPROVAL = Q(
    consistency__in=CONSISTENCY_NEEDS_APPROVAL, skipped_items_approved_at=None
) & ~Q(mailbox_status=MailboxStatus.COMPLETED)
CONSISTENCY_COLOURS = {
    DataConsistency.PERFECT: "green",
    DataConsistency.GOOD: "green",
    DataConsistency.INVESTIGATE: "yellow",
    DataConsistency.POOR: "red",
}


class CohortMailbox(models.Model):
    """A mailbox in a booking's cohort, with its progress through the backend."""

    # booking and batch are served by the (booking, mailbox) and (batch, mailbox) indexes.
    booking = models.ForeignKey(
        Booking, on_delete=models.CASCADE, related_name="cohort", db_index=False
    )
    mailbox = models.ForeignKey(Mailbox, on_delete=models.PROTECT, related_name="cohort_entries")
    # False once the booking is rejected, withdrawn or the mailbox rolled back: kept for history.
    active = models.BooleanField(default=True)
    batch = models.ForeignKey(
        MigrationBatch,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="members",
        db_index=False,
    )
    # Copies kept by waves.services.cohort_transition, so that a wave's counts by status and its
    # bytes read the wave's own rows, not 83,000 mailboxes scattered over a 2.1-million-row table.
    mailbox_status = models.CharField(
        max_length=20, choices=MailboxStatus.choices, default=MailboxStatus.BOOKED
    )
    size_bytes = models.BigIntegerField(default=0, help_text="The mailbox's size when booked.")
    backend_status = models.CharField(max_length=40, blank=True)
    bytes_transferred = models.BigIntegerField(default=0)
    items_transferred = models.BigIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=1000, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    consistency = models.CharField(
        "data consistency", max_length=20, choices=DataConsistency.choices, blank=True
    )
    # Investigate or Poor: the move waits for the central team to approve its skipped items.
    skipped_items_approved_at = models.DateTimeField(null=True, blank=True)
    # No index: only deleting a user looks rows up by it (see MailboxEvent.actor).
    skipped_items_approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["mailbox"], condition=Q(active=True), name="mailbox_in_one_active_booking"
            ),
            models.UniqueConstraint(fields=["booking", "mailbox"], name="mailbox_once_per_booking"),
        ]
        # A batch's members; rows not yet in a batch (every row, when booked) are left out.
        indexes = [
            models.Index(
                fields=["batch", "mailbox"],
                condition=Q(batch__isnull=False),
                name="cohort_batch_members",
            )
        ]

    def __str__(self) -> str:
        return f"{self.mailbox_id} in booking {self.booking_id}"


class WaveEvent(StatusEvent):
    """One change of a wave's status: planned, opened, closed, started, paused, done."""

    wave = models.ForeignKey(Wave, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=20, choices=WaveStatus.choices, blank=True)
    to_status = models.CharField(max_length=20, choices=WaveStatus.choices)

    def __str__(self) -> str:
        return f"{self.wave_id}: {self.from_status or '-'} → {self.to_status}"


class BookingEvent(StatusEvent):
    """One change of a booking's status: submitted, decided, withdrawn, under way, done."""

    booking = models.ForeignKey(Booking, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=20, choices=BookingStatus.choices, blank=True)
    to_status = models.CharField(max_length=20, choices=BookingStatus.choices)

    def __str__(self) -> str:
        return f"{self.booking_id}: {self.from_status or '-'} → {self.to_status}"


class MigrationBatchEvent(StatusEvent):
    """One change of a migration batch's status: when it was sent, completed, removed."""

    batch = models.ForeignKey(MigrationBatch, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=20, choices=MigrationBatchStatus.choices, blank=True)
    to_status = models.CharField(max_length=20, choices=MigrationBatchStatus.choices)

    def __str__(self) -> str:
        return f"{self.batch_id}: {self.from_status or '-'} → {self.to_status}"


class SimulatedBatch(models.Model):
    """Simulator backend state: a migration batch as the simulated Exchange side holds it."""

    name = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    complete_requested_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class SimulatedUser(models.Model):
    """Simulator backend state for one user.

    Only what an operator changes is stored; progress within an attempt is computed on read
    from the attempt's start, the seed and the address, so polling writes nothing.
    """

    batch = models.ForeignKey(SimulatedBatch, on_delete=models.CASCADE, related_name="users")
    address = models.CharField(max_length=254)
    attempt = models.PositiveSmallIntegerField(default=1)
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    removed = models.BooleanField(default=False)
    skipped_items_approved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["batch", "address"], name="simulated_user_once_per_batch"
            )
        ]

    def __str__(self) -> str:
        return f"{self.address} in {self.batch_id}"
