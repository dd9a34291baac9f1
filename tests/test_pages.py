"""Every HTML page: who may see it, whose data it shows, and what bad input gets."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from mailboxes.models import Mailbox, MailboxEvent, MailboxStatus
from tests.conftest import make_organisation, make_wave
from waves.models import Booking, BookingStatus, Wave, WaveStatus
from waves.services import booking_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def booking(alice, airedale, wave):
    return booking_create(wave=wave, organisation=airedale, actor=alice)


def pages(wave, booking, mailbox):
    return {
        "mailboxes": reverse("mailboxes:list"),
        "waves": reverse("waves:list"),
        "wave_create": reverse("waves:create"),
        "wave_detail": reverse("waves:detail", args=[wave.public_id]),
        "booking_queue": reverse("waves:booking_queue"),
        "booking_detail": reverse("waves:booking_detail", args=[booking.public_id]),
        "lead_waves": reverse("waves:lead_waves"),
        "book": reverse("waves:book", args=[wave.public_id]),
        "search": reverse("support:search") + "?q=user",
        "mailbox": reverse("support:mailbox", args=[mailbox.pk]),
        "calls": reverse("support:calls"),
        "mailbox_csv": reverse("mailboxes:list_csv") + "?organisation=RCF",
    }


ALLOWED = {
    "alice": {"mailboxes", "booking_detail", "lead_waves", "book", "mailbox", "mailbox_csv"},
    "carol": {
        "mailboxes",
        "waves",
        "wave_create",
        "wave_detail",
        "booking_queue",
        "booking_detail",
        "search",
        "mailbox",
        "calls",
        "mailbox_csv",
    },
    "dave": {"search", "mailbox", "calls"},
    "eve": set(),
}


@pytest.mark.parametrize("person", ["alice", "carol", "dave", "eve"])
def test_each_role_sees_only_its_pages(client, request, person, booking, airedale):
    user = request.getfixturevalue(person)
    client.force_login(user)
    mailbox = airedale.mailboxes.first()
    for name, url in pages(booking.wave, booking, mailbox).items():
        response = client.get(url)
        expected = 200 if name in ALLOWED[person] else 403
        assert response.status_code == expected, (person, name, response.status_code)


def test_signed_out_visitors_are_sent_to_sign_in(client, booking, airedale):
    for url in pages(booking.wave, booking, airedale.mailboxes.first()).values():
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_a_lead_cannot_see_another_organisations_mailboxes(client, alice, airedale, bradford):
    client.force_login(alice)
    assert client.get(reverse("mailboxes:list") + "?organisation=B83001").status_code == 404
    other = bradford.mailboxes.first()
    assert client.get(reverse("support:mailbox", args=[other.pk])).status_code == 404
    own = client.get(reverse("mailboxes:list"))
    assert b"rcf.nhs.net" in own.content and b"b83001" not in own.content.lower()


def test_a_lead_cannot_see_or_withdraw_another_organisations_booking(
    client, bob, bradford, wave, booking
):
    client.force_login(bob)
    assert client.get(reverse("waves:booking_detail", args=[booking.public_id])).status_code == 404
    response = client.post(reverse("waves:booking_withdraw", args=[booking.public_id]))
    assert response.status_code == 404
    booking.refresh_from_db()
    assert booking.status == BookingStatus.SUBMITTED


def test_a_lead_cannot_book_another_organisations_mailboxes(
    client, alice, airedale, bradford, wave
):
    client.force_login(alice)
    url = reverse("waves:book", args=[wave.public_id])
    assert client.get(url + "?organisation=B83001").status_code == 404
    response = client.post(url, {"organisation": "B83001", "cohort": "all"})
    assert response.status_code == 404
    theirs = list(bradford.mailboxes.values_list("pk", flat=True)[:2])
    response = client.post(url, {"organisation": "RCF", "cohort": "chosen", "mailboxes": theirs})
    assert response.status_code == 400
    assert Booking.objects.count() == 0
    assert not MailboxEvent.objects.exists()


def test_a_lead_books_a_chosen_subset_and_sees_it(client, alice, airedale, wave):
    client.force_login(alice)
    chosen = list(airedale.mailboxes.order_by("pk").values_list("pk", flat=True)[:5])
    response = client.post(
        reverse("waves:book", args=[wave.public_id]),
        {"organisation": "RCF", "cohort": "chosen", "mailboxes": chosen},
        follow=True,
    )
    assert response.status_code == 200
    assert b"5 mailboxes booked into Weeknight 1" in response.content
    booking = Booking.objects.get()
    assert booking.mailbox_count == 5
    assert set(
        Mailbox.objects.filter(status=MailboxStatus.BOOKED).values_list("pk", flat=True)
    ) == set(chosen)


def test_booking_over_capacity_shows_the_room_left_and_changes_nothing(
    client, alice, airedale, carol
):
    small = make_wave(carol, name="Pilot", capacity_mailboxes=10)
    client.force_login(alice)
    response = client.post(
        reverse("waves:book", args=[small.public_id]), {"organisation": "RCF", "cohort": "all"}
    )
    assert response.status_code == 400
    assert "Error: " in response.content.decode()
    assert "Pilot has room for 10 more mailboxes; this cohort has 30." in response.content.decode()
    assert Booking.objects.count() == 0
    assert not Mailbox.objects.exclude(status=MailboxStatus.NOT_SCHEDULED).exists()


def test_booking_after_the_deadline_is_refused_with_a_reason(client, alice, airedale, wave):
    Wave.objects.filter(pk=wave.pk).update(booking_deadline=timezone.now() - timedelta(minutes=1))
    client.force_login(alice)
    response = client.post(
        reverse("waves:book", args=[wave.public_id]), {"organisation": "RCF", "cohort": "all"}
    )
    assert response.status_code == 400
    assert "The booking deadline for Weeknight 1 has passed." in response.content.decode()
    assert Booking.objects.count() == 0


def test_choosing_no_mailboxes_gets_a_field_error(client, alice, airedale, wave):
    client.force_login(alice)
    response = client.post(
        reverse("waves:book", args=[wave.public_id]), {"organisation": "RCF", "cohort": "chosen"}
    )
    assert response.status_code == 400
    assert "Choose at least one mailbox, or book all of them." in response.content.decode()


def test_central_team_creates_a_wave_and_malformed_dates_are_refused(client, carol):
    client.force_login(carol)
    bad = {
        "name": "Weekend 9",
        "kind": "weekend",
        "starts_at": "next friday",
        "cutover_at": "2026-13-40T25:00",
        "booking_deadline": "",
        "capacity_mailboxes": "-5",
        "capacity_gb": "lots",
    }
    response = client.post(reverse("waves:create"), bad)
    assert response.status_code == 400
    body = response.content.decode()
    assert "There is a problem" in body and body.count("nhsuk-error-message") >= 5
    assert not Wave.objects.exists()
    starts = timezone.localtime() + timedelta(days=5)
    good = {
        "name": "Weekend 9",
        "kind": "weekend",
        "starts_at": starts.strftime("%Y-%m-%dT%H:%M"),
        "cutover_at": (starts + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"),
        "booking_deadline": (starts - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"),
        "capacity_mailboxes": "83000",
        "capacity_gb": "83000",
    }
    response = client.post(reverse("waves:create"), good)
    assert response.status_code == 302
    wave = Wave.objects.get()
    assert wave.status == WaveStatus.PLANNED and wave.events.count() == 1


def test_a_wave_with_cutover_before_start_is_refused(client, carol):
    client.force_login(carol)
    starts = timezone.localtime() + timedelta(days=5)
    response = client.post(
        reverse("waves:create"),
        {
            "name": "Backwards",
            "kind": "weeknight",
            "starts_at": starts.strftime("%Y-%m-%dT%H:%M"),
            "cutover_at": (starts - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            "booking_deadline": (starts - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
            "capacity_mailboxes": "10",
            "capacity_gb": "10",
        },
    )
    assert response.status_code == 400
    assert "Cutover must be after the final sync starts." in response.content.decode()
    assert not Wave.objects.exists()


def test_central_team_approves_and_rejects_from_the_queue(
    client, carol, booking, bob, bradford, wave
):
    other = booking_create(wave=wave, organisation=bradford, actor=bob)
    client.force_login(carol)
    client.post(reverse("waves:booking_decide", args=[booking.public_id]), {"decision": "approve"})
    response = client.post(
        reverse("waves:booking_decide", args=[other.public_id]),
        {"decision": "reject", "reason": ""},
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "Error: Bookings to review" in body
    assert f'href="#reason-{other.pk}">Enter a reason for rejecting the booking' in body
    other.refresh_from_db()
    assert other.status == BookingStatus.SUBMITTED
    client.post(
        reverse("waves:booking_decide", args=[other.public_id]),
        {"decision": "reject", "reason": "Too close to year end"},
    )
    booking.refresh_from_db()
    other.refresh_from_db()
    assert booking.status == BookingStatus.APPROVED and other.status == BookingStatus.REJECTED
    assert other.decision_reason == "Too close to year end"
    assert set(bradford.mailboxes.values_list("status", flat=True)) == {MailboxStatus.NOT_SCHEDULED}


def test_wave_actions_refused_show_why(client, carol, wave):
    client.force_login(carol)
    response = client.post(reverse("waves:action", args=[wave.public_id, "start"]), follow=True)
    assert "has no approved bookings to migrate" in response.content.decode()
    wave.refresh_from_db()
    assert wave.status == WaveStatus.OPEN
    assert client.post(reverse("waves:action", args=[wave.public_id, "explode"])).status_code == 404


def test_the_wave_page_lists_its_bookings_a_page_at_a_time(client, carol, alice, wave):
    names = [f"Practice {i:03d}" for i in range(53)]
    for i, name in enumerate(names):
        organisation = make_organisation(f"Y{i:03d}", name, lead=alice, mailboxes=1)
        booking_create(wave=wave, organisation=organisation, actor=alice)
    client.force_login(carol)
    url = reverse("waves:detail", args=[wave.public_id])

    first = client.get(url).content.decode()
    assert "Bookings (53)" in first
    assert [name for name in names if f">{name}</a>" in first] == names[:50]
    assert 'aria-label="Page 2"' in first

    second = client.get(url + "?page=2").content.decode()
    assert [name for name in names if f">{name}</a>" in second] == names[50:]


def test_helpdesk_search_finds_by_address_name_and_upn(client, dave, airedale):
    client.force_login(dave)
    url = reverse("support:search")
    exact = client.get(url, {"q": "user00003@rcf.nhs.net"}, headers={"HX-Request": "true"})
    assert exact.content.decode().count('href="/helpdesk/mailboxes/') == 1
    assert b"<html" not in exact.content
    by_name = client.get(url, {"q": "User 0001"})
    assert b"user00010@rcf.nhs.net" in by_name.content and b"<html" in by_name.content
    by_upn = client.get(url, {"q": "user00004@rcf.nhs.uk"})
    assert b"user00004@rcf.nhs.net" in by_upn.content
    nothing = client.get(url, {"q": "nobody@example.org"})
    assert "No mailbox matches" in nothing.content.decode()


def test_helpdesk_search_says_when_more_match_than_it_shows(client, dave, airedale):
    client.force_login(dave)
    url = reverse("support:search")

    many = client.get(url, {"q": "user"}, headers={"HX-Request": "true"}).content.decode()
    assert many.count('href="/helpdesk/mailboxes/') == 20  # of Airedale's 30
    assert "More mailboxes match “user” than the first 20 shown" in many

    few = client.get(url, {"q": "user0001"}, headers={"HX-Request": "true"}).content.decode()
    assert few.count('href="/helpdesk/mailboxes/') == 10
    assert "More mailboxes match" not in few


@pytest.mark.parametrize(
    ("q", "message"),
    [("ab\x00cd", "Null characters are not allowed."), ("x" * 255, "Enter 254 characters")],
    ids=["NUL", "too long"],
)
@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
def test_helpdesk_search_refuses_what_it_cannot_look_up_with_a_reason(
    client, dave, airedale, q, message, htmx
):
    client.force_login(dave)
    headers = {"HX-Request": "true"} if htmx else {}

    response = client.get(reverse("support:search"), {"q": q}, headers=headers)

    assert response.status_code == (200 if htmx else 400)  # htmx swaps in only a 2xx
    assert message in response.content.decode()
    assert 'href="/helpdesk/mailboxes/' not in response.content.decode()


def test_helpdesk_records_a_call_and_empty_calls_are_refused(client, dave, airedale):
    mailbox = airedale.mailboxes.first()
    client.force_login(dave)
    url = reverse("support:record_call", args=[mailbox.pk])
    assert client.post(url, {"summary": "  "}).status_code == 400
    assert not mailbox.helpdesk_calls.exists()
    client.post(url, {"summary": "Cannot see shared calendar", "resolved": "on"})
    page = client.get(reverse("support:mailbox", args=[mailbox.pk]))
    assert b"Cannot see shared calendar" in page.content


def test_mailbox_page_shows_the_whole_timeline(client, dave, booking, carol):
    from waves.services import booking_approve

    booking_approve(booking=booking, actor=carol)
    mailbox = booking.cohort.first().mailbox
    client.force_login(dave)
    body = client.get(reverse("support:mailbox", args=[mailbox.pk])).content.decode()
    assert "Booked into Weeknight 1" in body and "Booking approved for Weeknight 1" in body
    assert body.index("Booking approved") < body.index("Booked into")  # newest first


def test_page_query_counts_do_not_grow_with_rows(
    client, carol, alice, airedale, django_assert_max_num_queries
):
    from tests.conftest import make_mailboxes

    client.force_login(alice)
    with django_assert_max_num_queries(12):
        client.get(reverse("mailboxes:list"))
    make_mailboxes(airedale.__class__.objects.create(code="X1", name="Extra", type="trust"), 1)
    Mailbox.objects.filter(organisation__code="X1").update(organisation=airedale)
    with django_assert_max_num_queries(12):
        client.get(reverse("mailboxes:list"))


def listed_checkboxes(response) -> list[str]:
    return re.findall(r'name="mailboxes" type="checkbox" value="(\d+)"', response.content.decode())


def test_a_lead_finds_the_mailboxes_to_choose_from_and_books_them(client, alice, airedale, wave):
    client.force_login(alice)
    url = reverse("waves:book", args=[wave.public_id])

    response = client.get(url, {"organisation": "RCF", "q": "user0001"})

    found = Mailbox.objects.filter(address__startswith="user0001", organisation=airedale)
    assert sorted(listed_checkboxes(response)) == sorted(
        str(pk) for pk in found.values_list("pk", flat=True)
    )
    assert len(listed_checkboxes(response)) == 10
    assert "10 found for “user0001”" in response.content.decode()
    assert 'name="q" value="user0001"' in response.content.decode()
    chosen = [str(pk) for pk in found.values_list("pk", flat=True)[:3]]
    response = client.post(
        url, {"organisation": "RCF", "q": "user0001", "cohort": "chosen", "mailboxes": chosen}
    )
    assert response.status_code == 302
    assert Booking.objects.get().mailbox_count == 3


def test_the_booking_page_offers_no_mailbox_over_200_gb_and_says_why(client, alice, airedale, wave):
    too_large = list(airedale.mailboxes.order_by("address")[:2])
    Mailbox.objects.filter(pk__in=[m.pk for m in too_large]).update(size_bytes=250 * 1024**3)
    client.force_login(alice)
    url = reverse("waves:book", args=[wave.public_id])

    response = client.get(url, {"organisation": "RCF"})

    page = response.content.decode()
    assert "has <strong>28</strong> mailboxes not yet booked (14.0 GB)" in page
    assert (
        "2 more mailboxes not yet booked are over 200 GB, which Exchange Online does not move"
        in page
    )
    assert "?organisation=RCF&amp;size=over_200_gb" in page
    listed = listed_checkboxes(response)
    assert len(listed) == 28
    assert not {str(m.pk) for m in too_large} & set(listed)

    response = client.post(
        url, {"organisation": "RCF", "cohort": "chosen", "mailboxes": [too_large[0].pk]}
    )
    assert response.status_code == 400
    assert not Booking.objects.exists()

    response = client.post(url, {"organisation": "RCF", "cohort": "all"}, follow=True)
    assert (
        "28 mailboxes booked into Weeknight 1. 2 over 200 GB were left out: Exchange Online"
        " does not move them." in response.content.decode()
    )
    assert Booking.objects.get().mailbox_count == 28


def test_finding_mailboxes_never_lists_another_organisations(
    client, alice, airedale, bradford, wave
):
    client.force_login(alice)
    url = reverse("waves:book", args=[wave.public_id])

    response = client.get(url, {"organisation": "RCF", "q": "B83001"})  # Bradford's names

    assert response.status_code == 200
    assert listed_checkboxes(response) == []
    assert "No mailbox not yet booked matches “B83001”." in response.content.decode()
    assert client.get(url, {"organisation": "B83001", "q": "user"}).status_code == 404


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ("ab\x00cd", "Null characters are not allowed."),
        ("x" * 101, "Enter 100 characters or fewer"),
    ],
    ids=["NUL", "too long"],
)
def test_a_filter_the_page_cannot_use_is_refused_with_a_reason(
    client, alice, airedale, wave, q, message
):
    client.force_login(alice)
    url = reverse("waves:book", args=[wave.public_id])

    response = client.get(url, {"organisation": "RCF", "q": q})

    assert response.status_code == 400
    assert message in response.content.decode()
    assert len(listed_checkboxes(response)) == 30  # unfiltered
    response = client.post(url, {"organisation": "RCF", "q": q, "cohort": "all"})
    assert response.status_code == 302  # the filter does not stop a booking of every mailbox
    assert Booking.objects.get().mailbox_count == 30


def test_a_lead_books_the_mailboxes_whose_addresses_they_paste(client, alice, airedale, wave):
    client.force_login(alice)
    url = reverse("waves:book", args=[wave.public_id])
    pasted = "User00003@rcf.nhs.net\r\nuser00011@rcf.nhs.net, user00012@rcf.nhs.net\tuser00003@rcf.nhs.net\r\n"

    response = client.post(url, {"organisation": "RCF", "cohort": "listed", "addresses": pasted})

    assert response.status_code == 302
    assert Booking.objects.get().mailbox_count == 3
    assert set(Mailbox.objects.filter(status=MailboxStatus.BOOKED).values_list("address")) == {
        ("user00003@rcf.nhs.net",),
        ("user00011@rcf.nhs.net",),
        ("user00012@rcf.nhs.net",),
    }


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        (
            "user00001@rcf.nhs.net\nuser00002@b83001.nhs.net",
            "user00002@b83001.nhs.net is not a mailbox of Airedale NHS Foundation Trust.",
        ),
        ("  \n ", "Paste the addresses of the mailboxes to book."),
        ("a@nhs.net\x00", "Null characters are not allowed."),
        (
            " ".join(f"u{i}@nhs.net" for i in range(50_001)),
            "Paste at most 50,000 addresses (these are 50,001)",
        ),
    ],
    ids=["another organisation's", "blank", "NUL", "too many"],
)
def test_a_pasted_list_the_portal_cannot_book_is_refused_with_a_reason_and_kept(
    client, alice, airedale, bradford, wave, addresses, message
):
    client.force_login(alice)
    url = reverse("waves:book", args=[wave.public_id])

    response = client.post(url, {"organisation": "RCF", "cohort": "listed", "addresses": addresses})

    assert response.status_code == 400
    page = response.content.decode()
    assert message in page
    assert 'id="conditional-listed"' in page
    assert Booking.objects.count() == 0
    assert not MailboxEvent.objects.exists()


def test_pasted_addresses_are_not_booked_when_all_mailboxes_are_chosen(
    client, alice, airedale, wave
):
    client.force_login(alice)
    response = client.post(
        reverse("waves:book", args=[wave.public_id]),
        {"organisation": "RCF", "cohort": "all", "addresses": "user00001@rcf.nhs.net"},
    )
    assert response.status_code == 400
    assert "You chose all mailboxes but also pasted addresses" in response.content.decode()
    assert Booking.objects.count() == 0
