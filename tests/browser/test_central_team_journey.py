"""The central team plans a wave, decides its bookings, runs it and watches it progress."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from mailboxes.models import OrganisationType
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
)
from tests.conftest import make_organisation
from waves.models import Wave
from waves.services import booking_create
from waves.transfers import wave_advance

skip_module_without_chromium()
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CUTOVER_BEFORE_START = "Cutover must be after the final sync starts."
DEADLINE_PASSED = "The booking deadline must be in the future."
POLL_WAIT_MS = 12_000  # the progress section polls every 5 s


@pytest.fixture
def fast_simulator(settings):
    """Simulated time runs a million times faster, and no mailbox fails, so every run agrees."""
    settings.SIMULATOR = {**settings.SIMULATOR, "time_scale": 1e6, "failure_rate": 0.0}


# --- Steps -----------------------------------------------------------------------------------


def local(moment) -> str:
    """A datetime-local input's value, in UK time."""
    return timezone.localtime(moment).strftime("%Y-%m-%dT%H:%M")


def when_planning_a_wave(page: Page, *, name, starts, cutover, deadline, mailboxes, gb) -> None:
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Type of wave").select_option(label="Weekend")
    page.get_by_label("Final sync starts").fill(local(starts))
    page.get_by_label("Cutover").fill(local(cutover))
    page.get_by_label("Booking deadline").fill(local(deadline))
    page.get_by_label("Capacity (mailboxes)").fill(str(mailboxes))
    page.get_by_label("Data budget (GB)").fill(str(gb))
    when_pressing(page, "Plan wave")


def booking_card(page: Page, organisation: str):
    return page.locator(".nhsuk-card").filter(has_text=organisation)


def then_the_wave_status_is(page: Page, status: str) -> None:
    then_the_summary_list_shows(page, "Status", status)


def then_the_progress_says(page: Page, text: str, timeout: int = 5_000) -> None:
    expect(page.locator("#progress")).to_contain_text(text, timeout=timeout)


def then_the_progress_counts(page: Page, status: str, count: int, timeout: int = 5_000) -> None:
    table = page.get_by_role("table", name="Mailboxes by status")
    row = table.get_by_role("row").filter(has=page.get_by_role("cell", name=status, exact=True))
    expect(row.get_by_role("cell").last).to_have_text(str(count), timeout=timeout)


# --- Journey ---------------------------------------------------------------------------------


