"""An IT lead finds her mailboxes, books some into a wave, and withdraws the booking."""

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from mailboxes.models import Mailbox, Organisation
from tests.browser.steps import (
    given_a_marker_on_the_page,
    given_signed_in_as,
    skip_module_without_chromium,
    then_a_screenshot_is_saved,
    then_a_success_banner_says,
    then_the_error_link_moves_focus_to,
    then_the_heading_is,
    then_the_page_was_not_reloaded,
    then_the_summary_list_shows,
    then_the_url_has,
    then_there_is_a_problem,
    when_choosing,
    when_following_the_navigation_link,
    when_pressing,
    when_typing,
)
from tests.conftest import make_mailboxes, make_wave
from waves.services import booking_create

skip_module_without_chromium()
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHOOSE_ONE = "Choose at least one mailbox, or book all of them."


@pytest.fixture
def sixty_mailboxes(airedale):
    """Airedale's 30, plus 30 more taken over from a merged trust: more than one page of 50."""
    merged = Organisation.objects.create(code="X1", name="Merged trust", type="trust")
    make_mailboxes(merged, 30)
    Mailbox.objects.filter(organisation=merged).update(organisation=airedale)
    return airedale


@pytest.fixture
def two_already_booked(carol, alice, sixty_mailboxes):
    """Two of Airedale's mailboxes were booked into a pilot wave earlier."""
    pilot = make_wave(carol, name="Pilot")
    ids = sixty_mailboxes.mailboxes.filter(
        address__in=["user00001@rcf.nhs.net", "user00002@rcf.nhs.net"]
    ).values_list("pk", flat=True)
    return booking_create(wave=pilot, organisation=sixty_mailboxes, actor=alice, mailbox_ids=ids)


# --- Steps -----------------------------------------------------------------------------------


def then_the_results_say(page: Page, text: str) -> None:
    expect(page.locator("#results > p").first).to_have_text(text)


def then_the_rows_are(page: Page, count: int) -> None:
    expect(page.locator("#results tbody tr")).to_have_count(count)


def then_the_current_page_is(page: Page, number: int) -> None:
    expect(page.locator("#results [aria-current=page]")).to_have_text(str(number))


def when_booking_into(page: Page, wave_name: str) -> None:
    when_following_the_navigation_link(page, "Waves and bookings")
    then_the_heading_is(page, "Waves and bookings")
    page.get_by_role("link", name=f"Book into {wave_name}").click()
    then_the_heading_is(page, f"Book into {wave_name}")


def when_choosing_only_the_mailboxes(page: Page, *addresses: str) -> None:
    page.get_by_label("Only the mailboxes I choose").check()
    for address in addresses:
        page.get_by_label(address).check()
    when_pressing(page, "Book mailboxes")


# --- Journeys --------------------------------------------------------------------------------


def test_an_it_lead_filters_pages_books_and_withdraws_mailboxes(
    page, alice, carol, sixty_mailboxes, two_already_booked
):
    make_wave(carol, name="Weeknight 1")

    given_signed_in_as(page, alice)
    then_the_url_has(page, r"/mailboxes/$")
    then_the_heading_is(page, "Airedale NHS Foundation Trust")
    then_the_summary_list_shows(page, "Mailboxes", "60")
    then_the_results_say(page, "60 mailboxes found.")
    then_the_rows_are(page, 50)
    given_a_marker_on_the_page(page)

    page.get_by_role("navigation", name="Pagination").get_by_role("link", name="Next").click()
    then_the_current_page_is(page, 2)
    then_the_rows_are(page, 10)
    then_the_url_has(page, r"[?&]page=2")
    then_the_page_was_not_reloaded(page)

    when_choosing(page, "Status", "Booked")
    then_the_results_say(page, "2 mailboxes found.")
    expect(page.locator("#results tbody")).to_contain_text("user00001@rcf.nhs.net")
    then_the_url_has(page, r"[?&]status=booked")
    then_the_page_was_not_reloaded(page)

    when_choosing(page, "Status", "Any status")
    when_choosing(page, "Type", "Shared")
    then_the_results_say(page, "6 mailboxes found.")
    then_the_url_has(page, r"[?&]recipient_type=SharedMailbox")

    when_typing(page, "Search by address or name", "0001")
    then_the_results_say(page, "2 mailboxes found.")
    expect(page.locator("#results tbody")).to_contain_text("User 00019 RCF")
    expect(page.locator("#results tbody")).to_contain_text("User 00019 X1")
    then_the_url_has(page, r"[?&]q=0001")
    then_the_page_was_not_reloaded(page)
    then_a_screenshot_is_saved(page, "1-lead-mailboxes")

    when_booking_into(page, "Weeknight 1")
    expect(page.get_by_text("has 58 mailboxes not yet booked")).to_be_visible()
    when_choosing_only_the_mailboxes(
        page, "user00003@rcf.nhs.net", "user00004@rcf.nhs.net", "user00005@rcf.nhs.net"
    )
    then_a_success_banner_says(page, "3 mailboxes booked into Weeknight 1.")
    then_the_heading_is(page, "Airedale NHS Foundation Trust in Weeknight 1")
    then_the_summary_list_shows(page, "Status", "Submitted")
    then_the_summary_list_shows(page, "Cohort", "3 mailboxes")
    then_a_screenshot_is_saved(page, "1-lead-booking")

    when_pressing(page, "Withdraw booking")
    then_a_success_banner_says(page, "Booking withdrawn.")
    then_the_summary_list_shows(page, "Status", "Withdrawn")
    expect(page.get_by_role("button", name="Withdraw booking")).to_have_count(0)

    when_following_the_navigation_link(page, "Waves and bookings")
    bookings = page.get_by_role("table", name="Your organisations' bookings")
    expect(bookings.get_by_role("row").filter(has_text="Weeknight 1")).to_contain_text("Withdrawn")
    expect(bookings.get_by_role("row").filter(has_text="Pilot")).to_contain_text("Submitted")


