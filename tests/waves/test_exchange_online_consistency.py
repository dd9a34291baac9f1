"""Data consistency: a move graded Investigate (or Poor) waits for the central team's approval.

Exchange Online grades each move (DataConsistencyScore); for Investigate and Poor it holds the
move before completion until its skipped items are approved (Set-MigrationUser
-ApproveSkippedItems). The engine keeps the wave open while any such mailbox waits, the wave
page lists them, and the central team approves them there. Driven against the local stand-in.
"""

import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ

from mailboxes.models import Mailbox, MailboxStatus
from standins.exchange_online import start_standin
from tests.conftest import (
    assert_migration_histories,
    client_for,
    make_approved_wave,
    make_wave,
    start_wave_now,
)
from waves.backends import get_backend
from waves.backends.exchange_online import ExchangeOnlineBackend, _consistency
from waves.backends.simulator import SimulatorBackend
from waves.models import CohortMailbox, SimulatedUser, Wave, WaveStatus
from waves.selectors import wave_awaiting_approval
from waves.tasks import approve_investigate_items
from waves.transfers import mailbox_approve_skipped_items, wave_advance

pytestmark = pytest.mark.django_db
S = MailboxStatus
HELD = "user00004@rcf.nhs.net"
POOR = "user00002@b83001.nhs.net"


def standin_grading(settings, consistency: dict[str, str]):
    _, server = start_standin(time_scale=2000.0, consistency=consistency)
    settings.MIGRATION_BACKEND = "exchange_online"
    settings.EXCHANGE_ONLINE = server.portal_settings(backoff_seconds=0.01, statistics_per_poll=50)
    settings.WAVE_MAX_BATCHES = 2
    settings.MAILBOX_MAX_ATTEMPTS = 1
    return server


@pytest.fixture
def standin(settings):
    server = standin_grading(
        settings, {HELD: "Investigate", POOR: "Poor", "user00005@rcf.nhs.net": "Good"}
    )
    yield server
    server.stop()


@pytest.fixture
def running_wave(standin, carol, airedale, alice, bradford, bob) -> Wave:
    wave = make_approved_wave(carol, [(airedale, alice), (bradford, bob)])
    return start_wave_now(wave, carol, cutover_in=timedelta(seconds=1))


def advance_until(wave: Wave, condition, seconds: float = 30.0) -> Wave:
    deadline = time.monotonic() + seconds
    while not condition(wave):
        assert time.monotonic() < deadline, list(
            CohortMailbox.objects.filter(booking__wave=wave)
            .exclude(mailbox__status=S.COMPLETED)
            .values_list("mailbox__address", "mailbox__status", "backend_status", "consistency")
        )
        wave = wave_advance(wave.pk)
        time.sleep(0.05)
    return wave


def settled_but_held(wave: Wave) -> bool:
    """Every mailbox completed but the two held ones, which are synced and waiting."""
    left = set(
        CohortMailbox.objects.filter(booking__wave=wave)
        .exclude(mailbox__status=S.COMPLETED)
        .values_list("mailbox__address", "mailbox__status")
    )
    return left == {(HELD, S.SYNCED), (POOR, S.SYNCED)}


def status_of(address: str) -> str:
    return Mailbox.objects.get(address=address).status


def test_a_held_move_keeps_the_wave_open_until_approved_through_the_wave_page(
    client, carol, running_wave, standin
):
    wave = advance_until(running_wave, settled_but_held)
    for _ in range(5):  # however long it waits, the wave does not finish
        wave = wave_advance(wave.pk)
    assert wave.status == WaveStatus.COMPLETING
    grades = dict(
        CohortMailbox.objects.filter(booking__wave=wave).values_list(
            "mailbox__address", "consistency"
        )
    )
    assert grades[HELD] == "Investigate"
    assert grades[POOR] == "Poor"
    assert grades["user00005@rcf.nhs.net"] == "Good"
    assert grades["user00000@rcf.nhs.net"] == "Perfect"
    assert [e.mailbox.address for e in wave_awaiting_approval(wave)] == [POOR, HELD]

    # The wave page lists both, with an approval button each.
    page = client_for(client, carol).get(reverse("waves:detail", args=[wave.public_id]))
    text = page.content.decode()
    assert "Waiting for approval of skipped items (2)" in text
    held_id = Mailbox.objects.get(address=HELD).pk
    approve = reverse("waves:approve_skipped_items", args=[wave.public_id, held_id])
    assert f'action="{approve}"' in text
    assert 'nhsuk-tag--red">Poor</strong>' in text
    # The htmx refresh of the progress shows the same.
    partial = client.get(
        reverse("waves:detail", args=[wave.public_id]) + "?shown=completing",
        headers={"HX-Request": "true"},
    )
    assert "Waiting for approval of skipped items (2)" in partial.content.decode()
    api = client.get(f"/api/waves/{wave.public_id}/").json()
    assert api["progress"]["awaiting_approval"] == 2

    response = client.post(approve, follow=True)
    assert f"{HELD}: skipped items approved; its move can complete." in response.content.decode()
    (call,) = standin.standin.cmdlets_called("Set-MigrationUser")
    assert call.parameters == {"Identity": HELD, "ApproveSkippedItems": True}
    entry = CohortMailbox.objects.get(mailbox__address=HELD)
    assert entry.skipped_items_approved_by == carol
    assert entry.skipped_items_approved_at is not None

    wave = advance_until(wave, lambda w: status_of(HELD) == S.COMPLETED)
    assert wave.status == WaveStatus.COMPLETING  # the Poor one still waits
    mailbox_approve_skipped_items(mailbox=Mailbox.objects.get(address=POOR), actor=carol)
    wave = advance_until(wave, lambda w: w.status == WaveStatus.DONE)

    ids = CohortMailbox.objects.filter(booking__wave=wave).values_list("mailbox_id", flat=True)
    assert set(Mailbox.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.COMPLETED}
    assert_migration_histories(ids)
    assert not wave_awaiting_approval(wave).exists()


