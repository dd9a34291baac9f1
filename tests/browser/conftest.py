"""Headless Chromium (Debian's own, at /usr/bin/chromium) against pytest-django's live server.

One browser runs for the whole session; each test gets a fresh context (no cookies) and a page
that records every problem the browser sees: console errors, uncaught script errors, a /static/
file that failed to load, a request outside the portal, and any server error. The test fails
at teardown if there were any.

Every request the page makes passes through a Playwright route, and the sync API runs route
handlers only while the test thread is inside a Playwright call. So while a test writes to the
database itself (say, advancing a wave between two htmx polls) the page's requests wait in
Chromium. That matters on SQLite, where the live server shares the test's in-memory
connection: the two threads never use it at once.
"""

import os

import pytest

from tests.browser.steps import CHROMIUM, CHROMIUM_ARGS, NO_CHROMIUM, BrowserProblems

# Playwright's sync API keeps an asyncio event loop running in the test thread, and Django
# refuses ORM calls from a thread with a running loop. The test thread only drives the browser
# and sets up data while the page is idle, so the calls are safe. (This applies to the whole
# pytest process once this directory is collected: the session's browser stays up till the end.)
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """People still sign in through the form; their passwords are just cheaper to hash."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def chromium():
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def page(chromium, live_server, transactional_db):
    from playwright.sync_api import expect

    expect.set_options(timeout=5_000)
    context = chromium.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 900}, locale="en-GB"
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    problems = BrowserProblems.watch(context, page, live_server.url)
    yield page
    context.close()
    assert not problems.found, "The browser saw problems:\n" + "\n".join(problems.found)
    assert problems.static_loaded, "No /static/ file was loaded: is the live server serving them?"
