"""Reads of organisations and mailboxes, always through the user's organisation scope."""

from django.db.models import Count, Q, QuerySet
from django.http import Http404

from mailboxes.models import Mailbox, MailboxStatus, Organisation
from portal.auth import Role, role_of


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
    search: str = "",
) -> QuerySet[Mailbox]:
    mailboxes = Mailbox.objects.filter(organisation=organisation)
    if status:
        mailboxes = mailboxes.filter(status=status)
    if recipient_type:
        mailboxes = mailboxes.filter(recipient_type=recipient_type)
    if search:
        mailboxes = mailboxes.filter(
            Q(address__istartswith=search)
            | Q(display_name__icontains=search)
            | Q(upn__istartswith=search)
        )
    return mailboxes.order_by("address")


def mailbox_status_counts(organisation: Organisation) -> dict[str, int]:
    counts = dict(
        Mailbox.objects.filter(organisation=organisation)
        .values_list("status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {status: counts.get(status, 0) for status in MailboxStatus.values}


def mailboxes_for(user) -> QuerySet[Mailbox]:
    if role_of(user) in {Role.CENTRAL_TEAM, Role.HELPDESK}:
        return Mailbox.objects.all()
    return Mailbox.objects.filter(organisation__in=organisations_for(user))


def mailbox_search(query: str, *, limit: int = 20) -> list[Mailbox]:
    """Helpdesk search as you type: an exact address or UPN first, then prefixes and name fragments."""
    query = query.strip()
    if len(query) < 2:
        return []
    lowered = query.lower()
    exact = list(
        Mailbox.objects.select_related("organisation").filter(Q(address=lowered) | Q(upn=lowered))[
            :1
        ]
    )
    if exact:
        return exact
    return list(
        Mailbox.objects.select_related("organisation")
        .filter(
            Q(address__startswith=lowered)
            | Q(upn__startswith=lowered)
            | Q(display_name__icontains=query)
        )
        .order_by("display_name", "address")[:limit]
    )
