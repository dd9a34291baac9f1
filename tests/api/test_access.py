"""Who may call what: every endpoint refuses the signed-out, the roleless, and the wrong role,
and a refused request writes nothing."""

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver

from portal import api_urls
from portal.auth import HasRole
from tests.api.conftest import post_json, signed_in, snapshot


@pytest.fixture
def world(alice, bob, carol, dave, eve, airedale, bradford, wave, alice_booking):
    mailbox = airedale.mailboxes.order_by("pk").first()
    w, b = wave.public_id, alice_booking.public_id
    endpoints = {
        "organisation list": ("get", "/api/organisations/"),
        "organisation detail": ("get", "/api/organisations/RCF/"),
        "mailbox list": ("get", "/api/mailboxes/"),
        "mailbox detail": ("get", f"/api/mailboxes/{mailbox.pk}/"),
        "lookup": ("get", "/api/lookup/?q=user"),
        "programme": ("get", "/api/programme/"),
        "wave list": ("get", "/api/waves/"),
        "wave detail": ("get", f"/api/waves/{w}/"),
        "wave create": ("post", "/api/waves/"),
        **{f"wave {a}": ("post", f"/api/waves/{w}/{a}/") for a in WAVE_ACTIONS},
        "booking list": ("get", "/api/bookings/"),
        "booking detail": ("get", f"/api/bookings/{b}/"),
        "booking create": ("post", "/api/bookings/"),
        "booking approve": ("post", f"/api/bookings/{b}/approve/"),
        "booking reject": ("post", f"/api/bookings/{b}/reject/"),
        "booking withdraw": ("post", f"/api/bookings/{b}/withdraw/"),
    }
    users = {"alice": alice, "bob": bob, "carol": carol, "dave": dave, "eve": eve}
    return {"users": users, "wave": wave, "endpoints": endpoints}


WAVE_ACTIONS = ["open", "close", "start", "pause", "resume", "cancel"]
ENDPOINTS = [
    "organisation list",
    "organisation detail",
    "mailbox list",
    "mailbox detail",
    "lookup",
    "programme",
    "wave list",
    "wave detail",
    "wave create",
    *(f"wave {a}" for a in WAVE_ACTIONS),
    "booking list",
    "booking detail",
    "booking create",
    "booking approve",
    "booking reject",
    "booking withdraw",
]
# Bodies that would succeed for the right role, so a 403 is the role check and nothing else.
BODIES = {
    "wave create": {
        "name": "Weeknight 9",
        "kind": "weeknight",
        "starts_at": "2099-01-10T18:00:00Z",
        "cutover_at": "2099-01-11T06:00:00Z",
        "booking_deadline": "2099-01-03T18:00:00Z",
        "capacity_mailboxes": 100,
        "capacity_gb": 100,
    },
    "wave pause": {"reason": "test"},
    "wave cancel": {"reason": "test"},
    "booking reject": {"reason": "test"},
}
HELPDESK_REFUSED = {
    "programme",
    "wave detail",
    "wave create",
    *(f"wave {a}" for a in WAVE_ACTIONS),
    "booking list",
    "booking detail",
    "booking create",
    "booking approve",
    "booking reject",
    "booking withdraw",
}
LEAD_REFUSED = {
    "lookup",
    "programme",
    "wave detail",
    "wave create",
    *(f"wave {a}" for a in WAVE_ACTIONS),
    "booking approve",
    "booking reject",
}
CENTRAL_REFUSED = {"booking create"}


def call(client, world, name):
    method, url = world["endpoints"][name]
    if method == "get":
        return client.get(url)
    body = dict(BODIES.get(name, {}))
    if name == "booking create":
        body = {"wave": str(world["wave"].public_id), "organisation": "B83001"}
    return post_json(client, url, body)


def assert_refused(client, world, name):
    before = snapshot()
    response = call(client, world, name)
    assert response.status_code == 403, (name, response.status_code, response.content)
    assert "detail" in response.json()
    assert snapshot() == before


@pytest.mark.parametrize("name", ENDPOINTS)
def test_it_refuses_signed_out_callers(client, world, name):
    assert_refused(client, world, name)


@pytest.mark.parametrize("name", ENDPOINTS)
def test_it_refuses_a_user_without_a_role(client, world, name):
    assert_refused(signed_in(client, world["users"]["eve"]), world, name)


@pytest.mark.parametrize("name", sorted(HELPDESK_REFUSED))
def test_it_refuses_the_helpdesk_central_and_lead_actions(client, world, name):
    assert_refused(signed_in(client, world["users"]["dave"]), world, name)


@pytest.mark.parametrize("name", sorted(LEAD_REFUSED))
def test_it_refuses_an_it_lead_the_central_teams_actions(client, world, name):
    # bob, so the booking he would act on is not his: only the role stops him.
    assert_refused(signed_in(client, world["users"]["bob"]), world, name)


@pytest.mark.parametrize("name", sorted(CENTRAL_REFUSED))
def test_it_refuses_the_central_team_booking_on_an_organisations_behalf(client, world, name):
    assert_refused(signed_in(client, world["users"]["carol"]), world, name)


@pytest.mark.parametrize(
    ("user", "refused"),
    [("alice", LEAD_REFUSED), ("carol", CENTRAL_REFUSED), ("dave", HELPDESK_REFUSED)],
)
def test_each_role_reaches_every_endpoint_it_is_not_refused(client, world, user, refused):
    """The other side of the refusals: anything but 403 (the call may still be refused by the
    rules, as 409, or be out of scope, as 404)."""
    signed_in(client, world["users"][user])
    for name in ENDPOINTS:
        if name in refused:
            continue
        response = call(client, world, name)
        assert response.status_code != 403, (user, name, response.content)


def test_it_refuses_a_post_without_a_csrf_token(alice_booking, alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    before = snapshot()
    response = post_json(client, f"/api/bookings/{alice_booking.public_id}/withdraw/")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert snapshot() == before


def api_views():
    def walk(patterns):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns)
            elif isinstance(pattern, URLPattern):
                yield pattern

    for pattern in walk(api_urls.urlpatterns):
        yield pattern, pattern.callback.cls, getattr(pattern.callback, "actions", None)


def test_every_api_view_checks_the_role():
    for pattern, view, actions in api_views():
        assert HasRole in view.permission_classes, pattern
        if actions is None:
            assert view.allowed_roles, pattern
            continue
        for action in actions.values():
            instance = view(action=action)
            assert instance.allowed_roles, (pattern, action)
