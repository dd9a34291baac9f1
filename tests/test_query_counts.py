"""No page's query count grows with the number of rows it shows.

Each test renders a page (or API endpoint) through the test client with a few rows, adds many
more rows of every kind the page lists, renders it again, and checks that the second render
showed more rows with no more queries (fewer is fine: the helpdesk search stops early
when the prefixes already fill the page). A query per row (an N+1) fails here long
before it would hurt at 2.1 million mailboxes.
"""

from dataclasses import dataclass

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from mailboxes.models import Mailbox, MailboxEvent, MailboxStatus, Organisation, RecipientType
from support.models import HelpdeskCall
from tests.conftest import GB, make_approved_wave, make_organisation, make_wave
from waves.models import CohortMailbox, MigrationBatch, WaveEvent
from waves.services import booking_approve, booking_create

pytestmark = pytest.mark.django_db


@dataclass
class Render:
    queries: int
    body: str
    sql: list[str]


def render(client, url: str, *, htmx: bool = False) -> Render:
    headers = {"HX-Request": "true"} if htmx else {}
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, headers=headers)
    assert response.status_code in {200, 286}, (
        url,
        response.status_code,
    )  # 286: htmx, stop polling
    return Render(len(captured), response.content.decode(), [q["sql"] for q in captured])


def assert_flat(few: Render, many: Render, marker: str, *, at_least: int = 5) -> None:
    """More rows shown (counted by `marker`), and not one query more."""
    shown_few, shown_many = few.body.count(marker), many.body.count(marker)
    assert shown_few >= 1, f"nothing shown: no {marker!r} on the first render"
    assert shown_many >= shown_few + at_least, (
        f"the second render should show more rows: {shown_few} then {shown_many} of {marker!r}"
    )
    extra = "\n".join(many.sql[len(few.sql) :]) if many.queries > few.queries else ""
    assert many.queries <= few.queries, (
        f"{few.queries} queries for {shown_few} rows, {many.queries} for {shown_many}:\n{extra}"
    )


def add_mailboxes(
    organisation: Organisation, count: int, *, start: int = 1000, status=MailboxStatus.NOT_SCHEDULED
) -> list[Mailbox]:
    domain = organisation.code.lower()
    return Mailbox.objects.bulk_create(
        [
            Mailbox(
                address=f"extra{i:05d}@{domain}.nhs.net",
                upn=f"extra{i:05d}@{domain}.nhs.uk",
                display_name=f"Extra {i:05d} {organisation.code}",
                recipient_type=RecipientType.USER,
                size_bytes=GB // 4,
                item_count=10,
                organisation=organisation,
                status=status,
            )
            for i in range(start, start + count)
        ]
    )


def small_organisations(count: int, *, lead, prefix: str = "Y", mailboxes: int = 2):
    return [
        make_organisation(
            f"{prefix}{i:05d}", f"Practice {prefix}{i:05d}", lead=lead, mailboxes=mailboxes
        )
        for i in range(count)
    ]


# Pages for IT leads


def test_it_lead_mailbox_list(client, alice):
    organisation = make_organisation("RCF", "Airedale", lead=alice, mailboxes=2)
    client.force_login(alice)
    url = reverse("mailboxes:list") + "?organisation=RCF"
    few = render(client, url)
    few_filtered = render(client, url + "&q=rcf", htmx=True)  # every name ends "RCF"
    add_mailboxes(organisation, 60, status=MailboxStatus.BOOKED)  # a second status, two pages
    make_organisation("RCG", "Second trust", lead=alice)  # another organisation to switch to
    assert_flat(few, render(client, url), 'href="/helpdesk/mailboxes/')
    assert_flat(few, render(client, url + "&page=2"), 'href="/helpdesk/mailboxes/')
    assert_flat(
        few_filtered, render(client, url + "&q=rcf", htmx=True), 'href="/helpdesk/mailboxes/'
    )


def test_lead_waves_and_bookings(client, carol, alice):
    organisations = small_organisations(1, lead=alice)
    make_wave(carol, name="Weeknight 1")
    booking_create(
        wave=make_wave(carol, name="Weekend 1"), organisation=organisations[0], actor=alice
    )
    client.force_login(alice)
    url = reverse("waves:lead_waves")
    few = render(client, url)
    waves = [make_wave(carol, name=f"Weeknight {i}") for i in range(2, 10)]
    for organisation, wave in zip(
        small_organisations(8, lead=alice, prefix="Z"), waves, strict=True
    ):
        booking_create(wave=wave, organisation=organisation, actor=alice)
    assert_flat(few, render(client, url), 'href="/waves/book/')
    assert_flat(few, render(client, url), 'href="/waves/bookings/')


def test_booking_page(client, carol, alice):
    organisation = make_organisation("RCF", "Airedale", lead=alice, mailboxes=2)
    wave = make_wave(carol)
    client.force_login(alice)
    url = reverse("waves:book", args=[wave.public_id]) + "?organisation=RCF"
    few = render(client, url)
    add_mailboxes(organisation, 40)
    small_organisations(5, lead=alice)  # more organisations to switch between
    assert_flat(few, render(client, url), 'name="mailboxes"')