def test_the_central_team_plans_decides_runs_and_watches_a_wave(
    page, carol, alice, airedale, bob, bradford, fast_simulator
):
    given_signed_in_as(page, carol)
    then_the_url_has(page, r"/waves/$")
    page.get_by_role("link", name="Plan a wave").click()
    then_the_heading_is(page, "Plan a wave")

    starts = timezone.now() + timedelta(days=5)
    when_planning_a_wave(
        page,
        name="Weekend 9",
        starts=starts,
        cutover=starts - timedelta(hours=1),
        deadline=timezone.now() - timedelta(days=1),
        mailboxes=83000,
        gb=83000,
    )
    then_there_is_a_problem(page, CUTOVER_BEFORE_START, DEADLINE_PASSED)
    expect(page.get_by_label("Final sync starts")).to_have_value(local(starts))
    then_a_screenshot_is_saved(page, "2-central-plan-error")
    then_the_error_link_moves_focus_to(page, CUTOVER_BEFORE_START, "#id_cutover_at")

    when_planning_a_wave(
        page,
        name="Weekend 9",
        starts=starts,
        cutover=starts + timedelta(days=2),
        deadline=starts - timedelta(days=2),
        mailboxes=83000,
        gb=83000,
    )
    then_a_success_banner_says(page, "Weekend 9 created.")
    then_the_heading_is(page, "Weekend 9")
    then_the_wave_status_is(page, "Planned")

    when_pressing(page, "Open for booking")
    then_the_wave_status_is(page, "Open for booking")

    wave = Wave.objects.get(name="Weekend 9")
    booking_create(wave=wave, organisation=airedale, actor=alice)
    booking_create(wave=wave, organisation=bradford, actor=bob)

    when_following_the_navigation_link(page, "Bookings to review")
    expect(page.get_by_text("2 bookings waiting for a decision")).to_be_visible()
    expect(booking_card(page, "Airedale NHS Foundation Trust (RCF)")).to_contain_text(
        "30 mailboxes, 15.0 GB; submitted by Alice"
    )

    booking_card(page, "Bradford Road Practice").get_by_role("button", name="Reject").click()
    then_there_is_a_problem(
        page, "Enter a reason for rejecting the booking (Bradford Road Practice)"
    )
    then_a_screenshot_is_saved(page, "2-central-queue")
    bradford_card = booking_card(page, "Bradford Road Practice")
    bradford_card.get_by_label("Reason for rejecting").fill("The practice merges that weekend")
    bradford_card.get_by_role("button", name="Reject").click()
    then_a_success_banner_says(page, "Bradford Road Practice in Weekend 9: rejected.")

    booking_card(page, "Airedale").get_by_role("button", name="Approve").click()
    then_a_success_banner_says(page, "Airedale NHS Foundation Trust in Weekend 9: approved.")
    expect(page.get_by_text("Nothing to review.")).to_be_visible()

    when_following_the_navigation_link(page, "Waves")
    page.get_by_role("link", name="Weekend 9").click()
    when_pressing(page, "Close for booking")
    then_the_wave_status_is(page, "Closed for booking")
    when_pressing(page, "Start wave")
    then_a_success_banner_says(page, "Weekend 9 is now running.")
    then_the_wave_status_is(page, "Running")
    then_the_progress_says(page, "0 of 30 mailboxes completed (0.0%).")
    then_the_progress_counts(page, "Scheduled", 30)
    given_a_marker_on_the_page(page)

    wave_advance(wave.pk)  # the worker's turn: every mailbox is copied, ready for cutover

    then_the_progress_counts(page, "Synced", 30, timeout=POLL_WAIT_MS)
    then_the_page_was_not_reloaded(page)

    page.get_by_label("Reason for pausing (optional)").fill("Switchboard asked us to hold")
    when_pressing(page, "Pause wave")
    then_the_wave_status_is(page, "Paused")
    expect(
        page.get_by_text("Running → Paused (Carol): Switchboard asked us to hold")
    ).to_be_visible()
    when_pressing(page, "Resume wave")
    then_the_wave_status_is(page, "Running")
    given_a_marker_on_the_page(page)

    now = timezone.now()
    Wave.objects.filter(pk=wave.pk).update(
        booking_deadline=now - timedelta(hours=2),
        starts_at=now - timedelta(hours=1),
        cutover_at=now - timedelta(minutes=1),
    )
    wave_advance(wave.pk)  # cutover time: the batches are asked to complete
    wave_advance(wave.pk)  # and they have

    then_the_progress_says(page, "30 of 30 mailboxes completed (100.0%)", timeout=POLL_WAIT_MS)
    then_the_progress_counts(page, "Completed", 30)
    expect(page.locator("progress")).to_have_class("app-progress app-progress--complete")
    assert Wave.objects.get(pk=wave.pk).status == "done"
    # The wave has moved on: the page redraws itself, so its status and buttons are current.
    then_the_wave_status_is(page, "Done")
    expect(page.get_by_role("button", name="Pause wave")).to_have_count(0)
    then_a_screenshot_is_saved(page, "2-central-wave")


def test_the_central_team_narrows_the_organisations_yet_to_book_without_a_reload(
    page: Page, carol, alice, airedale, bob, bradford, wave
):
    booking_create(wave=wave, organisation=airedale, actor=alice)
    make_organisation("Y001", "Dewsbury Practice", mailboxes=3, type_=OrganisationType.GP_PRACTICE)
    make_organisation("RWY", "Calderdale NHS Trust", mailboxes=5)
    given_signed_in_as(page, carol)

    when_following_the_navigation_link(page, "Yet to book")
    then_the_heading_is(page, "Organisations yet to book")
    results = page.locator("#results")
    expect(results).to_contain_text("3 organisations yet to book")
    given_a_marker_on_the_page(page)

    when_choosing(page, "Type", "GP practice")

    expect(results).to_contain_text("2 organisations yet to book")
    expect(results.locator("tbody tr")).to_have_count(2)
    expect(results).not_to_contain_text("Calderdale")
    expect(results).not_to_contain_text("Airedale")  # it has booked
    then_the_page_was_not_reloaded(page)
    then_the_url_has(page, r"/waves/not-booked/\?.*type=gp_practice")
    then_a_screenshot_is_saved(page, "central-yet-to-book")
