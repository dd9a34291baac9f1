"""The pre-flight check of a wave: what can be known, before it starts, about moving it.

Run from the wave page by the central team. Each check says what it looked at, so that a pass
is not read as more than it is:
  cohorts      the wave holds approved cohorts (and none still waiting for a decision);
  sizes        our own inventory: mailboxes over 100 GB (the primary mailbox limit on most
               Exchange Online plans) are flagged, over 200 GB (moves unsupported) fail;
  sign-in      the backend signs in now (msal, for Exchange Online);
  endpoint     the migration endpoint batches are created on answers (Get-MigrationEndpoint);
  batches      the tenant's batches and this wave's new ones fit Exchange's 100 per tenant;
  recipients   the wave's mailboxes are mail users at the target, ready to move: all of them
               in a small wave, a random sample of RECIPIENT_SAMPLE in a large one.
Nothing is stored: the checks are run and shown.
"""

from dataclasses import dataclass

from django.db.models import Max, QuerySet
from django.template.defaultfilters import pluralize

from mailboxes.models import GB, LARGE_MAILBOX_BYTES, MAX_MAILBOX_BYTES
from waves.backends import TENANT_MAX_BATCHES, BackendError, MigrationBackend, get_backend
from waves.models import BookingStatus, CohortMailbox, Wave, WaveStatus
from waves.transfers import wave_batch_names

# A pre-flight check is for a wave that has not started.
PREFLIGHT_STATUSES = {WaveStatus.PLANNED, WaveStatus.OPEN, WaveStatus.CLOSED}
RECIPIENT_SAMPLE = 200  # addresses looked up at the target per run (10 calls to Exchange)
LISTED = 5  # addresses named in a check's detail
READY_RECIPIENT_TYPES = {"MailUser"}  # a mailbox still on the old platform, synced to the target

SIGN_IN = "Sign-in to the migration service"
ENDPOINT = "Migration endpoint"
BATCHES = "Room for migration batches"
RECIPIENTS = "Mailboxes ready to move"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    warning: bool = False  # passed, with something to look at before the wave starts

    @property
    def outcome(self) -> str:
        return "Fail" if not self.ok else "Warning" if self.warning else "Pass"

    @property
    def colour(self) -> str:
        return "red" if not self.ok else "yellow" if self.warning else "green"


def wave_preflight(
    wave: Wave, backend: MigrationBackend | None = None, *, sample: int = RECIPIENT_SAMPLE
) -> list[Check]:
    entries = CohortMailbox.objects.filter(
        booking__wave=wave,
        active=True,
        booking__status__in=[BookingStatus.APPROVED, BookingStatus.IN_PROGRESS],
    )
    checks = [_cohorts(wave, entries), _sizes(entries)]
    try:
        backend = backend or get_backend()
        checks.append(Check(SIGN_IN, True, backend.check_sign_in()))
    except BackendError as error:
        checks.append(Check(SIGN_IN, False, str(error)))
        not_run = "Not checked: the portal could not sign in to the migration service."
        return checks + [Check(name, False, not_run) for name in (ENDPOINT, BATCHES, RECIPIENTS)]
    for check in (_endpoint, _batches, _recipients):
        checks.append(check(wave, entries, backend, sample))
    return checks


def _cohorts(wave: Wave, entries: QuerySet[CohortMailbox]) -> Check:
    name = "Approved cohorts"
    cohorts = entries.values("booking").distinct().count()
    mailboxes = entries.count()
    waiting = wave.bookings.filter(status=BookingStatus.SUBMITTED).count()
    if not cohorts:
        return Check(name, False, "The wave holds no approved cohort: there is nothing to move.")
    detail = f"{cohorts:,} approved cohort{pluralize(cohorts)}, {mailboxes:,} mailboxes."
    if waiting:
        detail += (
            f" {waiting:,} booking{pluralize(waiting)} still wait{pluralize(waiting, 's,')} for "
            "a decision and will not move unless approved before the start."
        )
    return Check(name, True, detail, warning=bool(waiting))


def _listed(rows: list[tuple[str, int]], total: int) -> str:
    named = ", ".join(f"{address} ({size / GB:,.1f} GB)" for address, size in rows)
    return named + (f" and {total - len(rows):,} more" if total > len(rows) else "")


