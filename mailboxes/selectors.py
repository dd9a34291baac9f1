"""Reads of organisations and mailboxes, always through the user's organisation scope."""

import re
from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import CharField, Count, F, Func, Q, QuerySet, Sum
from django.db.models.lookups import IContains
from django.http import Http404

from mailboxes.models import (
    MAILBOX_SIZE_BOUNDS,
    Mailbox,
    MailboxSize,
    MailboxStatus,
    Organisation,
    StatusCount,
)
from portal.auth import Role, role_of

SEARCH_LIMIT = 20
MIN_FRAGMENT = 3  # a trigram: anything shorter cannot use the name index
NAME_SEPARATORS = re.compile(r"[\s,]+")


class PersonName(Func):
    """A display name up to its first " (": the person, without the organisation NHSmail adds.

    "JOHNSON, Michelle (LEEDS TEACHING HOSPITALS NHS TRUST)" is "JOHNSON, Michelle". Name search
    matches this part only: "ford" then finds FORD and CRAWFORD, not everyone at Oxford or
    Bedford (the organisation is a column of its own). On PostgreSQL the trigram index
    of migration 0007 is built on exactly this expression, upper-cased as `icontains` does; it
    holds a quarter of the trigrams the whole name had and builds in a third of the time.
    """

    output_field = CharField()
    # SQLite: the text before the first " (", or all of it when there is none.
    template = "substr(%(expressions)s, 1, instr(%(expressions)s || ' (', ' (') - 1)"

    def as_postgresql(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler, connection, template="split_part(%(expressions)s, ' (', 1)", **extra_context
        )


def organisations_for(user) -> QuerySet[Organisation]:
    """The organisations a user may see: all for the central team and helpdesk, their own for a lead."""
    role = role_of(user)
    if role in {Role.CENTRAL_TEAM, Role.HELPDESK}:
        return Organisation.objects.all()
    if role == Role.IT_LEAD:
        return Organisation.objects.filter(leads=user)
    return Organisation.objects.none()


def organisation_for(user, code: str) -> Organisation:
    """One organisation in the user's scope; 404 otherwise, so others' codes are not confirmed."""
    try:
        return organisations_for(user).get(code=code)
    except Organisation.DoesNotExist:
        raise Http404("No organisation with that code in your scope.") from None


def mailbox_list(
    *,
    organisation: Organisation,
    status: str = "",
    recipient_type: str = "",
    size: str = "",
    search: str = "",
) -> QuerySet[Mailbox]:
    mailboxes = Mailbox.objects.filter(organisation=organisation)
    if status:
        mailboxes = mailboxes.filter(status=status)
    if recipient_type:
        mailboxes = mailboxes.filter(recipient_type=recipient_type)
    if size:
        mailboxes = mailboxes.filter(mailbox_size_q(size))
    if search.strip():
        mailboxes = mailboxes.filter(mailbox_search_q(search))
    return mailboxes.order_by("address")


def mailbox_search_q(search: str) -> Q:
    """Matches for a filter box: the start of the address or UPN, or the words of the name.

    Addresses and UPNs are stored in lower case (the import lowers them), so a case-sensitive
    prefix on the lowered input finds them through an index; Django's `istartswith` would wrap
    the column in UPPER() and read every row. Each word of the name (3 characters or more
    somewhere in the query) must appear in the person's part of the display name (PersonName),
    in any order: "michelle johnson" finds "JOHNSON, Michelle (…)". On PostgreSQL that goes
    through its trigram index (migration 0007); shorter queries match addresses and UPNs only,
    as a 2-letter fragment has no trigram and would read every row.
    """
    search = search.strip()
    lowered = search.lower()
    match = Q(address__startswith=lowered) | Q(upn__startswith=lowered)
    words = _name_words(search)
    if words:
        match |= _name_q(words)
    return match


def _name_words(search: str) -> list[str]:
    """The words of a name query, or none if it is an address or has no word of 3 characters."""
    if "@" in search:
        return []
    words = [word for word in NAME_SEPARATORS.split(search) if word]
    return words if any(len(word) >= MIN_FRAGMENT for word in words) else []


def _name_q(words: list[str]) -> Q:
    match = Q()
    for word in words:
        match &= Q(IContains(PersonName(F("display_name")), word))
    return match


def mailbox_size_q(size: MailboxSize | str) -> Q:
    """Mailboxes still to move (not completed) whose size is in the band `size` names."""
    low, high = MAILBOX_SIZE_BOUNDS[MailboxSize(size)]
    match = Q(size_bytes__gt=low) & ~Q(status=MailboxStatus.COMPLETED)
    return match & Q(size_bytes__lte=high) if high is not None else match


def mailbox_counts(organisations: QuerySet[Organisation] | list[int]) -> dict[int, int]:
    """Mailboxes of each of these organisations, by organisation id: one grouped query."""
    return dict(
        Mailbox.objects.filter(organisation__in=organisations)
        .values_list("organisation_id")
        .annotate(n=Count("pk"))
        .order_by()
    )


