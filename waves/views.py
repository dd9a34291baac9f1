from typing import NamedTuple

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from mailboxes.models import (
    Mailbox,
    MailboxSize,
    Organisation,
    mailbox_status_tags,
)
from mailboxes.selectors import (
    mailbox_counts,
    mailbox_search_q,
    mailbox_size_q,
    mailboxes_for,
    organisation_for,
    organisations_for,
    programme_progress,
)
from portal.auth import Role, role_of, role_required
from portal.lib.downloads import csv_download, download_refused, spreadsheet_text
from portal.lib.transitions import TransitionNotAllowed
from portal.templatetags.portal_format import gb
from waves import preflight, services, transfers
from waves.backends import BackendError
from waves.forms import (
    MAX_LISTED,
    BookingForm,
    MailboxFindForm,
    NotBookedFilterForm,
    ReasonForm,
    RejectForm,
    WaveForm,
)
from waves.models import WAVE_ACTIVE, Booking, BookingStatus, CohortMailbox, Wave, WaveStatus
from waves.selectors import (
    booking_queue as select_booking_queue,
)
from waves.selectors import (
    booking_queue_by_wave,
    booking_status_counts,
    bookings_for_organisations,
    organisations_not_booked,
    wave_awaiting_approval,
    wave_awaiting_investigate,
    wave_failures,
    wave_progress,
    waves_open_for_booking,
    waves_with_capacity,
)

CHOOSABLE = 1000  # mailboxes listed to tick; a larger cohort is pasted as addresses
BOOKINGS_PER_PAGE = 50
CENTRAL = Role.CENTRAL_TEAM
LEAD = Role.IT_LEAD
WAVE_ACTIONS = {
    "open": lambda wave, user, reason: services.wave_open(wave=wave, actor=user),
    "close": lambda wave, user, reason: services.wave_close(wave=wave, actor=user),
    "start": lambda wave, user, reason: services.wave_start(wave=wave, actor=user),
    "pause": lambda wave, user, reason: services.wave_pause(wave=wave, actor=user, reason=reason),
    "resume": lambda wave, user, reason: services.wave_resume(wave=wave, actor=user),
    "cancel": lambda wave, user, reason: services.wave_cancel(wave=wave, actor=user, reason=reason),
}
# Which buttons a wave in each status shows.
ACTIONS_BY_STATUS = {
    WaveStatus.PLANNED: ["open", "cancel"],
    WaveStatus.OPEN: ["close", "cancel"],
    WaveStatus.CLOSED: ["start", "open"],
    WaveStatus.RUNNING: ["pause"],
    WaveStatus.PAUSED: ["resume"],
}
HELD_LISTED = 50  # mailboxes waiting for approval of skipped items listed on the wave page


@require_GET
@role_required(CENTRAL)
def wave_list(request: HttpRequest) -> HttpResponse:
    """The central team's overview: the programme's progress, as last counted, and every wave."""
    waves = waves_with_capacity().order_by("starts_at")
    programme = programme_progress()
    context = {
        "waves": waves,
        "programme": programme,
        "programme_counts": mailbox_status_tags(programme.counts) if programme else [],
    }
    return render(request, "waves/list.html", context)


@require_http_methods(["GET", "POST"])
@role_required(CENTRAL)
def wave_create(request: HttpRequest) -> HttpResponse:
    form = WaveForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            wave = services.wave_create(**form.cleaned_data, actor=request.user)
        except services.WaveRefused as refusal:
            form.add_error(None, str(refusal))
            return render(request, "waves/create.html", {"form": form}, status=400)
        messages.success(request, f"{wave.name} created. Open it for booking when it is ready.")
        return redirect("waves:detail", public_id=wave.public_id)
    return render(request, "waves/create.html", {"form": form}, status=400 if form.errors else 200)


