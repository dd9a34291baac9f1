"""Operator tools before a wave starts: the pre-flight check and the batch CSV, through HTTP.

The pre-flight check runs against the simulator and against the local stand-in for Exchange
Online (a real HTTPS server on loopback, signed in to with the real msal library).
"""

import csv
import html
import io
import re
from datetime import timedelta

import pytest
from django.urls import reverse

from mailboxes.models import Mailbox
from standins.exchange_online import Batch, start_standin
from tests.conftest import GB, client_for, make_approved_wave, make_organisation, start_wave_now
from waves.backends.exchange_online import ExchangeOnlineBackend
from waves.models import BookingStatus, CohortMailbox, MigrationBatch, WaveStatus
from waves.preflight import wave_preflight
from waves.services import booking_approve, booking_create
from waves.transfers import pack_cohorts, wave_plan

pytestmark = pytest.mark.django_db
CHECKS = [
    "Approved cohorts",
    "Mailbox sizes",
    "Sign-in to the migration service",
    "Migration endpoint",
    "Room for migration batches",
    "Mailboxes ready to move",
]


@pytest.fixture
def closed_wave(carol, airedale, alice, bradford, bob, settings):
    """Airedale (30 mailboxes) and Bradford (12), approved; the wave closed for booking."""
    settings.WAVE_MAX_BATCHES = 2
    return make_approved_wave(carol, [(airedale, alice), (bradford, bob)])


@pytest.fixture
def standin(settings):
    """The stand-in for Exchange Online, and the portal configured to drive it."""
    _, server = start_standin(time_scale=1000.0)
    settings.MIGRATION_BACKEND = "exchange_online"
    settings.EXCHANGE_ONLINE = server.portal_settings(backoff_seconds=0.01)
    yield server
    server.stop()


def run_preflight(client, user, wave):
    response = client_for(client, user).post(reverse("waves:preflight", args=[wave.public_id]))
    assert response.status_code == 200
    return response, shown_checks(response.content.decode())


def shown_checks(page: str) -> dict[str, tuple[str, str]]:
    """Each pre-flight row on the page: name → (tag, detail)."""
    section = page.split('id="preflight"', 1)[1].split("<h2", 1)[0]
    rows = re.findall(
        r'<dt class="nhsuk-summary-list__key">(.*?)</dt><dd class="nhsuk-summary-list__value">'
        r'<strong class="nhsuk-tag nhsuk-tag--\w+">(\w+)</strong>\s*(.*?)</dd>',
        section,
        re.S,
    )
    return {html.unescape(name): (tag, html.unescape(detail)) for name, tag, detail in rows}


# The pre-flight check.


def test_the_wave_page_offers_the_check_before_the_start_only(client, carol, closed_wave):
    page = client_for(client, carol).get(reverse("waves:detail", args=[closed_wave.public_id]))
    assert "Run pre-flight check" in page.content.decode()

    start_wave_now(closed_wave, carol, cutover_in=timedelta(hours=1))
    page = client.get(reverse("waves:detail", args=[closed_wave.public_id]))
    assert "Run pre-flight check" not in page.content.decode()
    response = client.post(reverse("waves:preflight", args=[closed_wave.public_id]), follow=True)
    assert "has started: the pre-flight check is for before." in response.content.decode()


@pytest.mark.parametrize("person", ["alice", "dave", "eve"])
def test_only_the_central_team_runs_the_check(client, request, person, closed_wave):
    client_for(client, request.getfixturevalue(person))
    assert client.post(reverse("waves:preflight", args=[closed_wave.public_id])).status_code == 403


def test_it_needs_a_post(client, carol, closed_wave):
    response = client_for(client, carol).get(
        reverse("waves:preflight", args=[closed_wave.public_id])
    )
    assert response.status_code == 405