# Pages for the central team


def test_wave_list(client, carol, alice):
    organisations = small_organisations(12, lead=alice)
    make_approved_wave(carol, [(organisations[0], alice)], name="Weeknight 1")
    client.force_login(carol)
    url = reverse("waves:list")
    few = render(client, url)
    for i, organisation in enumerate(organisations[1:], 2):
        wave = make_wave(carol, name=f"Weeknight {i}")
        booking_create(wave=wave, organisation=organisation, actor=alice)
    assert_flat(few, render(client, url), 'href="/waves/')


def _fail(mailboxes) -> None:
    """Set-up: as the engine leaves a mailbox that failed its last attempt (and its cohort copy)."""
    ids = [m.pk for m in mailboxes]
    Mailbox.objects.filter(pk__in=ids).update(status=MailboxStatus.FAILED)
    CohortMailbox.objects.filter(mailbox_id__in=ids, active=True).update(
        mailbox_status=MailboxStatus.FAILED
    )


def _batch(wave, n: int, bookings) -> None:
    batch = MigrationBatch.objects.create(wave=wave, name=f"w{wave.pk}-{n:03d}")
    CohortMailbox.objects.filter(booking__in=bookings).update(batch=batch, attempts=3)


def test_wave_page(client, carol, alice):
    organisations = small_organisations(10, lead=alice, mailboxes=3)
    wave = make_approved_wave(carol, [(organisations[0], alice)])
    _fail(organisations[0].mailboxes.all()[:1])
    _batch(wave, 1, wave.bookings.all())
    client.force_login(carol)
    url = reverse("waves:detail", args=[wave.public_id])
    few = render(client, url)
    few_progress = render(client, url + "?shown=closed", htmx=True)
    # Nine more approved cohorts (reopened for booking), failures in each, more batches, history.
    wave.status = "open"
    wave.save(update_fields=["status"])
    for i, organisation in enumerate(organisations[1:], 2):
        booking = booking_create(wave=wave, organisation=organisation, actor=alice)
        booking_approve(booking=booking, actor=carol)
        _fail(organisation.mailboxes.all()[:2])
        _batch(wave, i, [booking])
    WaveEvent.objects.bulk_create(
        [
            WaveEvent(wave=wave, at=timezone.now(), actor_label="x", to_status="open")
            for _ in range(10)
        ]
    )
    many = render(client, url)
    assert_flat(few, many, 'href="/waves/bookings/')
    assert_flat(few, many, 'name="next"')  # a retry button per mailbox that needs attention
    assert_flat(few_progress, render(client, url + "?shown=open", htmx=True), 'name="next"')


def test_booking_queue(client, carol, alice):
    organisations = small_organisations(12, lead=alice)
    wave = make_wave(carol)
    booking_create(wave=wave, organisation=organisations[0], actor=alice)
    client.force_login(carol)
    url = reverse("waves:booking_queue")
    few = render(client, url)
    other = make_wave(carol, name="Weekend 1")
    for i, organisation in enumerate(organisations[1:]):
        booking_create(wave=(wave, other)[i % 2], organisation=organisation, actor=alice)
    assert_flat(few, render(client, url), 'value="approve"')


def test_organisations_yet_to_book(client, carol, alice, bob):
    small_organisations(1, lead=alice)
    client.force_login(carol)
    url = reverse("waves:not_booked")
    few = render(client, url)
    for organisation in small_organisations(12, lead=alice, prefix="Z", mailboxes=3):
        organisation.leads.add(bob)  # two leads each
    assert_flat(few, render(client, url), 'href="/mailboxes/?organisation=')


def test_booking_detail(client, carol, alice):
    organisation = make_organisation("RCF", "Airedale", lead=alice, mailboxes=2)
    wave = make_wave(carol)
    booking = booking_create(wave=wave, organisation=organisation, actor=alice)
    client.force_login(carol)
    url = reverse("waves:booking_detail", args=[booking.public_id])
    few = render(client, url)
    booking_approve(booking=booking, actor=carol)  # more history, a second status
    more = add_mailboxes(organisation, 20)
    CohortMailbox.objects.bulk_create([CohortMailbox(booking=booking, mailbox=m) for m in more])
    MailboxEvent.objects.bulk_create(
        [
            MailboxEvent(mailbox=m, at=timezone.now(), actor_label="x", to_status="booked")
            for m in more
        ]
    )
    from waves.models import BookingEvent

    BookingEvent.objects.bulk_create(
        [
            BookingEvent(booking=booking, at=timezone.now(), actor_label="x", to_status="approved")
            for _ in range(8)
        ]
    )
    assert_flat(few, render(client, url), "<li>")


# Pages for the helpdesk


