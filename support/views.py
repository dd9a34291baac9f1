from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from mailboxes.selectors import SEARCH_LIMIT, mailbox_search, mailboxes_for
from portal.auth import Role, role_required
from support.forms import CallForm, SearchForm
from support.models import HelpdeskCall
from support.selectors import calls_to_follow_up, mailbox_story
from support.services import CallAlreadyResolved, helpdesk_call_record, helpdesk_call_resolve

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


CALLS_PER_PAGE = 50


@require_GET
@role_required(*LOOKUP_ROLES)
def calls(request: HttpRequest) -> HttpResponse:
    """Calls not yet resolved, oldest first, each with a button to mark it resolved."""
    page = Paginator(calls_to_follow_up(), CALLS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "support/calls.html", {"page_obj": page})


@require_POST
@role_required(*LOOKUP_ROLES)
def resolve_call(request: HttpRequest, call_id: int) -> HttpResponse:
    try:
        call = helpdesk_call_resolve(call_id=call_id, actor=request.user)
    except HelpdeskCall.DoesNotExist:
        raise Http404("No such call.") from None
    except CallAlreadyResolved as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(request, f"Call about {call.mailbox.address} marked resolved.")
    page = request.POST.get("page", "")
    url = reverse("support:calls")
    return redirect(f"{url}?page={page}" if page.isdigit() else url)