def test_the_check_passes_against_the_simulator(client, carol, closed_wave):
    response, checks = run_preflight(client, carol, closed_wave)

    assert list(checks) == CHECKS
    assert {tag for tag, _ in checks.values()} == {"Pass"}
    assert checks["Approved cohorts"][1] == "2 approved cohorts, 42 mailboxes."
    assert checks["Sign-in to the migration service"][1] == "The simulator needs no sign-in."
    assert checks["Room for migration batches"][1] == (
        "The tenant holds 0 migration batches; this wave adds 2: 2 of the 100 a tenant may hold."
    )
    assert checks["Mailboxes ready to move"][1] == (
        "Looked up all 42 mailboxes: each is a mail user at the target, ready to move."
    )
    assert checks["Mailbox sizes"][1] == (
        "No mailbox is over 100 GB (from the portal's inventory; the largest is 0.5 GB)."
    )
    assert "Run pre-flight check again" in response.content.decode()
    assert not MigrationBatch.objects.exists()  # nothing planned, nothing sent


def test_the_check_passes_against_exchange_online_and_says_what_it_looked_at(
    client, carol, closed_wave, standin
):
    _, checks = run_preflight(client, carol, closed_wave)

    assert {tag for tag, _ in checks.values()} == {"Pass"}, checks
    assert checks["Sign-in to the migration service"][1] == (
        f"A token for {standin.url} came from {standin.url}/{standin.standin.tenant_id} for app "
        f"{standin.standin.client_id}."
    )
    assert checks["Migration endpoint"][1] == (
        "'Hybrid Migration Endpoint - EWS (Default Web Site)' answers: ExchangeRemoteMove for "
        "mail.nhs.net, at most 100 moves at once and 20 incremental syncs at once."
    )
    assert checks["Mailboxes ready to move"][1] == (
        "Looked up all 42 mailboxes: each is a mail user at the target, ready to move."
    )
    calls = [call.cmdlet for call in standin.standin.cmdlets_called()]
    assert sorted(set(calls)) == ["Get-MigrationBatch", "Get-MigrationEndpoint", "Get-Recipient"]
    assert calls.count("Get-Recipient") == 3  # 42 addresses, 20 a call
    assert standin.standin.batches == {}


def test_the_check_names_what_would_go_wrong(client, carol, closed_wave, standin, settings):
    exo = standin.standin
    for i in range(99):  # batches someone else left in the tenant
        exo.batches[f"earlier-{i:03d}"] = Batch(f"earlier-{i:03d}", {}, {})
    exo.absent_recipients = {"user00003@rcf.nhs.net", "user00007@b83001.nhs.net"}
    backend = ExchangeOnlineBackend(**settings.EXCHANGE_ONLINE)
    backend.create_batch(
        name="earlier-moved",
        addresses=["user00011@rcf.nhs.net"],
        start_after=closed_wave.starts_at,
        complete_after=closed_wave.cutover_at,
    )
    exo.set_user_status("user00011@rcf.nhs.net", "Completed")
    Mailbox.objects.filter(address="user00001@rcf.nhs.net").update(size_bytes=250 * GB)
    Mailbox.objects.filter(address="user00002@rcf.nhs.net").update(size_bytes=150 * GB)
    settings.EXCHANGE_ONLINE = {**settings.EXCHANGE_ONLINE, "source_endpoint": "Old endpoint"}

    _, checks = run_preflight(client, carol, closed_wave)

    assert {name: tag for name, (tag, _) in checks.items()} == {
        "Approved cohorts": "Pass",
        "Mailbox sizes": "Fail",
        "Sign-in to the migration service": "Pass",
        "Migration endpoint": "Fail",
        "Room for migration batches": "Fail",
        "Mailboxes ready to move": "Fail",
    }
    assert checks["Mailbox sizes"][1] == (
        "1 mailbox over 200 GB, which Exchange Online does not move: user00001@rcf.nhs.net "
        "(250.0 GB). Reduce them, or take them out of the wave. 1 mailbox over 100 GB, the "
        "primary mailbox limit on most plans: user00002@rcf.nhs.net (150.0 GB). Check their "
        "licences and archives before the wave."
    )
    assert checks["Migration endpoint"][1] == (
        "Exchange Online has no migration endpoint called 'Old endpoint': create it with "
        "New-MigrationEndpoint, or correct PORTAL_EXCHANGE_SOURCE_ENDPOINT."
    )
    assert checks["Room for migration batches"][1] == (
        "The tenant holds 100 migration batches; this wave adds 2: 102 of the 100 a tenant may "
        "hold. Remove finished batches (Remove-MigrationBatch), or lower PORTAL_WAVE_MAX_BATCHES."
    )
    assert checks["Mailboxes ready to move"][1] == (
        "Looked up all 42 mailboxes: 2 not found (user00003@rcf.nhs.net, "
        "user00007@b83001.nhs.net); 1 already a mailbox in Exchange Online "
        "(user00011@rcf.nhs.net)."
    )


