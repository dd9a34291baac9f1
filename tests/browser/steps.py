"""Steps shared by the browser journeys, named given / when / then so a test reads as a story."""

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    Route,
    expect,
)

from tests.conftest import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NO_CHROMIUM = "Browser tests need Debian's chromium at /usr/bin/chromium: apt-get install chromium"
TYPING_DELAY_MS = 60
SCREENSHOTS = Path("/tmp")  # noqa: S108 - a fixed place to look at them, overwritten each run


def skip_module_without_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM, allow_module_level=True)


# NHS.UK frontend's compiled CSS loads the Frutiger web font from NHS's own CDN. The tests never
# go out to the internet, so those requests are stopped and the pages fall back to Arial.
NHS_FONT_CDN = "https://assets.nhs.uk/fonts/"
# Chromium logs this console error for every response of 400 or more, pages included; the
# portal sends invalid forms back with 400, so for pages it is expected.
HTTP_STATUS_LOGGED = "Failed to load resource: the server responded with a status of"


@dataclass
class BrowserProblems:
    """What went wrong in the browser while a test ran, as lines for the failure message.

    Every request goes through `_route`: the live server's own are let through, the NHS font
    CDN's are stopped quietly, and any other address outside the portal is stopped and reported.
    """

    origin: str
    found: list[str] = field(default_factory=list)
    static_loaded: int = 0

    @classmethod
    def watch(cls, context: BrowserContext, page: Page, origin: str) -> "BrowserProblems":
        problems = cls(origin=origin.rstrip("/") + "/")
        context.route("**/*", problems._route)
        page.on("console", problems._console)
        page.on("pageerror", lambda error: problems.found.append(f"script error: {error}"))
        page.on("response", problems._response)
        page.on("requestfailed", problems._request_failed)
        return problems

    def _route(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(self.origin):
            route.continue_()
            return
        if not url.startswith(NHS_FONT_CDN):
            self.found.append(f"request outside the portal: {url}")
        route.abort("blockedbyclient")

    def _console(self, message: ConsoleMessage) -> None:
        where = message.location.get("url", "")
        if message.type != "error" or where.startswith(NHS_FONT_CDN):
            return
        if message.text.startswith(HTTP_STATUS_LOGGED) and not urlparse(where).path.startswith(
            "/static/"
        ):
            return  # a form sent back with errors (400): _response judges statuses
        self.found.append(f"console error: {message.text} ({where})")

    def _response(self, response: Response) -> None:
        path = urlparse(response.url).path
        if path.startswith("/static/"):
            if response.status >= 400:
                self.found.append(f"{response.status} for {path}")
            else:
                self.static_loaded += 1
        elif response.status >= 500:
            self.found.append(f"server error {response.status} for {path}")

    def _request_failed(self, request: Request) -> None:
        path = urlparse(request.url).path
        # ERR_ABORTED: the page moved on before the file arrived (often the favicon).
        aborted = request.failure == "net::ERR_ABORTED"
        if request.url.startswith(self.origin) and path.startswith("/static/") and not aborted:
            self.found.append(f"{path} failed to load: {request.failure}")


# --- Given ---------------------------------------------------------------------------------


def given_signed_in_as(page: Page, user) -> None:
    page.goto("/sign-in/")
    when_signing_in_with(page, user.username, PASSWORD)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def given_a_marker_on_the_page(page: Page) -> None:
    """Set a value that only survives as long as the document does (no full reload), once the
    page's scripts have run: what follows expects htmx to answer, not a full reload."""
    page.wait_for_load_state("load")
    page.evaluate("window.__marker = 1")


# --- When ----------------------------------------------------------------------------------


def when_signing_in_with(page: Page, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def when_typing(page: Page, label: str, text: str) -> None:
    """Type key by key, as a person does, without pressing Enter or any button.

    First wait for the page's load event: htmx is a deferred script, so until then it has not
    yet wired the box up and the first keys would go unnoticed.
    """
    page.wait_for_load_state("load")
    box = page.get_by_label(label, exact=True)
    box.clear()
    box.press_sequentially(text, delay=TYPING_DELAY_MS)


def when_choosing(page: Page, label: str, option: str) -> None:
    """Pick an option from a list, once htmx has wired the form up (see `when_typing`)."""
    page.wait_for_load_state("load")
    page.get_by_label(label, exact=True).select_option(label=option)


def when_following_the_navigation_link(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Menu").get_by_role("link", name=name).click()


def when_pressing(page: Page, button: str) -> None:
    page.get_by_role("button", name=button, exact=True).click()


# --- Then ----------------------------------------------------------------------------------


def then_the_page_was_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__marker") == 1, "the whole page was reloaded"


def then_the_heading_is(page: Page, text: str) -> None:
    expect(page.get_by_role("heading", level=1)).to_have_text(text)


def then_the_url_has(page: Page, pattern: str) -> None:
    # A redirect after signing in can take more than the default 5 s on a loaded CI machine.
    expect(page).to_have_url(re.compile(pattern), timeout=20_000)


def then_a_success_banner_says(page: Page, text: str) -> None:
    banner = page.locator(".nhsuk-notification-banner--success")
    expect(banner).to_contain_text("Success")
    expect(banner).to_contain_text(text)


def then_an_important_banner_says(page: Page, text: str) -> None:
    banner = page.get_by_role("region", name="Important")
    expect(banner).to_contain_text(text)


def then_there_is_a_problem(page: Page, *messages: str) -> None:
    """The NHS.UK error summary lists each message, and the page title says Error:."""
    summary = page.locator(".nhsuk-error-summary")
    expect(summary.get_by_role("heading", name="There is a problem")).to_be_visible()
    for message in messages:
        expect(summary).to_contain_text(message)
    expect(page).to_have_title(re.compile(r"^Error: "))


def then_the_error_link_moves_focus_to(page: Page, message: str, field_selector: str) -> None:
    """Once NHS.UK frontend has wired up the error summary (see `when_typing`): before, the
    link is a plain anchor, and its #fragment stays in the URL through the next redirect."""
    page.wait_for_load_state("load")
    page.locator(".nhsuk-error-summary").get_by_role("link", name=message).click()
    expect(page.locator(field_selector)).to_be_focused()


def then_the_summary_list_shows(page: Page, key: str, value: str) -> None:
    row = page.locator(".nhsuk-summary-list__row").filter(
        has=page.locator(".nhsuk-summary-list__key", has_text=re.compile(f"^{re.escape(key)}$"))
    )
    expect(row.locator(".nhsuk-summary-list__value")).to_contain_text(value)


def then_a_screenshot_is_saved(page: Page, name: str) -> None:
    """The whole page, to look at as a person would: /tmp/journey-<name>.png."""
    page.screenshot(path=SCREENSHOTS / f"journey-{name}.png", full_page=True)