@dataclass(frozen=True)
class Readiness:
    """An organisation's mailboxes: how many in each status, and what stands in their way."""

    counts: dict[str, int]  # every status, 0 where none
    size_bytes: int
    large: int  # still to move, over 100 GB and up to 200 GB: check their licences
    too_large: int  # still to move, over 200 GB: Exchange Online does not move them

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def mailbox_readiness(organisation: Organisation) -> Readiness:
    """One pass over the organisation's mailboxes (50,000 for the largest trust)."""
    rows = (
        Mailbox.objects.filter(organisation=organisation)
        .values_list("status")
        .annotate(
            n=Count("pk"),
            size=Sum("size_bytes"),
            large=Count("pk", filter=mailbox_size_q(MailboxSize.LARGE)),
            too_large=Count("pk", filter=mailbox_size_q(MailboxSize.TOO_LARGE)),
        )
        .order_by()
    )
    counts = dict.fromkeys(MailboxStatus.values, 0)
    size_bytes = large = too_large = 0
    for status, n, size, over_limit, over_max in rows:
        counts[status] = n
        size_bytes += size or 0
        large += over_limit
        too_large += over_max
    return Readiness(counts, size_bytes, large, too_large)


def mailboxes_for(user) -> QuerySet[Mailbox]:
    if role_of(user) in {Role.CENTRAL_TEAM, Role.HELPDESK}:
        return Mailbox.objects.all()
    return Mailbox.objects.filter(organisation__in=organisations_for(user))


def mailbox_search(query: str, *, limit: int = SEARCH_LIMIT) -> list[Mailbox]:
    """Helpdesk search as you type: an exact address or UPN, else prefixes, then name matches.

    At most four queries, each answered from an index at 2.1 million mailboxes (see
    docs/performance.md):
    1. an exact address or UPN (the unique indexes): that mailbox alone;
    2. the first `limit` addresses starting with the query, in address order, then
    3. the same for UPNs: each read in order from an index, so a prefix shared by 100,000
       mailboxes costs no more than a rare one;
    4. up to `limit` mailboxes whose person's name holds every word of the query (3 characters
       or more; not for a query with "@"): the first the database finds, in no order asked for
       (ordering all 30,000 matches of "nie" to take 20 cost 125 ms), shown by name.
    Results keep that order, without repeats, up to `limit`.
    """
    query = query.strip()
    if len(query) < 2:
        return []
    lowered = query.lower()
    mailboxes = Mailbox.objects.select_related("organisation")
    exact = list(mailboxes.filter(Q(address=lowered) | Q(upn=lowered))[:1])
    if exact:
        return exact
    found: dict[int, Mailbox] = {}
    for field in ("address", "upn"):
        for mailbox in _prefix_matches(mailboxes, field, lowered, limit):
            found.setdefault(mailbox.pk, mailbox)
    words = _name_words(query)
    if words and len(found) < limit:
        by_name = list(mailboxes.filter(_name_q(words)).order_by()[:limit])
        by_name.sort(key=lambda m: (m.display_name.lower(), m.address))
        for mailbox in by_name:
            found.setdefault(mailbox.pk, mailbox)
    return list(found.values())[:limit]


def _prefix_matches(mailboxes: QuerySet[Mailbox], field: str, prefix: str, limit: int):
    """The first `limit` mailboxes whose `field` starts with `prefix`, in code-point order.

    Read in order from the field's unique index, so the first rows of a prefix shared by 100,000
    mailboxes come without a sort. On PostgreSQL the column's collation is "C" (migration 0005),
    so the index serves LIKE 'prefix%' as a range itself (a second, explicit range would only
    spoil the planner's estimate of how many rows match). SQLite's LIKE ignores case and uses no
    index: there the prefix is also asked for as the range [prefix, next prefix), which its
    index serves in byte order; the LIKE is kept as the check.
    """
    mailboxes = mailboxes.filter(**{f"{field}__startswith": prefix})
    if connection.vendor != "postgresql":
        mailboxes = mailboxes.filter(**{f"{field}__gte": prefix})
        upper = _after_prefix(prefix)
        if upper is not None:
            mailboxes = mailboxes.filter(**{f"{field}__lt": upper})
    return list(mailboxes.order_by(field)[:limit])


def _after_prefix(prefix: str) -> str | None:
    """The least string above every string starting with `prefix`, in code-point order."""
    while prefix:
        code = ord(prefix[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored: skip past them
            code = 0xE000
        if code <= 0x10FFFF:
            return prefix[:-1] + chr(code)
        prefix = prefix[:-1]
    return None


@dataclass(frozen=True)
class ProgrammeProgress:
    """Every mailbox of the programme by status, as last counted by a worker."""

    counts: dict[str, int]  # every status, 0 where none
    counted_at: datetime

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def migrated(self) -> int:
        return self.counts[MailboxStatus.COMPLETED]

    @property
    def percent_migrated(self) -> str:
        return f"{100 * self.migrated / self.total:.1f}" if self.total else "0.0"


def programme_progress() -> ProgrammeProgress | None:
    """The last count of the programme's mailboxes (`services.programme_count`), or None if
    there has been none."""
    rows = list(StatusCount.objects.all())
    if not rows:
        return None
    counts = dict.fromkeys(MailboxStatus.values, 0)
    counts.update((row.status, row.mailboxes) for row in rows)
    return ProgrammeProgress(counts, min(row.counted_at for row in rows))