def _wave_detail_context(wave: Wave, bookings_page: str | None = None) -> dict:
    progress = wave_progress(wave)
    # The lists are read only when the counts say there is something to list.
    held_count = progress["awaiting_approval"]
    return {
        "wave": wave,
        "progress": progress,
        "failures": wave_failures(wave) if progress["failed"] else [],
        "held": wave_awaiting_approval(wave)[:HELD_LISTED] if held_count else [],
        "held_count": held_count,
        "held_investigate": wave_awaiting_investigate(wave).count() if held_count else 0,
        "active": wave.status in WAVE_ACTIVE,
        "actions": ACTIONS_BY_STATUS.get(wave.status, []),
        "can_preflight": wave.status in preflight.PREFLIGHT_STATUSES,
        # A weekend wave has hundreds of bookings: a page of them at a time.
        "page_obj": Paginator(
            wave.bookings.select_related("organisation").order_by("organisation__name", "pk"),
            BOOKINGS_PER_PAGE,
        ).get_page(bookings_page),
        "querystring": "",
        "batches": wave.batches.all(),
        "events": wave.events.order_by("-at", "-id")[:20],
    }


@require_GET
@role_required(CENTRAL)
def wave_detail(request: HttpRequest, public_id) -> HttpResponse:
    wave = get_object_or_404(waves_with_capacity(), public_id=public_id)
    context = _wave_detail_context(wave, request.GET.get("page"))
    if not request.htmx:
        return render(request, "waves/detail.html", context)
    if request.GET.get("shown") != wave.status:
        # The wave moved on (e.g. to done): redraw the whole page, buttons included.
        return HttpResponse(headers={"HX-Refresh": "true"})
    response = render(request, "waves/detail.html#progress", context)
    if wave.status not in WAVE_ACTIVE:
        response.status_code = 286  # htmx: stop polling
    return response


@require_POST
@role_required(CENTRAL)
def wave_preflight(request: HttpRequest, public_id) -> HttpResponse:
    """Run the pre-flight check now and show it on the wave page (nothing is stored)."""
    wave = get_object_or_404(waves_with_capacity(), public_id=public_id)
    if wave.status not in preflight.PREFLIGHT_STATUSES:
        messages.error(request, f"{wave.name} has started: the pre-flight check is for before.")
        return redirect("waves:detail", public_id=wave.public_id)
    context = _wave_detail_context(wave) | {"preflight": preflight.wave_preflight(wave)}
    return render(request, "waves/detail.html", context)


@require_GET
@role_required(CENTRAL)
def wave_batches_csv(request: HttpRequest, public_id) -> StreamingHttpResponse:
    """Each mailbox of the wave and the batch it falls into, planned now if not yet planned.

    For teams that run New-MigrationBatch themselves: one batch's CSV is its rows' EmailAddress
    column (the BatchName column is the portal's, not Exchange's).
    """
    wave = get_object_or_404(Wave, public_id=public_id)
    return csv_download(
        f"{slugify(wave.name) or 'wave'}-batches.csv",
        ("EmailAddress", "BatchName"),
        transfers.wave_batch_assignments(wave),
    )


@require_POST
@role_required(CENTRAL)
def wave_approve_skipped_items(request: HttpRequest, public_id, mailbox_id: int) -> HttpResponse:
    """Approve a held mailbox's skipped items (Exchange: Set-MigrationUser -ApproveSkippedItems)."""
    wave = get_object_or_404(Wave, public_id=public_id)
    entry = get_object_or_404(
        CohortMailbox.objects.select_related("mailbox"),
        booking__wave=wave,
        mailbox_id=mailbox_id,
        active=True,
    )
    try:
        transfers.mailbox_approve_skipped_items(mailbox=entry.mailbox, actor=request.user)
    except (TransitionNotAllowed, BackendError) as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(
            request, f"{entry.mailbox.address}: skipped items approved; its move can complete."
        )
    return redirect("waves:detail", public_id=wave.public_id)


@require_POST
@role_required(CENTRAL)
def wave_approve_investigate_items(request: HttpRequest, public_id) -> HttpResponse:
    """Approve, in the background, the skipped items of every move graded Investigate."""
    wave = get_object_or_404(Wave, public_id=public_id)
    count = transfers.wave_queue_investigate_approvals(wave=wave, actor=request.user)
    if not count:
        messages.error(request, f"No mailbox of {wave.name} graded Investigate waits for approval.")
        return redirect("waves:detail", public_id=wave.public_id)
    messages.success(
        request,
        f"Approving the skipped items of {count:,} mailbox{pluralize(count, 'es')} graded "
        "Investigate: the list shrinks as a worker approves each one. Those graded Poor wait "
        "for you, one by one.",
    )
    return redirect("waves:detail", public_id=wave.public_id)


