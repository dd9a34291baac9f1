"""The helpdesk finds a caller's mailbox as they type, reads its story and records the call."""

import pytest
from playwright.sync_api import Page, expect

from tests.browser.steps import (
    given_a_marker_on_the_page,
    given_signed_in_as,
    skip_module_without_chromium,
    then_a_screenshot_is_saved,
    then_a_success_banner_says,
    then_the_error_link_moves_focus_to,
    then_the_heading_is,
    then_the_page_was_not_reloaded,
    then_the_url_has,
    then_there_is_a_problem,
    when_following_the_navigation_link,
    when_pressing,
    when_typing,
)
from waves.services import booking_approve, booking_create

skip_module_without_chromium()
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SEARCH = "Email address, name or user principal name"
SUMMARY = "What the caller needed, and what you did"


@pytest.fixture
def booked_and_approved(alice, carol, airedale, wave):
    booking = booking_create(wave=wave, organisation=airedale, actor=alice)
    booking_approve(booking=booking, actor=carol)
    return booking


# --- Steps -----------------------------------------------------------------------------------


def then_the_results_list(page: Page, *names: str) -> None:
    table = page.locator("#results").get_by_role("table")
    expect(table.get_by_role("link")).to_have_text(list(names))


def then_the_timeline_shows(page: Page, *changes: str) -> None:
    """Each change in the table, newest first."""
    rows = page.get_by_role("table", name="Every status change, newest first").locator("tbody tr")
    expect(rows).to_have_count(len(changes))
    for row, change in enumerate(changes):
        expect(rows.nth(row)).to_contain_text(change)


# --- Journeys --------------------------------------------------------------------------------


def test_the_helpdesk_finds_a_mailbox_as_they_type_and_records_a_call(
    page, dave, booked_and_approved
):
    given_signed_in_as(page, dave)
    then_the_url_has(page, r"/helpdesk/$")
    then_the_heading_is(page, "Find a mailbox")
    given_a_marker_on_the_page(page)

    when_typing(page, SEARCH, "u")
    expect(page.locator("#results")).to_have_text("Type at least 2 characters.")
    when_typing(page, SEARCH, "nobody@example.org")
    expect(page.locator("#results")).to_contain_text("No mailbox matches “nobody@example.org”.")

    when_typing(page, SEARCH, "User 0001")  # each word anywhere in the name, so 00001 too
    then_the_results_list(page, "User 00001 RCF", *[f"User 0001{n} RCF" for n in range(10)])
    then_the_url_has(page, r"\?q=User(%20|\+)0001$")
    then_the_page_was_not_reloaded(page)

    when_typing(page, SEARCH, "user00012@rcf")
    then_the_results_list(page, "User 00012 RCF")
    expect(page.locator("#results")).to_contain_text("Airedale NHS Foundation Trust")
    expect(page.locator("#results")).to_contain_text("Scheduled")
    then_the_page_was_not_reloaded(page)

    page.get_by_role("link", name="User 00012 RCF").click()
    then_the_heading_is(page, "User 00012 RCF")
    expect(page.locator(".nhsuk-caption-l")).to_have_text("user00012@rcf.nhs.net")
    expect(page.locator("main .nhsuk-body-l .nhsuk-tag")).to_have_text("Scheduled")
    then_the_timeline_shows(
        page,
        "Booked → Scheduled Booking approved for Weeknight 1 Carol",
        "Not scheduled → Booked Booked into Weeknight 1 Alice",
    )
    expect(page.get_by_text("No calls recorded.")).to_be_visible()

    page.get_by_label(SUMMARY).fill("Asked when her mailbox moves. Gave the cutover date.")
    page.get_by_label("Resolved on this call").check()
    when_pressing(page, "Record call")

    then_a_success_banner_says(page, "Call recorded.")
    call = page.locator(".nhsuk-inset-text")
    expect(call).to_contain_text("Asked when her mailbox moves. Gave the cutover date.")
    expect(call).to_contain_text("Dave")
    expect(call).to_contain_text("resolved")
    expect(page.get_by_label(SUMMARY)).to_have_value("")
    then_a_screenshot_is_saved(page, "3-helpdesk-mailbox")


def test_an_empty_call_is_refused_with_a_link_to_the_summary(page, dave, airedale):
    given_signed_in_as(page, dave)
    page.goto(f"/helpdesk/mailboxes/{airedale.mailboxes.order_by('pk').first().pk}/")

    when_pressing(page, "Record call")

    then_there_is_a_problem(page, "Enter what the caller needed and what you did")
    then_the_error_link_moves_focus_to(
        page, "Enter what the caller needed and what you did", "#id_summary"
    )
    expect(page.get_by_text("No calls recorded.")).to_be_visible()


def test_a_call_to_follow_up_is_listed_until_it_is_marked_resolved(page, dave, airedale):
    given_signed_in_as(page, dave)
    page.goto(f"/helpdesk/mailboxes/{airedale.mailboxes.order_by('pk').first().pk}/")
    page.get_by_label(SUMMARY).fill("Cannot open the shared calendar. Will call back.")
    when_pressing(page, "Record call")
    then_a_success_banner_says(page, "Call recorded.")
    expect(page.locator(".nhsuk-inset-text")).to_contain_text("to follow up")

    when_following_the_navigation_link(page, "Calls")
    then_the_heading_is(page, "Calls to follow up")
    calls = page.locator("#calls tbody tr")
    expect(calls).to_have_count(1)
    expect(calls).to_contain_text("Cannot open the shared calendar. Will call back.")
    expect(calls).to_contain_text("user00000@rcf.nhs.net")
    then_a_screenshot_is_saved(page, "3-helpdesk-calls")

    calls.get_by_role("button", name="Mark resolved").click()
    then_a_success_banner_says(page, "Call about user00000@rcf.nhs.net marked resolved.")
    expect(page.get_by_text("No call is waiting to be followed up.")).to_be_visible()
