"""/api/waves/: everyone lists waves with their capacity; the central team sees progress,
creates waves and moves them on."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.api.conftest import expire_deadline, post_json, signed_in, snapshot
from tests.conftest import GB, make_wave
from waves.models import Booking, BookingStatus, Wave, WaveEvent, WaveStatus
from waves.services import booking_approve, wave_close

# List and detail


@pytest.mark.parametrize("user", ["alice", "carol", "dave"])
def test_every_role_lists_waves_with_capacity_used_and_free(
    client, request, user, wave, alice_booking
):
    response = signed_in(client, request.getfixturevalue(user)).get("/api/waves/")
    assert response.status_code == 200
    (listed,) = response.json()["results"]
    assert listed["id"] == str(wave.public_id)
    assert listed["name"] == "Weeknight 1"
    assert listed["status"] == "open"
    assert listed["capacity_mailboxes"] == 1000
    assert listed["used_mailboxes"] == 30
    assert listed["free_mailboxes"] == 970
    assert listed["capacity_bytes"] == 1000 * GB
    assert listed["used_bytes"] == 15 * GB
    assert listed["free_bytes"] == 985 * GB


def test_a_waves_progress_follows_its_mailboxes_through_booking_approval_and_withdrawal(
    client, alice, carol, wave, alice_booking
):
    def progress() -> dict:
        body = signed_in(client, carol).get(f"/api/waves/{wave.public_id}/").json()["progress"]
        return {row["status"]: row["count"] for row in body["by_status"]} | {
            "bytes_total": body["bytes_total"]
        }

    assert progress() == {"booked": 30, "bytes_total": 15 * GB}
    post_json(client, f"/api/bookings/{alice_booking.public_id}/approve/")
    assert progress() == {"scheduled": 30, "bytes_total": 15 * GB}
    signed_in(client, alice)
    post_json(client, f"/api/bookings/{alice_booking.public_id}/withdraw/")
    assert progress() == {"bytes_total": 0}


def test_capacity_freed_by_a_withdrawn_booking_is_free_again(client, alice, wave, alice_booking):
    signed_in(client, alice)
    post_json(client, f"/api/bookings/{alice_booking.public_id}/withdraw/")
    listed = client.get("/api/waves/").json()["results"][0]
    assert listed["used_mailboxes"] == 0
    assert listed["free_mailboxes"] == 1000


def test_bookable_lists_only_open_waves_before_their_deadline(
    client, alice, carol, wave, planned_wave
):
    past = make_wave(carol, name="Weeknight 2")
    expire_deadline(past)
    signed_in(client, alice)
    assert [w["name"] for w in client.get("/api/waves/").json()["results"]] == [
        "Weeknight 1",
        "Weeknight 2",
        "Weekend 1",
    ]
    bookable = client.get("/api/waves/?bookable=true").json()["results"]
    assert [w["name"] for w in bookable] == ["Weeknight 1"]


def test_it_filters_waves_by_status(client, carol, wave, planned_wave):
    response = signed_in(client, carol).get("/api/waves/?status=planned")
    assert [w["name"] for w in response.json()["results"]] == ["Weekend 1"]


def test_the_central_team_sees_a_waves_progress(client, carol, wave, alice_booking):
    booking_approve(booking=alice_booking, actor=carol)
    response = signed_in(client, carol).get(f"/api/waves/{wave.public_id}/")
    assert response.status_code == 200
    body = response.json()
    assert body["used_mailboxes"] == 30
    assert body["progress"] == {
        "by_status": [{"status": "scheduled", "label": "Scheduled", "count": 30}],
        "total": 30,
        "completed": 0,
        "failed": 0,
        "percent_completed": 0.0,
        "bytes_done": 0,
        "bytes_total": 15 * GB,
        "awaiting_approval": 0,
    }


def test_an_unknown_wave_is_not_found(client, carol, wave):
    signed_in(client, carol)
    assert client.get("/api/waves/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert client.get("/api/waves/not-a-uuid/").status_code == 404


# Create


def wave_body(**changes) -> dict:
    starts = timezone.now() + timedelta(days=14)
    body = {
        "name": "Weekend 7",
        "kind": "weekend",
        "starts_at": starts.isoformat(),
        "cutover_at": (starts + timedelta(hours=36)).isoformat(),
        "booking_deadline": (starts - timedelta(days=3)).isoformat(),
        "capacity_mailboxes": 5000,
        "capacity_gb": 8000,
    }
    return {**body, **changes}


def test_the_central_team_creates_a_planned_wave(client, carol):
    body = wave_body(
        starts_at="2099-03-25T18:00:00+00:00",
        cutover_at="2099-03-27T06:00:00+01:00",
        booking_deadline="2099-03-20T12:00:00Z",
    )
    response = post_json(signed_in(client, carol), "/api/waves/", body)
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["status"] == "planned"
    assert created["used_mailboxes"] == 0
    assert created["free_mailboxes"] == 5000
    wave = Wave.objects.get(public_id=created["id"])
    assert wave.name == "Weekend 7"
    assert wave.cutover_at.isoformat() == "2099-03-27T05:00:00+00:00"
    event = WaveEvent.objects.get(wave=wave)
    assert (event.to_status, event.actor_label) == (WaveStatus.PLANNED, "Carol")


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"starts_at": "next Tuesday"}, "starts_at", "ISO 8601"),
        ({"starts_at": "2099-02-30T18:00:00Z"}, "starts_at", "ISO 8601"),
        ({"cutover_at": 1774893600}, "cutover_at", "ISO 8601"),
        ({"booking_deadline": "2099-03-20T12:00:00"}, "booking_deadline", "UTC offset"),
        ({"starts_at": "2099-03-25"}, "starts_at", "UTC offset"),
        ({"starts_at": None}, "starts_at", "null"),
        ({"capacity_mailboxes": 0}, "capacity_mailboxes", "greater than or equal to 1"),
        ({"capacity_gb": -5}, "capacity_gb", "greater than or equal to 1"),
        ({"capacity_gb": "lots"}, "capacity_gb", "valid integer"),
        ({"kind": "fortnightly"}, "kind", "not a valid choice"),
        ({"name": ""}, "name", "blank"),
        ({"name": "weeknight 1"}, "name", "already exists"),
    ],
)
def test_it_refuses_a_wave_with_a_bad_field(client, carol, wave, changes, field, message):
    before = snapshot()
    response = post_json(signed_in(client, carol), "/api/waves/", wave_body(**changes))
    assert response.status_code == 400
    errors = response.json()
    assert list(errors) == [field]
    assert message in errors[field][0]
    assert snapshot() == before


def test_it_refuses_a_wave_with_fields_missing(client, carol):
    response = post_json(signed_in(client, carol), "/api/waves/", {})
    assert response.status_code == 400
    assert set(response.json()) == set(wave_body())
    assert Wave.objects.count() == 0


def test_it_refuses_a_booking_deadline_after_the_start(client, carol):
    starts = timezone.now() + timedelta(days=5)
    body = wave_body(
        starts_at=starts.isoformat(), booking_deadline=(starts + timedelta(minutes=1)).isoformat()
    )
    response = post_json(signed_in(client, carol), "/api/waves/", body)
    assert response.status_code == 400
    assert response.json() == {
        "booking_deadline": ["The booking deadline must be before the wave starts."]
    }
    assert Wave.objects.count() == 0


def test_it_refuses_a_cutover_before_the_start(client, carol):
    starts = timezone.now() + timedelta(days=5)
    body = wave_body(
        starts_at=starts.isoformat(),
        cutover_at=starts.isoformat(),
        booking_deadline=(starts - timedelta(days=1)).isoformat(),
    )
    response = post_json(signed_in(client, carol), "/api/waves/", body)
    assert response.status_code == 400
    assert response.json() == {"cutover_at": ["Cutover must be after the final sync starts."]}
    assert Wave.objects.count() == 0


def test_it_refuses_a_booking_deadline_already_past(client, carol):
    body = wave_body(booking_deadline=(timezone.now() - timedelta(minutes=1)).isoformat())
    response = post_json(signed_in(client, carol), "/api/waves/", body)
    assert response.status_code == 400
    assert response.json() == {"booking_deadline": ["The booking deadline must be in the future."]}
    assert Wave.objects.count() == 0


# Actions


def wave_status(wave) -> str:
    return Wave.objects.get(pk=wave.pk).status


def test_the_central_team_opens_a_planned_wave(client, carol, planned_wave):
    response = post_json(signed_in(client, carol), f"/api/waves/{planned_wave.public_id}/open/")
    assert response.status_code == 200
    assert response.json()["status"] == "open"
    assert wave_status(planned_wave) == WaveStatus.OPEN


def test_the_central_team_closes_an_open_wave(client, carol, wave):
    response = post_json(signed_in(client, carol), f"/api/waves/{wave.public_id}/close/")
    assert response.status_code == 200
    assert wave_status(wave) == WaveStatus.CLOSED


def test_the_central_team_starts_pauses_and_resumes_a_wave(
    client, carol, wave, alice_booking, django_capture_on_commit_callbacks
):
    booking_approve(booking=alice_booking, actor=carol)
    wave_close(wave=wave, actor=carol)
    signed_in(client, carol)
    url = f"/api/waves/{wave.public_id}"
    with django_capture_on_commit_callbacks() as queued:
        assert post_json(client, f"{url}/start/").json()["status"] == "running"
    assert len(queued) == 1  # the worker is asked to drive the wave
    response = post_json(client, f"{url}/pause/", {"reason": "Exchange Online incident"})
    assert response.json()["status"] == "paused"
    assert WaveEvent.objects.filter(wave=wave).last().reason == "Exchange Online incident"
    assert post_json(client, f"{url}/resume/").json()["status"] == "running"


def test_the_central_team_cancels_a_wave_and_its_bookings_are_withdrawn(
    client, carol, wave, alice_booking
):
    response = post_json(
        signed_in(client, carol),
        f"/api/waves/{wave.public_id}/cancel/",
        {"reason": "Change freeze"},
    )
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["used_mailboxes"] == 0
    alice_booking.refresh_from_db()
    assert alice_booking.status == BookingStatus.WITHDRAWN


def test_cancelling_needs_a_reason(client, carol, wave, alice_booking):
    before = snapshot()
    response = post_json(signed_in(client, carol), f"/api/waves/{wave.public_id}/cancel/")
    assert response.status_code == 400
    assert "reason" in response.json()
    assert snapshot() == before


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("open", "Weeknight 1 is open for booking, so it cannot become open for booking."),
        ("start", "Weeknight 1 has no approved bookings to migrate."),
        ("pause", "Weeknight 1 is open for booking, so it cannot become paused."),
        ("resume", "Weeknight 1 is open for booking, so it cannot become running."),
    ],
)
def test_it_refuses_a_move_the_rules_do_not_allow(client, carol, wave, action, message):
    before = snapshot()
    response = post_json(signed_in(client, carol), f"/api/waves/{wave.public_id}/{action}/")
    assert response.status_code == 409
    assert response.json() == {"detail": message}
    assert snapshot() == before


def test_it_refuses_to_start_a_wave_with_bookings_awaiting_a_decision(
    client, carol, wave, alice_booking, bob_booking
):
    booking_approve(booking=alice_booking, actor=carol)
    wave_close(wave=wave, actor=carol)
    before = snapshot()
    response = post_json(signed_in(client, carol), f"/api/waves/{wave.public_id}/start/")
    assert response.status_code == 409
    assert "waiting for a decision" in response.json()["detail"]
    assert snapshot() == before


def test_it_refuses_to_open_a_wave_whose_deadline_has_passed(client, carol, planned_wave):
    expire_deadline(planned_wave)
    before = snapshot()
    response = post_json(signed_in(client, carol), f"/api/waves/{planned_wave.public_id}/open/")
    assert response.status_code == 409
    assert response.json() == {
        "detail": "Weekend 1's booking deadline has passed, so it cannot open."
    }
    assert snapshot() == before


def test_an_action_on_an_unknown_wave_is_not_found(client, carol):
    response = post_json(
        signed_in(client, carol), "/api/waves/00000000-0000-0000-0000-000000000000/open/"
    )
    assert response.status_code == 404


def test_an_unknown_action_is_not_found(client, carol, wave):
    response = post_json(signed_in(client, carol), f"/api/waves/{wave.public_id}/explode/")
    assert response.status_code == 404
    assert Booking.objects.count() == 0
