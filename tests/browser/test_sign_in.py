"""Signing in and out through the real form, and the NHS.UK styles and scripts every page needs."""

import pytest
from playwright.sync_api import expect

from tests.browser.steps import (
    given_signed_in_as,
    skip_module_without_chromium,
    then_a_screenshot_is_saved,
    then_the_error_link_moves_focus_to,
    then_the_heading_is,
    then_the_url_has,
    then_there_is_a_problem,
    when_pressing,
    when_signing_in_with,
)

skip_module_without_chromium()
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_wrong_password_is_refused_and_the_right_one_lets_alice_in_and_out(page, alice, airedale):
    page.goto("/")
    then_the_url_has(page, r"/sign-in/\?next=/$")

    when_signing_in_with(page, "alice", "not the password")
    then_there_is_a_problem(page, "Enter a correct username and password")
    then_the_error_link_moves_focus_to(
        page, "Enter a correct username and password", "#id_username"
    )
    expect(page.get_by_label("Username")).to_have_value("alice")
    expect(page.get_by_label("Password")).to_have_value("")
    then_a_screenshot_is_saved(page, "4-sign-in-error")

    when_signing_in_with(page, "alice", "correct horse battery staple")
    then_the_url_has(page, r"/mailboxes/$")
    then_the_heading_is(page, "Airedale NHS Foundation Trust")
    expect(page.get_by_role("navigation", name="Account")).to_contain_text("Alice")

    when_pressing(page, "Sign out")
    then_the_url_has(page, r"/sign-in/$")
    then_the_heading_is(page, "Sign in")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)

    page.goto("/mailboxes/")
    then_the_url_has(page, r"/sign-in/\?next=/mailboxes/$")


def test_the_nhs_styles_and_scripts_load_on_every_page(page, carol):
    given_signed_in_as(page, carol)
    header = page.locator(".nhsuk-header")
    expect(header).to_have_css("background-color", "rgb(0, 94, 184)")  # NHS blue
    expect(page.locator("body")).to_have_class(
        "js-enabled nhsuk-frontend-supported"
    )  # portal.js ran and imported NHS.UK frontend
    assert page.evaluate("typeof window.htmx") == "object", "htmx did not load"
    expect(page.get_by_role("navigation", name="Menu").get_by_role("link")).to_have_text(
        ["Waves", "Bookings to review", "Yet to book", "Find a mailbox", "Calls", "Imports"]
    )
