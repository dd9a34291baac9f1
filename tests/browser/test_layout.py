"""How pages sit on the screen: the menu shows where you are, and forms fit their columns."""

import pytest
from playwright.sync_api import Page, expect

from tests.browser.steps import (
    given_signed_in_as,
    skip_module_without_chromium,
    when_following_the_navigation_link,
)

skip_module_without_chromium()
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def boxes(page: Page, *selectors: str) -> list[tuple[float, float]]:
    """Left and right edge of the first element matching each selector."""
    edges = []
    for selector in selectors:
        box = page.locator(selector).first.bounding_box()
        edges.append((box["x"], box["x"] + box["width"]))
    return edges


def test_only_the_section_you_are_in_is_marked_current_in_the_menu(page, carol):
    given_signed_in_as(page, carol)

    when_following_the_navigation_link(page, "Bookings to review")

    current = page.get_by_role("navigation", name="Menu").locator("[aria-current=page]")
    expect(current).to_have_text(["Bookings to review"], timeout=1_000)


def test_the_mailbox_filters_sit_side_by_side_without_overlapping(page, alice, airedale):
    given_signed_in_as(page, alice)

    for width in (1280, 800):
        page.set_viewport_size({"width": width, "height": 900})
        main, status, kind, size = boxes(
            page, "main", "#id_status", "#id_recipient_type", "#id_size"
        )
        assert status[1] <= kind[0] and kind[1] <= size[0], f"the filters overlap at {width}"
        assert size[1] <= main[1], f"the Size filter sticks out of the page at {width}"
        search = page.locator("#id_q").bounding_box()
        below = page.locator("#id_status").bounding_box()
        assert search["y"] + search["height"] <= below["y"], f"the search box overlaps at {width}"