def test_large_mailboxes_alone_are_a_warning(client, carol, closed_wave):
    Mailbox.objects.filter(address__in=["user00002@rcf.nhs.net", "user00004@rcf.nhs.net"]).update(
        size_bytes=120 * GB
    )

    _, checks = run_preflight(client, carol, closed_wave)

    tag, detail = checks["Mailbox sizes"]
    assert tag == "Warning"
    assert detail.startswith(
        "2 mailboxes over 100 GB, the primary mailbox limit on most plans: "
        "user00002@rcf.nhs.net (120.0 GB), user00004@rcf.nhs.net (120.0 GB)."
    )


def test_a_refused_sign_in_is_explained_and_the_rest_not_run(
    client, carol, closed_wave, standin, settings
):
    settings.EXCHANGE_ONLINE = {**settings.EXCHANGE_ONLINE, "client_secret": "wrong"}

    _, checks = run_preflight(client, carol, closed_wave)

    tag, detail = checks["Sign-in to the migration service"]
    assert tag == "Fail"
    assert detail.startswith("Exchange Online refused the portal's sign-in: AADSTS7000215")
    for name in CHECKS[3:]:
        assert checks[name] == (
            "Fail",
            "Not checked: the portal could not sign in to the migration service.",
        )
    assert standin.standin.cmdlets_called() == []


def test_an_unconfigured_backend_is_explained(client, carol, closed_wave, settings):
    settings.MIGRATION_BACKEND = "exchange_online"
    settings.EXCHANGE_ONLINE = {
        **settings.EXCHANGE_ONLINE,
        "tenant_id": "",
        "client_id": "",
        "organization": "",
        "source_endpoint": "",
        "target_delivery_domain": "",
    }

    _, checks = run_preflight(client, carol, closed_wave)

    assert checks["Sign-in to the migration service"][1].startswith(
        "Exchange Online is not configured: set PORTAL_EXCHANGE_TENANT_ID"
    )


def test_a_large_wave_is_sampled(closed_wave, standin):
    checks = {check.name: check for check in wave_preflight(closed_wave, sample=10)}

    assert checks["Mailboxes ready to move"].detail == (
        "Looked up 10 of the 42 mailboxes, chosen at random: each is a mail user at the target, "
        "ready to move."
    )
    (call,) = standin.standin.cmdlets_called("Get-Recipient")
    assert call.parameters["Filter"].count("EmailAddresses -eq 'smtp:") == 10


def test_a_wave_without_approved_cohorts_fails_and_waiting_bookings_are_named(
    client, carol, wave, airedale, alice
):
    booking_create(wave=wave, organisation=airedale, actor=alice)

    _, checks = run_preflight(client, carol, wave)

    assert checks["Approved cohorts"] == (
        "Fail",
        "The wave holds no approved cohort: there is nothing to move.",
    )

    bradford = make_organisation("B83001", "Bradford Road Practice", lead=carol, mailboxes=3)
    booking_approve(
        booking=booking_create(wave=wave, organisation=bradford, actor=carol), actor=carol
    )
    _, checks = run_preflight(client, carol, wave)
    assert checks["Approved cohorts"] == (
        "Warning",
        "1 approved cohort, 3 mailboxes. 1 booking still waits for a decision and will not move "
        "unless approved before the start.",
    )


# The batch CSV.


def read_csv(response) -> list[list[str]]:
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