def test_booking_with_none_chosen_shows_the_error_summary(page, alice, carol, airedale):
    make_wave(carol, name="Weeknight 1")
    given_signed_in_as(page, alice)
    when_booking_into(page, "Weeknight 1")

    when_choosing_only_the_mailboxes(page)

    then_there_is_a_problem(page, CHOOSE_ONE)
    expect(page.locator(".nhsuk-error-summary")).to_be_focused()
    expect(page.get_by_label("Only the mailboxes I choose")).to_be_checked()
    expect(page.locator("#id_mailboxes-error")).to_have_text(f"Error: {CHOOSE_ONE}")
    then_a_screenshot_is_saved(page, "1-lead-book-error")


def test_the_error_link_for_no_mailboxes_chosen_moves_focus_to_the_first_checkbox(
    page, alice, carol, airedale
):
    make_wave(carol, name="Weeknight 1")
    given_signed_in_as(page, alice)
    when_booking_into(page, "Weeknight 1")

    when_choosing_only_the_mailboxes(page)

    link = page.locator(".nhsuk-error-summary").get_by_role("link", name=CHOOSE_ONE)
    expect(link).to_have_attribute("href", "#id_mailboxes_0", timeout=1_000)
    then_the_error_link_moves_focus_to(page, CHOOSE_ONE, "#id_mailboxes_0")


def test_an_it_lead_pastes_addresses_fixes_a_wrong_one_and_books_them(
    page, alice, carol, airedale, bradford
):
    make_wave(carol, name="Weeknight 1")
    given_signed_in_as(page, alice)
    when_booking_into(page, "Weeknight 1")
    pasted = page.get_by_label("Addresses of the mailboxes to book")
    expect(pasted).to_be_hidden()

    page.get_by_label("The mailboxes whose addresses I paste").check()
    expect(pasted).to_be_visible()
    pasted.fill("user00006@rcf.nhs.net\nuser00007@b83001.nhs.net\nuser00008@rcf.nhs.net")
    when_pressing(page, "Book mailboxes")

    wrong = "user00007@b83001.nhs.net is not a mailbox of Airedale NHS Foundation Trust."
    then_there_is_a_problem(page, wrong)
    expect(pasted).to_be_visible()
    expect(pasted).to_have_value(
        "user00006@rcf.nhs.net\nuser00007@b83001.nhs.net\nuser00008@rcf.nhs.net"
    )
    then_a_screenshot_is_saved(page, "1-lead-book-pasted-error")

    pasted.fill("user00006@rcf.nhs.net\nuser00007@rcf.nhs.net\nuser00008@rcf.nhs.net")
    when_pressing(page, "Book mailboxes")
    then_a_success_banner_says(page, "3 mailboxes booked into Weeknight 1.")
    then_the_summary_list_shows(page, "Cohort", "3 mailboxes")


def test_an_it_lead_downloads_the_mailboxes_the_filters_leave(page, alice, sixty_mailboxes):
    given_signed_in_as(page, alice)
    given_a_marker_on_the_page(page)
    when_choosing(page, "Type", "Shared")
    then_the_results_say(page, "6 mailboxes found.")
    then_the_page_was_not_reloaded(page)

    with page.expect_download() as download:
        page.get_by_role("link", name="Download them as CSV").click()

    assert download.value.suggested_filename == "mailboxes-rcf.csv"
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0].startswith("PrimarySmtpAddress,UserPrincipalName,DisplayName")
    assert len(lines) == 7
    assert all(",SharedMailbox," in line for line in lines[1:])


def test_a_mailbox_over_200_gb_is_not_offered_for_booking_and_the_lead_is_shown_it(
    page, alice, carol, airedale
):
    make_wave(carol, name="Weeknight 1")
    Mailbox.objects.filter(address="user00004@rcf.nhs.net").update(size_bytes=250 * 1024**3)
    given_signed_in_as(page, alice)

    when_booking_into(page, "Weeknight 1")
    expect(page.get_by_text("has 29 mailboxes not yet booked")).to_be_visible()
    expect(page.locator("#too-large")).to_contain_text(
        "1 more mailbox not yet booked is over 200 GB, which Exchange Online does not move"
    )
    page.get_by_label("Only the mailboxes I choose").check()
    expect(page.get_by_label("user00003@rcf.nhs.net")).to_be_visible()
    expect(page.get_by_label("user00004@rcf.nhs.net")).to_have_count(0)
    then_a_screenshot_is_saved(page, "1-lead-book-too-large")

    page.get_by_role("link", name="Show the mailboxes over 200 GB").click()
    then_the_heading_is(page, "Airedale NHS Foundation Trust")
    then_the_rows_are(page, 1)
    expect(page.locator("#results tbody")).to_contain_text("user00004@rcf.nhs.net")
