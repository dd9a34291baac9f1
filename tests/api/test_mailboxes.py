"""GET /api/mailboxes/ and /api/mailboxes/{id}/: scoped to the user's organisations."""

import pytest

from mailboxes.models import MailboxStatus, Organisation, RecipientType
from tests.api.conftest import signed_in
from tests.conftest import make_mailboxes
from waves.services import booking_approve

FIELDS = {
    "id",
    "address",
    "upn",
    "display_name",
    "recipient_type",
    "size_bytes",
    "item_count",
    "organisation",
    "status",
}


def listed(client, query: str = "") -> dict:
    response = client.get(f"/api/mailboxes/{query}")
    assert response.status_code == 200, response.content
    return response.json()


def test_an_it_lead_lists_only_their_organisations_mailboxes(client, alice, airedale, bradford):
    body = listed(signed_in(client, alice))
    assert body["count"] == 30
    assert {m["organisation"] for m in body["results"]} == {"RCF"}
    assert set(body["results"][0]) == FIELDS


def test_an_it_lead_gets_nothing_for_another_organisations_code(client, alice, airedale, bradford):
    body = listed(signed_in(client, alice), "?organisation=B83001")
    assert body["count"] == 0
    assert body["results"] == []


@pytest.mark.parametrize("user", ["carol", "dave"])
def test_the_central_team_and_helpdesk_list_every_mailbox(
    client, request, user, airedale, bradford
):
    body = listed(signed_in(client, request.getfixturevalue(user)))
    assert body["count"] == 42


def test_it_filters_by_organisation(client, carol, airedale, bradford):
    body = listed(signed_in(client, carol), "?organisation=B83001")
    assert body["count"] == 12
    assert {m["organisation"] for m in body["results"]} == {"B83001"}


def test_it_filters_by_status(client, alice, carol, airedale, alice_booking):
    booking_approve(booking=alice_booking, actor=carol)
    signed_in(client, alice)
    assert listed(client, "?status=scheduled")["count"] == 30
    assert listed(client, "?status=not_scheduled")["count"] == 0


def test_it_filters_by_recipient_type(client, alice, airedale):
    body = listed(signed_in(client, alice), "?recipient_type=SharedMailbox")
    assert body["count"] == 3  # every tenth mailbox is shared
    assert {m["recipient_type"] for m in body["results"]} == {RecipientType.SHARED}


@pytest.mark.parametrize(
    ("search", "count"),
    [
        ("user0000", 10),
        ("USER00012@rcf", 1),
        ("00012 rcf", 1),
        ("user00012@rcf.nhs.uk", 1),
        ("zz", 0),
    ],
)
def test_it_searches_address_upn_and_display_name(client, alice, airedale, search, count):
    assert listed(signed_in(client, alice), f"?search={search}")["count"] == count


def test_an_unknown_status_is_a_field_error(client, alice, airedale):
    response = signed_in(client, alice).get("/api/mailboxes/?status=lost")
    assert response.status_code == 400
    assert "status" in response.json()


def test_it_pages_fifty_at_a_time(client, carol, airedale, bradford):
    calderdale = Organisation.objects.create(code="RWY", name="Calderdale", type="trust")
    make_mailboxes(calderdale, 60)
    signed_in(client, carol)
    first = listed(client)
    assert first["count"] == 102
    assert len(first["results"]) == 50
    third = listed(client, "?page=3")
    assert len(third["results"]) == 2
    assert third["next"] is None


def test_a_mailbox_never_booked_has_its_timeline_and_no_migration(client, dave, airedale):
    mailbox = airedale.mailboxes.order_by("pk").first()
    response = signed_in(client, dave).get(f"/api/mailboxes/{mailbox.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert body["address"] == mailbox.address
    assert body["organisation"] == "RCF"
    assert body["migration"] is None
    assert body["timeline"] == []


def test_a_booked_mailbox_shows_its_migration_and_timeline(
    client, alice, carol, wave, airedale, alice_booking
):
    booking_approve(booking=alice_booking, actor=carol)
    mailbox = airedale.mailboxes.order_by("pk").first()
    response = signed_in(client, alice).get(f"/api/mailboxes/{mailbox.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == MailboxStatus.SCHEDULED
    assert body["migration"] == {
        "wave": str(wave.public_id),
        "wave_name": "Weeknight 1",
        "booking": str(alice_booking.public_id),
        "booking_status": "approved",
        "active": True,
        "backend_status": "",
        "bytes_transferred": 0,
        "items_transferred": 0,
        "attempts": 0,
        "last_error": "",
        "last_activity_at": None,
    }
    assert [(e["from_status"], e["to_status"]) for e in body["timeline"]] == [
        ("not_scheduled", "booked"),
        ("booked", "scheduled"),
    ]
    first = body["timeline"][0]
    assert first["actor_label"] == "Alice"
    assert first["reason"] == "Booked into Weeknight 1"
    assert set(first) == {"at", "actor_label", "from_status", "to_status", "reason"}


def test_an_it_lead_cannot_fetch_another_organisations_mailbox(client, alice, airedale, bradford):
    mailbox = bradford.mailboxes.first()
    response = signed_in(client, alice).get(f"/api/mailboxes/{mailbox.pk}/")
    assert response.status_code == 404
    assert mailbox.address not in response.content.decode()


def test_an_unknown_mailbox_is_not_found(client, carol, airedale):
    assert signed_in(client, carol).get("/api/mailboxes/999999/").status_code == 404