def _sizes(entries: QuerySet[CohortMailbox]) -> Check:
    name = "Mailbox sizes"

    def over(low: int, high: int | None = None):
        found = entries.filter(mailbox__size_bytes__gt=low)
        if high is not None:
            found = found.filter(mailbox__size_bytes__lte=high)
        found = found.order_by("-mailbox__size_bytes", "mailbox__address")
        rows = list(found.values_list("mailbox__address", "mailbox__size_bytes")[:LISTED])
        return rows, (found.count() if len(rows) == LISTED else len(rows))

    unsupported, unsupported_count = over(MAX_MAILBOX_BYTES)
    large, large_count = over(LARGE_MAILBOX_BYTES, MAX_MAILBOX_BYTES)
    parts = []
    if unsupported_count:
        parts.append(
            f"{unsupported_count:,} mailbox{pluralize(unsupported_count, 'es')} over 200 GB, "
            f"which Exchange Online does not move: {_listed(unsupported, unsupported_count)}. "
            "Reduce them, or take them out of the wave."
        )
    if large_count:
        parts.append(
            f"{large_count:,} mailbox{pluralize(large_count, 'es')} over 100 GB, the primary "
            f"mailbox limit on most plans: {_listed(large, large_count)}. Check their licences "
            "and archives before the wave."
        )
    if parts:
        return Check(name, not unsupported_count, " ".join(parts), warning=True)
    largest = entries.aggregate(largest=Max("mailbox__size_bytes"))["largest"] or 0
    return Check(
        name,
        True,
        f"No mailbox is over 100 GB (from the portal's inventory; the largest is "
        f"{largest / GB:,.1f} GB).",
    )


def _endpoint(wave, entries, backend: MigrationBackend, sample: int) -> Check:
    try:
        return Check(ENDPOINT, True, backend.check_endpoint())
    except BackendError as error:
        return Check(ENDPOINT, False, str(error))


def _batches(wave: Wave, entries, backend: MigrationBackend, sample: int) -> Check:
    try:
        existing = set(backend.batch_names())
    except BackendError as error:
        return Check(BATCHES, False, str(error))
    names = wave_batch_names(wave)
    adding = len(set(names) - existing)
    total = len(existing) + adding
    detail = (
        f"The tenant holds {len(existing):,} migration batch{pluralize(len(existing), 'es')}; "
        f"this wave adds {adding:,}: {total:,} of the {TENANT_MAX_BATCHES} a tenant may hold."
    )
    if total > TENANT_MAX_BATCHES:
        return Check(
            BATCHES,
            False,
            f"{detail} Remove finished batches (Remove-MigrationBatch), or lower "
            "PORTAL_WAVE_MAX_BATCHES.",
        )
    return Check(BATCHES, True, detail)


def _recipients(wave, entries: QuerySet[CohortMailbox], backend, sample: int) -> Check:
    total = entries.count()
    if not total:
        return Check(RECIPIENTS, True, "No mailbox to look up.", warning=True)
    chosen = entries.order_by("?") if total > sample else entries.order_by("mailbox__address")
    addresses = list(chosen.values_list("mailbox__address", flat=True)[:sample])
    try:
        found = backend.find_recipients(addresses)
    except BackendError as error:
        return Check(RECIPIENTS, False, str(error))
    missing = [a for a in addresses if a.lower() not in found]
    moved = [a for a in addresses if found.get(a.lower()) == "UserMailbox"]
    other = [
        a
        for a in addresses
        if a.lower() in found and found[a.lower()] not in READY_RECIPIENT_TYPES | {"UserMailbox"}
    ]
    if total > len(addresses):
        looked = f"Looked up {len(addresses):,} of the {total:,} mailboxes, chosen at random"
    else:
        looked = f"Looked up all {total:,} mailbox{pluralize(total, 'es')}"
    if not (missing or moved or other):
        return Check(
            RECIPIENTS, True, f"{looked}: each is a mail user at the target, ready to move."
        )

    def named(group: list[str]) -> str:
        more = f" and {len(group) - LISTED:,} more" if len(group) > LISTED else ""
        return ", ".join(group[:LISTED]) + more

    problems = []
    if missing:
        problems.append(f"{len(missing):,} not found ({named(missing)})")
    if moved:
        problems.append(f"{len(moved):,} already a mailbox in Exchange Online ({named(moved)})")
    if other:
        kinds = [f"{a}: {found[a.lower()] or 'unknown type'}" for a in other]
        problems.append(f"{len(other):,} not a mail user ({named(kinds)})")
    detail = f"{looked}: {'; '.join(problems)}."
    if total > len(addresses):
        detail += " The mailboxes not looked up may hold more."
    return Check(RECIPIENTS, False, detail)
