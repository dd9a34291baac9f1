"""/api/bookings/: IT leads book their own organisations into waves and may withdraw; the
central team approves or rejects. Every refusal leaves every row as it was."""

import pytest

from mailboxes.models import Mailbox, MailboxStatus
from tests.api.conftest import expire_deadline, post_json, signed_in, snapshot
from tests.conftest import GB, make_wave
from waves.models import Booking, BookingStatus, CohortMailbox
from waves.services import booking_approve, booking_create


def book(client, wave, organisation: str, **body):
    return post_json(
        client,
        "/api/bookings/",
        {"wave": str(wave.public_id), "organisation": organisation, **body},
    )


def statuses(organisation) -> set[str]:
    return set(organisation.mailboxes.values_list("status", flat=True))


# Booking


def test_an_it_lead_books_all_their_unbooked_mailboxes(client, alice, wave, airedale):
    response = book(signed_in(client, alice), wave, "RCF")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "submitted"
    assert body["wave"] == str(wave.public_id)
    assert body["wave_name"] == "Weeknight 1"
    assert body["organisation"] == "RCF"
    assert body["mailbox_count"] == 30
    assert body["total_bytes"] == 15 * GB
    assert body["submitted_by"] == "Alice"
    booking = Booking.objects.get(public_id=body["id"])
    assert booking.cohort.filter(active=True).count() == 30
    assert statuses(airedale) == {MailboxStatus.BOOKED}


def test_an_it_lead_books_the_mailboxes_they_choose(client, alice, wave, airedale):
    chosen = list(airedale.mailboxes.order_by("pk").values_list("pk", flat=True)[:3])
    response = book(signed_in(client, alice), wave, "RCF", mailboxes=chosen)
    assert response.status_code == 201
    assert response.json()["mailbox_count"] == 3
    assert set(
        Mailbox.objects.filter(status=MailboxStatus.BOOKED).values_list("pk", flat=True)
    ) == set(chosen)


def test_an_it_lead_cannot_book_another_organisation(client, alice, wave, airedale, bradford):
    before = snapshot()
    response = book(signed_in(client, alice), wave, "B83001")
    assert response.status_code == 404
    assert "Bradford" not in response.content.decode()
    assert snapshot() == before


def test_an_it_lead_cannot_book_another_organisations_mailboxes_as_their_own(
    client, alice, wave, airedale, bradford
):
    theirs = list(bradford.mailboxes.values_list("pk", flat=True)[:2])
    before = snapshot()
    response = book(signed_in(client, alice), wave, "RCF", mailboxes=theirs)
    assert response.status_code == 409
    assert response.json() == {
        "detail": "2 of the chosen mailboxes do not belong to Airedale NHS Foundation Trust."
    }
    assert snapshot() == before


def test_an_it_lead_books_the_mailboxes_they_list_by_address(client, alice, wave, airedale):
    listed = ["User00002@RCF.nhs.net", "user00007@rcf.nhs.net", " user00002@rcf.nhs.net"]
    response = book(signed_in(client, alice), wave, "RCF", addresses=listed)
    assert response.status_code == 201, response.content
    assert response.json()["mailbox_count"] == 2
    assert set(Mailbox.objects.filter(status=MailboxStatus.BOOKED).values_list("address")) == {
        ("user00002@rcf.nhs.net",),
        ("user00007@rcf.nhs.net",),
    }


def test_listed_addresses_of_another_organisation_are_named_and_nothing_is_booked(
    client, alice, wave, airedale, bradford
):
    listed = ["user00001@rcf.nhs.net", "user00003@b83001.nhs.net", "nobody@nhs.net"]
    before = snapshot()
    response = book(signed_in(client, alice), wave, "RCF", addresses=listed)
    assert response.status_code == 409
    assert response.json() == {
        "detail": "nobody@nhs.net, user00003@b83001.nhs.net are not mailboxes of "
        "Airedale NHS Foundation Trust."
    }
    assert snapshot() == before


def test_mailboxes_over_200_gb_are_named_and_nothing_is_booked(client, alice, wave, airedale):
    mailbox = airedale.mailboxes.order_by("pk").first()
    Mailbox.objects.filter(pk=mailbox.pk).update(size_bytes=201 * GB)
    before = snapshot()
    response = book(signed_in(client, alice), wave, "RCF", mailboxes=[mailbox.pk])
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"{mailbox.address} (201 GB) is over 200 GB, which Exchange Online does not"
        " move: reduce it (archive or delete old mail) before booking, or book the cohort"
        " without it."
    }
    assert snapshot() == before

    response = book(client, wave, "RCF")
    assert response.status_code == 201
    assert response.json()["mailbox_count"] == 29
    assert Mailbox.objects.get(pk=mailbox.pk).status == MailboxStatus.NOT_SCHEDULED