@require_POST
@role_required(CENTRAL)
def wave_approve_bookings(request: HttpRequest, public_id) -> HttpResponse:
    """Approve every booking of one wave waiting for a decision, from the booking queue."""
    wave = get_object_or_404(Wave, public_id=public_id)
    try:
        bookings, mailboxes = services.wave_approve_bookings(wave=wave, actor=request.user)
    except TransitionNotAllowed as refusal:
        messages.error(request, str(refusal))
        return redirect("waves:booking_queue")
    if not bookings:
        messages.error(request, f"No booking of {wave.name} is waiting for a decision.")
    else:
        messages.success(
            request,
            f"Approved {bookings:,} booking{pluralize(bookings)} for {wave.name}: "
            f"{mailboxes:,} mailbox{pluralize(mailboxes, 'es')} scheduled.",
        )
    return redirect("waves:booking_queue")


@require_POST
@role_required(CENTRAL)
def wave_action(request: HttpRequest, public_id, action: str) -> HttpResponse:
    wave = get_object_or_404(Wave, public_id=public_id)
    if action not in WAVE_ACTIONS:
        raise Http404("No such action.")
    form = ReasonForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    if action == "cancel" and not reason.strip():
        messages.error(request, "Give a reason for cancelling the wave.")
        return redirect("waves:detail", public_id=wave.public_id)
    try:
        WAVE_ACTIONS[action](wave, request.user, reason)
    except TransitionNotAllowed as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(request, f"{wave.name} is now {wave.get_status_display().lower()}.")
    return redirect("waves:detail", public_id=wave.public_id)


@require_POST
@role_required(CENTRAL)
def mailbox_action(request: HttpRequest, mailbox_id: int, action: str) -> HttpResponse:
    mailbox = get_object_or_404(mailboxes_for(request.user), pk=mailbox_id)
    back = request.POST.get("next", "")
    try:
        if action == "retry":
            transfers.mailbox_retry(mailbox=mailbox, actor=request.user)
        elif action == "roll-back":
            transfers.mailbox_roll_back(
                mailbox=mailbox, actor=request.user, reason=request.POST.get("reason", "")
            )
        else:
            raise Http404("No such action.")
    except (TransitionNotAllowed, BackendError) as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(request, f"{mailbox.address}: {action.replace('-', ' ')} requested.")
    if back.startswith("/") and not back.startswith("//"):
        return redirect(back)
    return redirect("support:mailbox", mailbox_id=mailbox.pk)


@require_GET
@role_required(CENTRAL)
def booking_queue(request: HttpRequest) -> HttpResponse:
    return _render_queue(request)


def _render_queue(request: HttpRequest, *, error_for: Booking | None = None, error: str = ""):
    page = Paginator(select_booking_queue(), 50).get_page(request.GET.get("page"))
    context = {
        "page_obj": page,
        "querystring": "",
        "error_for": error_for,
        "error": error,
        "waves_waiting": booking_queue_by_wave(),
    }
    return render(request, "waves/booking_queue.html", context, status=400 if error else 200)


ORGANISATIONS_PER_PAGE = 50


def _not_booked(request: HttpRequest) -> tuple[NotBookedFilterForm, QuerySet[Organisation]]:
    form = NotBookedFilterForm(request.GET)
    filters = form.cleaned_data if form.is_valid() else {}
    organisations = organisations_not_booked(
        region=filters.get("region", ""), type_=filters.get("type", "")
    )
    return form, organisations


@require_GET
@role_required(CENTRAL)
def not_booked(request: HttpRequest) -> HttpResponse:
    """Organisations with mailboxes that have booked none: whom to chase, with their leads."""
    form, organisations = _not_booked(request)
    page = Paginator(organisations, ORGANISATIONS_PER_PAGE).get_page(request.GET.get("page"))
    counts = mailbox_counts([organisation.pk for organisation in page])
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page_obj": page,
        "rows": [(organisation, counts.get(organisation.pk, 0)) for organisation in page],
        "querystring": query.urlencode(),
    }
    return render(request, "waves/not_booked.html", context)