@pytest.mark.parametrize("person", ["alice", "dave", "eve"])
def test_only_the_central_team_exports_the_batch_csv(client, request, person, closed_wave):
    client_for(client, request.getfixturevalue(person))
    url = reverse("waves:batches_csv", args=[closed_wave.public_id])
    assert client.get(url).status_code == 403


def test_signed_out_visitors_are_sent_to_sign_in_for_the_csv(client, closed_wave):
    response = client.get(reverse("waves:batches_csv", args=[closed_wave.public_id]))
    assert response.status_code == 302
    assert response["Location"].startswith("/sign-in/?next=")


def test_the_batch_csv_plans_a_wave_not_started_as_the_start_will(
    client, carol, closed_wave, bradford
):
    url = reverse("waves:batches_csv", args=[closed_wave.public_id])
    response = client_for(client, carol).get(url)

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="weeknight-1-batches.csv"'
    rows = read_csv(response)
    prefix = f"w{closed_wave.pk}-weeknight-1"
    assert rows[0] == ["EmailAddress", "BatchName"]
    assert rows[1:] == [[f"user{i:05d}@rcf.nhs.net", f"{prefix}-001"] for i in range(30)] + [
        [f"user{i:05d}@b83001.nhs.net", f"{prefix}-002"] for i in range(12)
    ]
    assert not MigrationBatch.objects.exists()  # planned without writing

    wave_plan(closed_wave)  # the start plans the same batches
    planned = sorted(
        CohortMailbox.objects.filter(booking__wave=closed_wave).values_list(
            "mailbox__address", "batch__name"
        )
    )
    assert sorted(tuple(row) for row in rows[1:]) == planned
    assert read_csv(client.get(url))[1:] == [list(row) for row in planned_in_order(planned)]


def planned_in_order(planned):
    return sorted(planned, key=lambda row: (row[1], row[0]))


def test_the_batch_csv_leaves_out_cohorts_not_approved(client, carol, wave, airedale, alice):
    booking_create(wave=wave, organisation=airedale, actor=alice)

    rows = read_csv(
        client_for(client, carol).get(reverse("waves:batches_csv", args=[wave.public_id]))
    )

    assert rows == [["EmailAddress", "BatchName"]]
    assert wave.bookings.get().status == BookingStatus.SUBMITTED


def test_the_wave_page_links_to_the_batch_csv(client, carol, closed_wave):
    page = client_for(client, carol).get(reverse("waves:detail", args=[closed_wave.public_id]))
    assert reverse("waves:batches_csv", args=[closed_wave.public_id]) in page.content.decode()
    assert closed_wave.status == WaveStatus.CLOSED


def test_recipients_are_looked_up_in_small_filters_with_quotes_doubled(standin, settings):
    backend = ExchangeOnlineBackend(**settings.EXCHANGE_ONLINE)
    addresses = ["o'brien@rcf.nhs.net"] + [f"user{i:05d}@rcf.nhs.net" for i in range(24)]
    standin.standin.absent_recipients = {"user00003@rcf.nhs.net"}

    found = backend.find_recipients(addresses + ["O'Brien@RCF.nhs.net"])

    assert set(found) == {a.lower() for a in addresses} - {"user00003@rcf.nhs.net"}
    assert set(found.values()) == {"MailUser"}
    filters = [c.parameters["Filter"] for c in standin.standin.cmdlets_called("Get-Recipient")]
    assert len(filters) == 2  # 25 addresses, 20 a call
    assert "(EmailAddresses -eq 'smtp:o''brien@rcf.nhs.net')" in "".join(filters)


def test_cohorts_are_packed_whole_largest_first_into_the_emptiest_batch():
    cohorts = [("a", 10), ("b", 70), ("c", 20), ("d", 20), ("e", 5), ("f", 40)]

    slices = pack_cohorts(cohorts, 3)

    assert slices == [["b"], ["f", "a"], ["c", "d", "e"]]  # 70, 50 and 45 mailboxes
    assert pack_cohorts(cohorts[:2], 5) == [["b"], ["a"]]  # never more batches than cohorts
    assert pack_cohorts([], 5) == []
