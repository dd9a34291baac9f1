from datetime import UTC

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods

from mailboxes.forms import ImportForm, MailboxFilterForm
from mailboxes.importing import (
    MAILBOX_COLUMNS,
    UPLOAD_TOO_LARGE,
    import_run_start,
    upload_declared_too_large,
    upload_save,
)
from mailboxes.models import (
    ImportRun,
    ImportStatus,
    Mailbox,
    MailboxSize,
    MailboxStatus,
    mailbox_status_tags,
)
from mailboxes.selectors import (
    mailbox_list as select_mailboxes,
)
from mailboxes.selectors import (
    mailbox_readiness,
    organisation_for,
    organisations_for,
)
from portal.auth import Role, role_required
from portal.lib.downloads import csv_download, download_refused, spreadsheet_text

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
    form, mailboxes = _filtered(request, organisation)
    mailboxes = mailboxes.only("address", "display_name", "recipient_type", "size_bytes", "status")
    page = Paginator(mailboxes, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    download = query.copy()
    download["organisation"] = organisation.code
    readiness = mailbox_readiness(organisation)
    context = {
        "organisation": organisation,
        "organisations": organisations.order_by("name")[:50],
        "form": form,
        "page_obj": page,
        "querystring": query.urlencode(),
        "csv_url": f"{reverse('mailboxes:list_csv')}?{download.urlencode()}",
        "counts": mailbox_status_tags(readiness.counts),
        "readiness": readiness,
        "sizes": MailboxSize,
    }
    template = "mailboxes/list.html#results" if request.htmx else "mailboxes/list.html"
    return render(request, template, context)


def _filtered(request: HttpRequest, organisation) -> tuple[MailboxFilterForm, QuerySet[Mailbox]]:
    form = MailboxFilterForm(request.GET)
    filters = form.cleaned_data if form.is_valid() else {}
    mailboxes = select_mailboxes(
        organisation=organisation,
        status=filters.get("status", ""),
        recipient_type=filters.get("recipient_type", ""),
        size=filters.get("size", ""),
        search=filters.get("q", ""),
    )
    return form, mailboxes


# The import's columns first, in its order, so that a download can be edited and imported again
# (the import ignores the two after them).
CSV_HEADER = (*(column.name for column in MAILBOX_COLUMNS), "MigrationStatus", "StatusChangedAtUTC")
# The model fields of the import's columns before OrganisationCode, its last.
FIELDS_BEFORE_CODE = tuple(column.key for column in MAILBOX_COLUMNS[:-1])


@require_GET
@role_required(Role.IT_LEAD, Role.CENTRAL_TEAM)
def mailbox_list_csv(request: HttpRequest) -> HttpResponse:
    """The organisation's mailboxes, filtered as on its page, as CSV: every one, not a page."""
    code = request.GET.get("organisation", "").strip()
    if not code:
        return HttpResponse(
            "No CSV: say whose mailboxes, as ?organisation=CODE (the organisation's ODS code).",
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    organisation = organisation_for(request.user, code)
    form, mailboxes = _filtered(request, organisation)
    if form.errors:
        return download_refused(form)
    labels = {status.value: status.label for status in MailboxStatus}
    code = spreadsheet_text(organisation.code)
    rows = (
        (
            spreadsheet_text(address),
            spreadsheet_text(upn),
            spreadsheet_text(name),
            kind,
            size,
            items,
            code,
            labels[status],
            changed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        )
        for address, upn, name, kind, size, items, status, changed in mailboxes.values_list(
            *FIELDS_BEFORE_CODE, "status", "status_changed_at"
        ).iterator(chunk_size=5000)
    )
    return csv_download(f"mailboxes-{slugify(organisation.code)}.csv", CSV_HEADER, rows)


# Imports, for the central team ------------------------------------------------------------------

CENTRAL = Role.CENTRAL_TEAM
IMPORT_FINISHED = {ImportStatus.DONE, ImportStatus.REFUSED, ImportStatus.FAILED}
IMPORTS_LISTED = 25
PROBLEMS_PER_PAGE = 100


@csrf_exempt  # checked by _import_upload, after the size of the request has been looked at
@require_http_methods(["GET", "POST"])
@role_required(CENTRAL)
def import_list(request: HttpRequest) -> HttpResponse:
    """Recent imports, and the form to upload a file and start one."""
    if request.method == "POST":
        if upload_declared_too_large(request.META):
            form = ImportForm()
            form.refuse_file(UPLOAD_TOO_LARGE)
            return _import_list_page(request, form, status=400)
        return _import_upload(request)
    return _import_list_page(request, ImportForm())


@csrf_protect
def _import_upload(request: HttpRequest) -> HttpResponse:
    form = ImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return _import_list_page(request, form, status=400)
    uploaded = form.cleaned_data["file"]
    run = import_run_start(
        kind=form.cleaned_data["kind"],
        path=str(upload_save(uploaded)),
        skip_bad_rows=form.cleaned_data["skip_bad_rows"],
        created_by=request.user,
    )
    messages.success(
        request,
        f"{uploaded.name} uploaded. It is imported in the background: this page shows how far"
        " it has got, then what it found.",
    )
    return redirect("mailboxes:import_detail", pk=run.pk)


def _import_list_page(request: HttpRequest, form: ImportForm, *, status: int = 200):
    runs = list(ImportRun.objects.select_related("created_by")[:IMPORTS_LISTED])
    context = {"form": form, "runs": runs}
    return render(request, "mailboxes/imports.html", context, status=status)


@require_GET
@role_required(CENTRAL)
def import_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One import: its progress while it runs (polled by htmx), then its report."""
    run = get_object_or_404(ImportRun.objects.select_related("created_by"), pk=pk)
    finished = run.status in IMPORT_FINISHED
    problems = Paginator(run.problems, PROBLEMS_PER_PAGE).get_page(request.GET.get("page"))
    counts = [
        ("Rows read", run.rows_read),
        ("Created", run.created),
        ("Updated", run.updated),
        ("Unchanged", run.unchanged),
        ("Bad rows skipped", run.skipped) if run.skip_bad_rows else ("Bad rows", run.bad_rows),
    ]
    context = {
        "run": run,
        "run_counts": counts,
        "finished": finished,
        "page_obj": problems,
        "problems_hidden": run.problem_count - len(run.problems),
        "events": list(run.events.all()),
        "querystring": "",
    }
    if not request.htmx:
        return render(request, "mailboxes/import_detail.html", context)
    response = render(request, "mailboxes/import_detail.html#status", context)
    if finished:
        response.status_code = 286  # htmx: stop polling
    return response