@require_GET
@role_required(CENTRAL)
def not_booked_csv(request: HttpRequest) -> HttpResponse:
    """The same organisations, filtered the same way, as CSV for a mail merge.

    A filter it cannot use is refused (400, with why) rather than ignored: a mail merge sent to
    every organisation instead of one region's is not a mistake to find out afterwards.
    """
    form, organisations = _not_booked(request)
    if form.errors:
        return download_refused(form)
    counts = mailbox_counts(organisations)
    rows = (
        (
            spreadsheet_text(organisation.code),
            spreadsheet_text(organisation.name),
            organisation.get_type_display(),
            spreadsheet_text(organisation.region),
            counts.get(organisation.pk, 0),
            spreadsheet_text(
                "; ".join(lead.get_full_name() or lead.username for lead in organisation.lead_list)
            ),
            "; ".join(lead.email for lead in organisation.lead_list if lead.email),
        )
        for organisation in organisations.iterator(chunk_size=2000)
    )
    return csv_download(
        "organisations-yet-to-book.csv",
        ("OrganisationCode", "Name", "Type", "Region", "Mailboxes", "Leads", "LeadEmails"),
        rows,
    )


@require_POST
@role_required(CENTRAL)
def booking_decide(request: HttpRequest, public_id) -> HttpResponse:
    booking = get_object_or_404(
        Booking.objects.select_related("wave", "organisation"), public_id=public_id
    )
    decision = request.POST.get("decision")
    try:
        if decision == "approve":
            services.booking_approve(booking=booking, actor=request.user)
        elif decision == "reject":
            form = RejectForm(request.POST)
            if not form.is_valid():
                return _render_queue(
                    request, error_for=booking, error="Enter a reason for rejecting the booking"
                )
            services.booking_reject(
                booking=booking, actor=request.user, reason=form.cleaned_data["reason"]
            )
        else:
            raise TransitionNotAllowed("Choose approve or reject.")
    except TransitionNotAllowed as refusal:
        messages.error(request, f"{booking.organisation.name} in {booking.wave.name}: {refusal}")
    else:
        messages.success(
            request,
            f"{booking.organisation.name} in {booking.wave.name}: "
            f"{booking.get_status_display().lower()}.",
        )
    return redirect("waves:booking_queue")


def _booking_in_scope(request: HttpRequest, public_id) -> Booking:
    bookings = bookings_for_organisations(organisations_for(request.user))
    return get_object_or_404(bookings, public_id=public_id)


@require_GET
@role_required(CENTRAL, LEAD)
def booking_detail(request: HttpRequest, public_id) -> HttpResponse:
    booking = _booking_in_scope(request, public_id)
    by_status = booking_status_counts(booking)
    context = {
        "booking": booking,
        "events": booking.events.order_by("at", "id"),
        "counts": mailbox_status_tags(dict(sorted(by_status.items()))),
        "can_withdraw": booking.status in {BookingStatus.SUBMITTED, BookingStatus.APPROVED},
    }
    return render(request, "waves/booking_detail.html", context)


@require_POST
@role_required(CENTRAL, LEAD)
def booking_withdraw(request: HttpRequest, public_id) -> HttpResponse:
    booking = _booking_in_scope(request, public_id)
    try:
        services.booking_withdraw(
            booking=booking,
            actor=request.user,
            reason=request.POST.get("reason", "")[:500],
            after_deadline=role_of(request.user) == CENTRAL,
        )
    except TransitionNotAllowed as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(request, "Booking withdrawn. Its mailboxes can be booked again.")
    return redirect("waves:booking_detail", public_id=booking.public_id)


@require_GET
@role_required(LEAD)
def lead_waves(request: HttpRequest) -> HttpResponse:
    organisations = organisations_for(request.user)
    context = {
        "waves": waves_open_for_booking(),
        "bookings": bookings_for_organisations(organisations)[:100],
    }
    return render(request, "waves/lead_waves.html", context)