def test_a_held_move_reported_failed_still_holds_the_wave(carol, running_wave, standin):
    wave = advance_until(running_wave, settled_but_held)
    mailbox_approve_skipped_items(mailbox=Mailbox.objects.get(address=POOR), actor=carol)
    standin.standin.set_user_status(HELD, "CompletionFailed", "Skipped items need approval.")

    wave = advance_until(
        wave, lambda w: status_of(HELD) == S.FAILED and status_of(POOR) == S.COMPLETED
    )
    for _ in range(3):
        wave = wave_advance(wave.pk)
    assert wave.status == WaveStatus.COMPLETING  # failed, but an approval may still let it go on

    mailbox_approve_skipped_items(mailbox=Mailbox.objects.get(address=HELD), actor="Script")
    wave = wave_advance(wave.pk)
    assert wave.status == WaveStatus.DONE
    assert wave.events.last().reason == "41 completed, 1 need attention"
    assert CohortMailbox.objects.get(mailbox__address=HELD).skipped_items_approved_by is None


def test_approval_is_refused_where_nothing_waits(client, carol, running_wave, standin):
    wave = advance_until(running_wave, settled_but_held)
    client_for(client, carol)
    for address in ["user00000@rcf.nhs.net", "user00005@rcf.nhs.net"]:  # Perfect, Good
        mailbox = Mailbox.objects.get(address=address)
        url = reverse("waves:approve_skipped_items", args=[wave.public_id, mailbox.pk])
        response = client.post(url, follow=True)
        assert f"{address} has no skipped items waiting for approval." in response.content.decode()

    held = Mailbox.objects.get(address=HELD)
    url = reverse("waves:approve_skipped_items", args=[wave.public_id, held.pk])
    client.post(url)
    response = client.post(url, follow=True)  # approved already
    assert f"{HELD} has no skipped items waiting for approval." in response.content.decode()
    assert len(standin.standin.cmdlets_called("Set-MigrationUser")) == 1


@pytest.mark.parametrize("person", ["alice", "dave"])
def test_only_the_central_team_approves_skipped_items(client, request, person, running_wave):
    mailbox = Mailbox.objects.get(address=HELD)
    url = reverse("waves:approve_skipped_items", args=[running_wave.public_id, mailbox.pk])
    client_for(client, request.getfixturevalue(person))
    assert client.post(url).status_code == 403
    assert client_for(client, request.getfixturevalue("carol")).get(url).status_code == 405


def test_a_mailbox_of_another_wave_is_not_found(client, carol, running_wave, standin):
    other = make_wave(carol, name="Weeknight 2")
    mailbox = Mailbox.objects.get(address=HELD)
    url = reverse("waves:approve_skipped_items", args=[other.public_id, mailbox.pk])
    assert client_for(client, carol).post(url).status_code == 404


def test_the_backend_approves_a_user_of_its_own_batch_only(standin):
    backend = ExchangeOnlineBackend(**standin.portal_settings(backoff_seconds=0.01))
    now = timezone.now()
    for name, address in [("b1", HELD), ("b2", "other@rcf.nhs.net")]:
        backend.create_batch(
            name=name, addresses=[address], start_after=now, complete_after=now + timedelta(days=1)
        )

    with pytest.raises(Exception, match="is in b1, not in the migration batch 'b2'"):
        backend.approve_skipped_items("b2", HELD)
    backend.approve_skipped_items("b1", HELD)

    assert standin.standin.batches["b1"].users[HELD].approved_at is not None