def test_listed_addresses_already_booked_are_named_and_nothing_is_booked(
    client, alice, wave, airedale
):
    booked = airedale.mailboxes.filter(address="user00005@rcf.nhs.net").values_list("pk", flat=True)
    booking_create(wave=wave, organisation=airedale, actor=alice, mailbox_ids=list(booked))
    before = snapshot()
    response = book(
        signed_in(client, alice),
        wave,
        "RCF",
        addresses=["user00004@rcf.nhs.net", "user00005@rcf.nhs.net"],
    )
    assert response.status_code == 409
    assert response.json() == {
        "detail": "user00005@rcf.nhs.net (booked) is already booked or migrated."
    }
    assert snapshot() == before


def test_an_unknown_wave_is_a_field_error(client, alice, airedale):
    before = snapshot()
    response = post_json(
        signed_in(client, alice),
        "/api/bookings/",
        {"wave": "00000000-0000-0000-0000-000000000000", "organisation": "RCF"},
    )
    assert response.status_code == 400
    assert response.json() == {"wave": ["No wave with this id."]}
    assert snapshot() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"wave": "Weeknight 1", "organisation": "RCF"}, "wave"),
        ({"organisation": "RCF"}, "wave"),
        ({"wave": "WAVE"}, "organisation"),
        ({"wave": "WAVE", "organisation": "RCF", "mailboxes": []}, "mailboxes"),
        ({"wave": "WAVE", "organisation": "RCF", "mailboxes": ["first"]}, "mailboxes"),
        ({"wave": "WAVE", "organisation": "RCF", "mailboxes": 7}, "mailboxes"),
        ({"wave": "WAVE", "organisation": "RCF", "addresses": []}, "addresses"),
        ({"wave": "WAVE", "organisation": "RCF", "addresses": "a@nhs.net"}, "addresses"),
        ({"wave": "WAVE", "organisation": "RCF", "addresses": ["x" * 255]}, "addresses"),
        (
            {"wave": "WAVE", "organisation": "RCF", "mailboxes": [1], "addresses": ["a@nhs.net"]},
            "non_field_errors",
        ),
    ],
)
def test_it_refuses_a_malformed_booking(client, alice, wave, airedale, body, field):
    body = {k: str(wave.public_id) if v == "WAVE" else v for k, v in body.items()}
    before = snapshot()
    response = post_json(signed_in(client, alice), "/api/bookings/", body)
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert snapshot() == before


def test_it_refuses_a_cohort_over_the_waves_capacity(client, alice, carol, airedale):
    small = make_wave(carol, name="Pilot", capacity_mailboxes=10)
    before = snapshot()
    response = book(signed_in(client, alice), small, "RCF")
    assert response.status_code == 409
    assert response.json() == {
        "detail": "Pilot has room for 10 more mailboxes; this cohort has 30."
    }
    assert snapshot() == before


def test_it_refuses_a_cohort_over_the_waves_data_budget(client, alice, carol, airedale):
    small = make_wave(carol, name="Pilot", capacity_gb=10)
    before = snapshot()
    response = book(signed_in(client, alice), small, "RCF")
    assert response.status_code == 409
    assert response.json() == {
        "detail": "Pilot has room for 10.0 GB more; this cohort holds 15.0 GB."
    }
    assert snapshot() == before


def test_it_refuses_booking_the_same_mailboxes_twice(client, alice, wave, airedale, alice_booking):
    signed_in(client, alice)
    before = snapshot()
    response = book(client, wave, "RCF")
    assert response.status_code == 409
    assert response.json() == {
        "detail": "Airedale NHS Foundation Trust has no mailboxes left to book."
    }
    one = airedale.mailboxes.order_by("pk").first().pk
    response = book(client, wave, "RCF", mailboxes=[one])
    assert response.status_code == 409
    assert response.json() == {
        "detail": "1 of the chosen mailboxes are already booked or migrated."
    }
    assert snapshot() == before


def test_it_refuses_a_booking_after_the_deadline(client, alice, wave, airedale):
    expire_deadline(wave)
    before = snapshot()
    response = book(signed_in(client, alice), wave, "RCF")
    assert response.status_code == 409
    assert response.json() == {"detail": "The booking deadline for Weeknight 1 has passed."}
    assert snapshot() == before


def test_it_refuses_a_booking_into_a_wave_not_open(client, alice, planned_wave, airedale):
    before = snapshot()
    response = book(signed_in(client, alice), planned_wave, "RCF")
    assert response.status_code == 409
    assert response.json() == {"detail": "Weekend 1 is planned, not open for booking."}
    assert snapshot() == before


# Listing


def test_an_it_lead_lists_only_their_organisations_bookings(
    client, alice, alice_booking, bob_booking
):
    response = signed_in(client, alice).get("/api/bookings/")
    assert response.status_code == 200
    assert [b["id"] for b in response.json()["results"]] == [str(alice_booking.public_id)]


def test_the_central_team_lists_every_booking(client, carol, alice_booking, bob_booking):
    response = signed_in(client, carol).get("/api/bookings/")
    assert {b["organisation"] for b in response.json()["results"]} == {"RCF", "B83001"}


