from collections.abc import Mapping
from pathlib import PurePath

from django.conf import settings
from django.db import models
from django.utils import timezone


class OrganisationType(models.TextChoices):
    TRUST = "trust", "Trust"
    GP_PRACTICE = "gp_practice", "GP practice"
    ICB = "icb", "Integrated care board"
    SOCIAL_CARE = "social_care", "Social care"
    OTHER = "other", "Other"


class Organisation(models.Model):
    code = models.CharField("ODS code", max_length=12, unique=True)
    name = models.CharField(max_length=200)
    type = models.CharField(max_length=20, choices=OrganisationType.choices)
    region = models.CharField(max_length=100, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    leads = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="led_organisations",
        help_text="Local IT leads who see and book this organisation's mailboxes.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


GB = 1024**3
# Exchange Online's limits on a mailbox moved as it is.
LARGE_MAILBOX_BYTES = 100 * GB  # the primary mailbox quota on most Exchange Online plans
MAX_MAILBOX_BYTES = 200 * GB  # Exchange Online does not support moving larger mailboxes


class MailboxSize(models.TextChoices):
    """Sizes that stand in the way of a move, as a filter of the mailbox lists."""

    LARGE = "over_100_gb", "100 GB to 200 GB: check the licence"
    TOO_LARGE = "over_200_gb", "Over 200 GB: too large to move"


MAILBOX_SIZE_BOUNDS = {
    MailboxSize.LARGE: (LARGE_MAILBOX_BYTES, MAX_MAILBOX_BYTES),
    MailboxSize.TOO_LARGE: (MAX_MAILBOX_BYTES, None),
}


class RecipientType(models.TextChoices):
    USER = "UserMailbox", "User"
    SHARED = "SharedMailbox", "Shared"
    ROOM = "RoomMailbox", "Room"
    EQUIPMENT = "EquipmentMailbox", "Equipment"


class MailboxStatus(models.TextChoices):
    NOT_SCHEDULED = "not_scheduled", "Not scheduled"
    BOOKED = "booked", "Booked"
    SCHEDULED = "scheduled", "Scheduled"
    QUEUED = "queued", "Queued"
    SYNCING = "syncing", "Syncing"
    SYNCED = "synced", "Synced"
    COMPLETING = "completing", "Completing"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Needs attention"
    STOPPED = "stopped", "Paused"
    ROLLED_BACK = "rolled_back", "Rolled back"


S = MailboxStatus
# Statuses of a mailbox whose move is under way at the backend.
MAILBOX_IN_FLIGHT = {S.QUEUED, S.SYNCING, S.SYNCED, S.COMPLETING, S.STOPPED}
# Allowed predecessors of each status: the one place that says which moves are legal.
# Among the in-flight statuses the backend leads: a poll may see any step, or skip some. A
# batch restart (Exchange's Start-MigrationBatch) retries every failed user in it, so a mailbox
# that needs attention may be seen moving again, and the portal follows.
MAILBOX_TRANSITIONS: dict[str, set[str]] = {
    S.BOOKED: {S.NOT_SCHEDULED, S.ROLLED_BACK},
    S.NOT_SCHEDULED: {S.BOOKED, S.SCHEDULED},  # booking rejected or withdrawn
    S.SCHEDULED: {S.BOOKED},  # booking approved
    # submitted, retried (from queued too: an attempt that failed before it began), resumed
    S.QUEUED: {S.SCHEDULED, S.QUEUED, S.FAILED, S.SYNCING, S.SYNCED, S.STOPPED},
    S.SYNCING: {S.QUEUED, S.SYNCED, S.STOPPED, S.FAILED},
    S.SYNCED: {S.QUEUED, S.SYNCING, S.STOPPED, S.FAILED},
    S.COMPLETING: {S.QUEUED, S.SYNCING, S.SYNCED, S.FAILED},
    S.COMPLETED: {S.QUEUED, S.SYNCING, S.SYNCED, S.COMPLETING, S.FAILED},
    S.FAILED: MAILBOX_IN_FLIGHT,
    S.STOPPED: {S.QUEUED, S.SYNCING, S.SYNCED},
    S.ROLLED_BACK: {S.QUEUED, S.SYNCING, S.SYNCED, S.STOPPED, S.FAILED},
}
MAILBOX_STATUS_COLOURS = {
    S.NOT_SCHEDULED: "grey",
    S.BOOKED: "purple",
    S.SCHEDULED: "blue",
    S.QUEUED: "aqua-green",
    S.SYNCING: "aqua-green",
    S.SYNCED: "aqua-green",
    S.COMPLETING: "yellow",
    S.COMPLETED: "green",
    S.FAILED: "red",
    S.STOPPED: "orange",
    S.ROLLED_BACK: "grey",
}


def mailbox_status_tags(counts: Mapping[str, int]) -> list[tuple[str, str, int]]:
    """(label, tag colour, number) of each status with mailboxes, in the order given: the rows
    of a page's mailboxes-by-status summary (templates/includes/status_counts.html)."""
    return [(MailboxStatus(s).label, MAILBOX_STATUS_COLOURS[s], n) for s, n in counts.items() if n]


class Mailbox(models.Model):
    address = models.EmailField("primary SMTP address", max_length=254, unique=True)
    upn = models.CharField("user principal name", max_length=254, unique=True)
    display_name = models.CharField(max_length=256)
    recipient_type = models.CharField(max_length=20, choices=RecipientType.choices)
    size_bytes = models.BigIntegerField(default=0)
    item_count = models.BigIntegerField(default=0)
    # Served by the (organisation, address) index below; a second index would only slow writes.
    organisation = models.ForeignKey(
        Organisation, on_delete=models.PROTECT, related_name="mailboxes", db_index=False
    )
    # Deliberately in no index: a status change then rewrites no index entry (PostgreSQL's HOT
    # update, with the free room fillfactor leaves on each page; see docs/performance.md).
    status = models.CharField(
        max_length=20, choices=MailboxStatus.choices, default=MailboxStatus.NOT_SCHEDULED
    )
    status_changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["address"]
        indexes = [models.Index(fields=["organisation", "address"])]
        verbose_name_plural = "mailboxes"

    def __str__(self) -> str:
        return self.address

    @property
    def status_colour(self) -> str:
        return MAILBOX_STATUS_COLOURS[self.status]

    @property
    def size_band(self) -> str:
        """The MailboxSize band of a mailbox still to move that is too large to move as it is,
        or "" (the same bands as `mailboxes.selectors.mailbox_size_q`)."""
        if self.status == MailboxStatus.COMPLETED:
            return ""
        for band, (low, high) in MAILBOX_SIZE_BOUNDS.items():
            if self.size_bytes > low and (high is None or self.size_bytes <= high):
                return band
        return ""


class StatusCount(models.Model):
    """How many mailboxes were in one status when last counted: the programme's progress.

    Counted by a worker every few minutes (`mailboxes.services.programme_count`), because
    counting 2.1 million mailboxes by status reads them all (260 ms), too slow to do each time
    the central team's overview is shown, and a status kept in no index (see `Mailbox.status`).
    """

    status = models.CharField(max_length=20, choices=MailboxStatus.choices, primary_key=True)
    mailboxes = models.BigIntegerField()
    counted_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.get_status_display()}: {self.mailboxes:,}"