def test_grades_are_read_by_name_and_anything_else_is_none():
    assert [_consistency(v) for v in ["Investigate", "poor", " Good ", None, 3, "Unknown"]] == [
        "Investigate",
        "Poor",
        "Good",
        "",
        "",
        "",
    ]


def test_the_simulator_records_an_approval(settings, carol, airedale, alice):
    settings.MIGRATION_BACKEND = "simulator"
    backend = get_backend()
    assert isinstance(backend, SimulatorBackend)
    now = timezone.now()
    backend.create_batch(
        name="sim-1", addresses=[HELD], start_after=now, complete_after=now + timedelta(hours=1)
    )

    backend.approve_skipped_items("sim-1", HELD)

    assert SimulatedUser.objects.get(address=HELD).skipped_items_approved_at is not None
    with pytest.raises(Exception, match="is not in the migration batch"):
        backend.approve_skipped_items("sim-1", "nobody@rcf.nhs.net")


INVESTIGATE = [HELD, "user00006@rcf.nhs.net", "user00007@b83001.nhs.net"]


@pytest.fixture
def standin_three_investigate(settings):
    server = standin_grading(settings, {**dict.fromkeys(INVESTIGATE, "Investigate"), POOR: "Poor"})
    yield server
    server.stop()


def settled_but_four_held(wave: Wave) -> bool:
    left = set(
        CohortMailbox.objects.filter(booking__wave=wave)
        .exclude(mailbox__status=S.COMPLETED)
        .values_list("mailbox__address", "mailbox__status")
    )
    return left == {(address, S.SYNCED) for address in [*INVESTIGATE, POOR]}


def test_the_central_team_approves_every_investigate_grade_at_once_and_poor_waits(
    client,
    carol,
    standin_three_investigate,
    airedale,
    alice,
    bradford,
    bob,
    django_capture_on_commit_callbacks,
):
    standin = standin_three_investigate
    wave = make_approved_wave(carol, [(airedale, alice), (bradford, bob)])
    wave = advance_until(
        start_wave_now(wave, carol, cutover_in=timedelta(seconds=1)), settled_but_four_held
    )
    page = reverse("waves:detail", args=[wave.public_id])
    approve_all = reverse("waves:approve_investigate_items", args=[wave.public_id])
    text = client_for(client, carol).get(page).content.decode()
    assert "Approve all 3 graded Investigate" in text
    assert f'action="{approve_all}"' in text

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(approve_all, follow=True)
    assert "Approving the skipped items of 3 mailboxes graded Investigate" in (
        response.content.decode()
    )
    task = OrmQ.objects.get().task
    assert (task["func"], task["args"]) == (
        "waves.tasks.approve_investigate_items",
        (wave.pk, carol.pk),
    )
    assert not standin.standin.cmdlets_called("Set-MigrationUser")  # the worker does it

    # The worker: the first mailbox's call fails at Exchange; the other two are approved.
    standin.standin.fail_next(1, status=400)
    assert approve_investigate_items(wave.pk, carol.pk) == 2
    approved = {
        call.parameters["Identity"]
        for call in standin.standin.cmdlets_called()
        if call.cmdlet == "Set-MigrationUser"
    }
    assert approved == set(INVESTIGATE[1:])
    assert set(
        CohortMailbox.objects.exclude(skipped_items_approved_at=None).values_list(
            "mailbox__address", "skipped_items_approved_by"
        )
    ) == {(address, carol.pk) for address in INVESTIGATE[1:]}
    # Delivered again (or asked again), it approves only what still waits: the one that failed.
    assert approve_investigate_items(wave.pk, carol.pk) == 1
    assert len(standin.standin.cmdlets_called("Set-MigrationUser")) == 3

    wave = advance_until(wave, lambda w: all(status_of(a) == S.COMPLETED for a in INVESTIGATE))
    assert wave.status == WaveStatus.COMPLETING  # the Poor one waits for its own decision
    assert [e.mailbox.address for e in wave_awaiting_approval(wave)] == [POOR]
    assert "graded Investigate</button>" not in client.get(page).content.decode()
    OrmQ.objects.all().delete()
    response = client.post(approve_all, follow=True)
    assert f"No mailbox of {wave.name} graded Investigate waits for approval." in (
        response.content.decode()
    )
    assert not OrmQ.objects.exists()


@pytest.mark.parametrize("person", ["alice", "dave"])
def test_only_the_central_team_approves_all_investigate_grades(
    client, request, person, running_wave
):
    url = reverse("waves:approve_investigate_items", args=[running_wave.public_id])
    client_for(client, request.getfixturevalue(person))
    assert client.post(url).status_code == 403
    assert not OrmQ.objects.exists()