def test_it_filters_bookings_by_status_wave_and_organisation(
    client, alice, bob, carol, wave, airedale, bradford, alice_booking
):
    other = make_wave(carol, name="Weeknight 2")
    assert book(signed_in(client, bob), other, "B83001").status_code == 201
    booking_approve(booking=alice_booking, actor=carol)
    signed_in(client, carol)

    def orgs(query):
        return [b["organisation"] for b in client.get(f"/api/bookings/{query}").json()["results"]]

    assert orgs("?status=approved") == ["RCF"]
    assert orgs("?status=submitted") == ["B83001"]
    assert orgs(f"?wave={other.public_id}") == ["B83001"]
    assert orgs("?organisation=RCF") == ["RCF"]
    assert client.get("/api/bookings/?status=lost").status_code == 400


def test_an_it_lead_cannot_fetch_another_organisations_booking(client, alice, bob_booking):
    response = signed_in(client, alice).get(f"/api/bookings/{bob_booking.public_id}/")
    assert response.status_code == 404


def test_an_it_lead_fetches_their_booking(client, alice, alice_booking):
    response = signed_in(client, alice).get(f"/api/bookings/{alice_booking.public_id}/")
    assert response.status_code == 200
    assert response.json()["mailbox_count"] == 30


# Decisions


def test_the_central_team_approves_a_booking(client, carol, airedale, alice_booking):
    response = post_json(
        signed_in(client, carol), f"/api/bookings/{alice_booking.public_id}/approve/"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "approved"
    assert statuses(airedale) == {MailboxStatus.SCHEDULED}


def test_it_refuses_to_approve_a_booking_twice(client, carol, alice_booking):
    booking_approve(booking=alice_booking, actor=carol)
    before = snapshot()
    response = post_json(
        signed_in(client, carol), f"/api/bookings/{alice_booking.public_id}/approve/"
    )
    assert response.status_code == 409
    assert response.json() == {"detail": "This booking is approved, so it cannot be approved."}
    assert snapshot() == before


def test_the_central_team_rejects_a_booking_with_a_reason(client, carol, airedale, alice_booking):
    response = post_json(
        signed_in(client, carol),
        f"/api/bookings/{alice_booking.public_id}/reject/",
        {"reason": "Wave reserved for GP practices"},
    )
    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    assert response.json()["decision_reason"] == "Wave reserved for GP practices"
    assert statuses(airedale) == {MailboxStatus.NOT_SCHEDULED}
    assert not CohortMailbox.objects.filter(active=True).exists()


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 501}])
def test_rejecting_needs_a_reason(client, carol, alice_booking, body):
    before = snapshot()
    response = post_json(
        signed_in(client, carol), f"/api/bookings/{alice_booking.public_id}/reject/", body
    )
    assert response.status_code == 400
    assert list(response.json()) == ["reason"]
    assert snapshot() == before


def test_an_unknown_booking_is_not_found(client, carol):
    url = "/api/bookings/00000000-0000-0000-0000-000000000000/approve/"
    assert post_json(signed_in(client, carol), url).status_code == 404


# Withdrawing


def test_an_it_lead_withdraws_their_booking(client, alice, airedale, alice_booking):
    response = post_json(
        signed_in(client, alice),
        f"/api/bookings/{alice_booking.public_id}/withdraw/",
        {"reason": "Clinic moving site"},
    )
    assert response.status_code == 200
    assert response.json()["status"] == "withdrawn"
    assert statuses(airedale) == {MailboxStatus.NOT_SCHEDULED}
    assert alice_booking.events.last().reason == "Clinic moving site"


def test_an_it_lead_cannot_withdraw_another_organisations_booking(
    client, alice, bradford, bob_booking
):
    before = snapshot()
    response = post_json(
        signed_in(client, alice), f"/api/bookings/{bob_booking.public_id}/withdraw/"
    )
    assert response.status_code == 404
    assert snapshot() == before
    assert statuses(bradford) == {MailboxStatus.BOOKED}


def test_the_central_team_withdraws_any_booking(client, carol, alice_booking):
    response = post_json(
        signed_in(client, carol), f"/api/bookings/{alice_booking.public_id}/withdraw/"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "withdrawn"


def test_it_refuses_to_withdraw_after_the_deadline(client, alice, wave, alice_booking):
    expire_deadline(wave)
    before = snapshot()
    response = post_json(
        signed_in(client, alice), f"/api/bookings/{alice_booking.public_id}/withdraw/"
    )
    assert response.status_code == 409
    assert response.json() == {
        "detail": "The booking deadline for Weeknight 1 has passed: ask the central team."
    }
    assert snapshot() == before


def test_it_refuses_to_withdraw_a_rejected_booking(client, alice, carol, alice_booking):
    signed_in(client, carol)
    post_json(client, f"/api/bookings/{alice_booking.public_id}/reject/", {"reason": "Full"})
    before = snapshot()
    response = post_json(
        signed_in(client, alice), f"/api/bookings/{alice_booking.public_id}/withdraw/"
    )
    assert response.status_code == 409
    assert response.json() == {"detail": "This booking is rejected, so it cannot be withdrawn."}
    assert snapshot() == before
    assert Booking.objects.get(pk=alice_booking.pk).status == BookingStatus.REJECTED