class StatusEvent(models.Model):
    """What every event row holds: one status change, when and by whom, and why.

    `portal.lib.transitions.transition_rows` writes these fields; each event model adds the
    row it belongs to and `from_status` / `to_status` with its own choices.
    """

    at = models.DateTimeField()
    # No index: only deleting a user looks events up by actor, while every one of millions of
    # status changes would write an entry.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    actor_label = models.CharField(max_length=150, help_text="Who, in words: a name or 'worker'.")
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        abstract = True
        ordering = ["at", "id"]


class MailboxEvent(StatusEvent):
    """One change of a mailbox's migration status: the helpdesk timeline."""

    # Both read through the (mailbox, at) index: a timeline is always one mailbox's.
    mailbox = models.ForeignKey(
        Mailbox, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    from_status = models.CharField(max_length=20, choices=MailboxStatus.choices, blank=True)
    to_status = models.CharField(max_length=20, choices=MailboxStatus.choices)

    class Meta(StatusEvent.Meta):
        indexes = [models.Index(fields=["mailbox", "at"])]

    def __str__(self) -> str:
        return f"{self.mailbox_id}: {self.from_status or '-'} → {self.to_status}"


class ImportKind(models.TextChoices):
    ORGANISATIONS = "organisations", "Organisations"
    MAILBOXES = "mailboxes", "Mailboxes"


class ImportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    REFUSED = "refused", "Refused"
    FAILED = "failed", "Failed"


# Which status an import run may move to from which. RUNNING from RUNNING: its worker stopped,
# the import rolled back, and another worker runs it again.
IMPORT_RUN_TRANSITIONS: dict[str, set[str]] = {
    ImportStatus.RUNNING: {ImportStatus.QUEUED, ImportStatus.RUNNING},
    ImportStatus.DONE: {ImportStatus.RUNNING},
    ImportStatus.REFUSED: {ImportStatus.RUNNING},
    ImportStatus.FAILED: {ImportStatus.RUNNING},
}
IMPORT_STATUS_COLOURS = {
    ImportStatus.QUEUED: "grey",
    ImportStatus.RUNNING: "blue",
    ImportStatus.DONE: "green",
    ImportStatus.REFUSED: "red",
    ImportStatus.FAILED: "red",
}


class ImportRun(models.Model):
    """One bulk import of a CSV file in the background: its progress while it runs, then its report.

    Written only by `mailboxes.importing` (`import_run_start`, `import_run_execute`); its status
    only through `import_run_transition`, which records each change as an ImportRunEvent.
    """

    kind = models.CharField(max_length=20, choices=ImportKind.choices)
    status = models.CharField(
        max_length=20, choices=ImportStatus.choices, default=ImportStatus.QUEUED
    )
    status_changed_at = models.DateTimeField(default=timezone.now)
    path = models.CharField(max_length=1000, help_text="The file on the worker's disk.")
    skip_bad_rows = models.BooleanField(default=False)
    rows_total = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="An estimate from the file's line count, for progress."
    )
    rows_read = models.PositiveBigIntegerField(default=0)
    created = models.PositiveBigIntegerField(default=0)
    updated = models.PositiveBigIntegerField(default=0)
    unchanged = models.PositiveBigIntegerField(default=0)
    skipped = models.PositiveBigIntegerField(default=0)
    bad_rows = models.PositiveBigIntegerField(default=0)
    problem_count = models.PositiveBigIntegerField(default=0)
    problems = models.JSONField(
        default=list,
        blank=True,
        help_text="The first problems found (line, column, value, reason); problem_count has all.",
    )
    error = models.TextField(blank=True, help_text="Why the whole file was refused, or failed.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} import {self.pk} ({self.status})"

    @property
    def file_name(self) -> str:
        """The name of the file, as uploaded or given."""
        return PurePath(self.path).name

    @property
    def status_colour(self) -> str:
        return IMPORT_STATUS_COLOURS[self.status]

    @property
    def percent_done(self) -> int | None:
        """Rows read as a share of the estimated total, for a progress bar; None if unknown."""
        if self.status in {ImportStatus.DONE, ImportStatus.REFUSED}:
            return 100
        if not self.rows_total:
            return None
        return min(99, self.rows_read * 100 // self.rows_total)


class ImportRunEvent(StatusEvent):
    """One change of an import run's status: queued by whom, run by a worker, run again, done."""

    run = models.ForeignKey(ImportRun, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=20, choices=ImportStatus.choices, blank=True)
    to_status = models.CharField(max_length=20, choices=ImportStatus.choices)

    def __str__(self) -> str:
        return f"{self.run_id}: {self.from_status or 'new'} → {self.to_status}"
