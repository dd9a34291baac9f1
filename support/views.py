from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from mailboxes.selectors import SEARCH_LIMIT, mailbox_search, mailboxes_for
from portal.auth import Role, role_required
from support.forms import CallForm, SearchForm
from support.selectors import mailbox_story
from support.services import helpdesk_call_record

LOOKUP_ROLES = (Role.HELPDESK, Role.CENTRAL_TEAM)


@require_GET
@role_required(*LOOKUP_ROLES)
def search(request: HttpRequest) -> HttpResponse:
    form = SearchForm(request.GET)
    query = form.cleaned_data["q"] if form.is_valid() else ""
    # One more than is shown, to say when there are more than the page lists.
    results = mailbox_search(query, limit=SEARCH_LIMIT + 1)
    context = {
        "query": query,
        "results": results[:SEARCH_LIMIT],
        "more": len(results) > SEARCH_LIMIT,
        "limit": SEARCH_LIMIT,
        "errors": form.errors.get("q"),
    }
    template = "support/search.html#results" if request.htmx else "support/search.html"
    # htmx swaps in only a 2xx answer: as you type, the reason comes as one.
    status = 400 if form.errors and not request.htmx else 200
    return render(request, template, context, status=status)


@require_GET
@role_required(*LOOKUP_ROLES, Role.IT_LEAD)
def mailbox_detail(request: HttpRequest, mailbox_id: int) -> HttpResponse:
    mailbox = get_object_or_404(
        mailboxes_for(request.user).select_related("organisation"), pk=mailbox_id
    )
    return render(request, "support/mailbox.html", {**mailbox_story(mailbox), "form": CallForm()})


@require_POST
@role_required(*LOOKUP_ROLES)
def record_call(request: HttpRequest, mailbox_id: int) -> HttpResponse:
    mailbox = get_object_or_404(
        mailboxes_for(request.user).select_related("organisation"), pk=mailbox_id
    )
    form = CallForm(request.POST)
    if not form.is_valid():
        return render(
            request, "support/mailbox.html", {**mailbox_story(mailbox), "form": form}, status=400
        )
    helpdesk_call_record(mailbox=mailbox, recorded_by=request.user, **form.cleaned_data)
    messages.success(request, "Call recorded.")
    return redirect("support:mailbox", mailbox_id=mailbox.pk)
