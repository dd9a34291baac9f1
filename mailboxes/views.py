from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from mailboxes.forms import MailboxFilterForm
from mailboxes.models import MAILBOX_STATUS_COLOURS, MailboxStatus
from mailboxes.selectors import (
    mailbox_list as select_mailboxes,
)
from mailboxes.selectors import (
    mailbox_status_counts,
    organisation_for,
    organisations_for,
)
from portal.auth import Role, role_required

PAGE_SIZE = 50


@require_GET
@role_required(Role.IT_LEAD, Role.CENTRAL_TEAM)
def mailbox_list(request: HttpRequest) -> HttpResponse:
    """An organisation's mailboxes, filtered and paged; htmx requests get only the results."""
    organisations = organisations_for(request.user)
    code = request.GET.get("organisation", "").strip()
    if not code:
        first = organisations.order_by("name").first()
        if first is None or organisations.count() > 50:
            return render(request, "mailboxes/choose_organisation.html")
        code = first.code
    organisation = organisation_for(request.user, code)
    form = MailboxFilterForm(request.GET)
    filters = form.cleaned_data if form.is_valid() else {}
    mailboxes = select_mailboxes(
        organisation=organisation,
        status=filters.get("status", ""),
        recipient_type=filters.get("recipient_type", ""),
        search=filters.get("q", ""),
    ).only("address", "display_name", "recipient_type", "size_bytes", "status")
    page = Paginator(mailboxes, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    counts = mailbox_status_counts(organisation)
    context = {
        "organisation": organisation,
        "organisations": organisations.order_by("name")[:50],
        "form": form,
        "page_obj": page,
        "querystring": query.urlencode(),
        "counts": [
            (MailboxStatus(s).label, MAILBOX_STATUS_COLOURS[s], n) for s, n in counts.items() if n
        ],
        "total": sum(counts.values()),
    }
    template = "mailboxes/list.html#results" if request.htmx else "mailboxes/list.html"
    return render(request, template, context)