def test_helpdesk_search(client, dave, alice):
    make_organisation("RCF", "Airedale", lead=alice, mailboxes=1)
    client.force_login(dave)
    url = reverse("support:search") + "?q=user0"
    few = render(client, url)
    few_htmx = render(client, url, htmx=True)
    small_organisations(10, lead=alice, prefix="U")  # user0000n@u0000n.nhs.net: 20 more
    assert_flat(few, render(client, url), 'href="/helpdesk/mailboxes/')
    assert_flat(few_htmx, render(client, url, htmx=True), 'href="/helpdesk/mailboxes/')


def test_mailbox_page(client, dave, carol, alice):
    organisation = make_organisation("RCF", "Airedale", lead=alice, mailboxes=1)
    mailbox = organisation.mailboxes.get()
    wave = make_wave(carol)
    booking = booking_create(wave=wave, organisation=organisation, actor=alice)
    HelpdeskCall.objects.create(mailbox=mailbox, recorded_by=dave, summary="First call")
    url = reverse("support:mailbox", args=[mailbox.pk])
    client.force_login(dave)
    few = render(client, url)
    booking_approve(booking=booking, actor=carol)
    MailboxEvent.objects.bulk_create(
        [
            MailboxEvent(
                mailbox=mailbox,
                at=timezone.now(),
                actor=carol,
                actor_label="Carol",
                to_status="queued",
            )
            for _ in range(15)
        ]
    )
    HelpdeskCall.objects.bulk_create(
        [HelpdeskCall(mailbox=mailbox, recorded_by=u, summary="Again") for u in (dave, carol) * 5]
    )
    many = render(client, url)
    assert_flat(few, many, "nhsuk-inset-text")  # calls
    assert_flat(few, many, "<strong>")  # timeline rows


# The JSON API


def test_api_mailboxes(client, alice):
    organisation = make_organisation("RCF", "Airedale", lead=alice, mailboxes=2)
    client.force_login(alice)
    few = render(client, "/api/mailboxes/")
    add_mailboxes(organisation, 40)
    make_organisation("RCG", "Second trust", lead=alice, mailboxes=5)
    assert_flat(few, render(client, "/api/mailboxes/"), '"address"')
    assert_flat(few, render(client, "/api/mailboxes/?search=extra"), '"address"')


def test_api_organisations(client, dave):
    make_organisation("Q01", "Board")
    client.force_login(dave)
    few = render(client, "/api/organisations/")
    parent = Organisation.objects.get()
    for i in range(12):
        child = make_organisation(f"Y{i:05d}", f"Practice {i}")
        child.parent = parent
        child.save(update_fields=["parent"])
    assert_flat(few, render(client, "/api/organisations/"), '"code"')


def test_api_waves_and_bookings(client, carol, alice):
    organisations = small_organisations(12, lead=alice)
    wave = make_wave(carol)
    booking_create(wave=wave, organisation=organisations[0], actor=alice)
    client.force_login(carol)
    few_waves = render(client, "/api/waves/")
    few_bookings = render(client, "/api/bookings/")
    for i, organisation in enumerate(organisations[1:], 2):
        booking_create(
            wave=make_wave(carol, name=f"Weeknight {i}"), organisation=organisation, actor=alice
        )
    assert_flat(few_waves, render(client, "/api/waves/"), '"capacity_mailboxes"')
    assert_flat(few_bookings, render(client, "/api/bookings/"), '"wave_name"')


def test_api_wave_detail(client, carol, alice):
    organisations = small_organisations(8, lead=alice, mailboxes=3)
    wave = make_approved_wave(carol, [(organisations[0], alice)])
    client.force_login(carol)
    url = f"/api/waves/{wave.public_id}/"
    few = render(client, url)
    wave.status = "open"
    wave.save(update_fields=["status"])
    for organisation in organisations[1:]:
        booking = booking_create(wave=wave, organisation=organisation, actor=alice)
        booking_approve(booking=booking, actor=carol)
        _fail(organisation.mailboxes.all()[:1])
    many = render(client, url)
    assert '"failed"' in many.body
    assert many.queries == few.queries


def test_api_lookup_and_mailbox_detail(client, dave, carol, alice):
    organisation = make_organisation("RCF", "Airedale", lead=alice, mailboxes=1)
    mailbox = organisation.mailboxes.get()
    client.force_login(dave)
    few_lookup = render(client, "/api/lookup/?q=user0")
    few_detail = render(client, f"/api/mailboxes/{mailbox.pk}/")
    small_organisations(15, lead=alice, prefix="U")
    MailboxEvent.objects.bulk_create(
        [
            MailboxEvent(mailbox=mailbox, at=timezone.now(), actor_label="x", to_status="booked")
            for _ in range(12)
        ]
    )
    assert_flat(few_lookup, render(client, "/api/lookup/?q=user0"), '"address"')
    many_detail = render(client, f"/api/mailboxes/{mailbox.pk}/")
    assert many_detail.body.count('"to_status"') >= 12
    assert many_detail.queries == few_detail.queries