class MailboxCheckbox(NamedTuple):
    id: str
    value: str
    address: str
    kind: str
    size: str
    ticked: bool


def _mailbox_checkboxes(mailboxes: list[Mailbox], ticked_values) -> list[MailboxCheckbox]:
    """What each of up to CHOOSABLE checkboxes shows, worked out here: in the template, the
    same lookups and filters for a thousand rows took most of the page's time (a number shown
    in a template goes through localisation: 40 microseconds each)."""
    ticked = {str(value) for value in ticked_values or []}
    return [
        MailboxCheckbox(
            f"id_mailboxes_{index}",
            str(mailbox.pk),
            mailbox.address,
            mailbox.get_recipient_type_display(),
            gb(mailbox.size_bytes),
            str(mailbox.pk) in ticked,
        )
        for index, mailbox in enumerate(mailboxes)
    ]


@require_http_methods(["GET", "POST"])
@role_required(LEAD)
def booking_create(request: HttpRequest, public_id) -> HttpResponse:
    wave = get_object_or_404(waves_with_capacity(), public_id=public_id)
    organisations = list(organisations_for(request.user).order_by("name"))
    code = (
        request.POST.get("organisation")
        or request.GET.get("organisation")
        or (organisations[0].code if organisations else "")
    )
    organisation = organisation_for(request.user, code)
    not_booked = mailboxes_for(request.user).filter(
        organisation=organisation, status__in=services.BOOKABLE
    )
    too_large = mailbox_size_q(MailboxSize.TOO_LARGE)
    bookable_mailboxes = not_booked.exclude(too_large)
    bookable_count, bookable_bytes, too_large_count = not_booked.aggregate(
        n=Count("pk", filter=~too_large),
        b=Sum("size_bytes", filter=~too_large),
        too_large=Count("pk", filter=too_large),
    ).values()
    # The list to choose from, narrowed by the filter box as the IT lead's mailbox list is.
    find = MailboxFindForm(request.POST if request.method == "POST" else request.GET)
    search = find.cleaned_data["q"] if find.is_valid() else ""
    listed = bookable_mailboxes.filter(mailbox_search_q(search)) if search else bookable_mailboxes
    bookable = list(
        listed.only("address", "display_name", "size_bytes", "recipient_type").order_by("address")[
            :CHOOSABLE
        ]
    )
    form = BookingForm(
        request.POST or None,
        organisations=organisations,
        bookable=bookable,
        initial={"organisation": organisation.code},
    )
    if request.method == "POST" and form.is_valid():
        cohort = form.cleaned_data["cohort"]
        try:
            booking = services.booking_create(
                wave=wave,
                organisation=organisation,
                actor=request.user,
                mailbox_ids=form.cleaned_data["mailboxes"] if cohort == form.CHOSEN else None,
                addresses=form.cleaned_data["addresses"] if cohort == form.LISTED else None,
            )
        except services.BookingRefused as refusal:
            form.add_error(None, str(refusal))
        else:
            left_out = (
                f" {too_large_count:,} over 200 GB {pluralize(too_large_count, 'was,were')} left"
                " out: Exchange Online does not move them."
                if cohort == form.ALL and too_large_count
                else ""
            )
            messages.success(
                request,
                f"{booking.mailbox_count:,} mailboxes booked into {wave.name}.{left_out} "
                "The central team will approve or reject the booking.",
            )
            return redirect("waves:booking_detail", public_id=booking.public_id)
    context = {
        "wave": wave,
        "organisation": organisation,
        "form": form,
        "bookable": bookable,
        "bookable_count": bookable_count,
        "bookable_bytes": bookable_bytes or 0,
        "too_large_count": too_large_count,
        "sizes": MailboxSize,
        "choosable": CHOOSABLE,
        "max_listed": MAX_LISTED,
        "checkboxes": _mailbox_checkboxes(bookable, form["mailboxes"].value()),
        "search": search,
        "find": find,
        "matching": listed.count() if search else bookable_count,
        "switch_url": reverse("waves:book", kwargs={"public_id": wave.public_id}),
    }
    status = 400 if form.errors or find.errors else 200
    return render(request, "waves/book.html", context, status=status)
