"""A wave driven through Exchange Online (the local stand-in) by a real `qcluster` process.

The stand-in runs in this test process, on loopback; the cluster is configured for it by the
environment variables `python -m standins.exchange_online` prints, and signs in with the real
msal library. The worker is killed with SIGKILL mid-wave, and a second cluster finishes the
wave: the test then counts the batches the stand-in holds and reads every mailbox's history.
The cluster and its database are set up as in test_worker.py.
"""

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Task
from django_q.tasks import async_task

from mailboxes.models import Mailbox, MailboxStatus
from standins.exchange_online import start_standin
from tests.conftest import (
    assert_migration_histories,
    make_approved_wave,
    make_organisation,
    make_user,
    start_wave_now,
)
from tests.waves.test_worker import Cluster, wait_for
from waves.models import BookingStatus, CohortMailbox, MigrationBatch, Wave, WaveStatus

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

S = MailboxStatus
W = WaveStatus
RETRIED = "user00007@rcf.nhs.net"  # fails its first attempt half way
WORKER_ENV = {
    "PORTAL_WAVE_DRIVE_SECONDS": "10",
    "PORTAL_WAVE_LEASE_MARGIN_SECONDS": "2",  # a dead driver's wave is free 2.5 s after its step
    "PORTAL_LOG_LEVEL": "INFO",
}


@pytest.fixture
def standin():
    """Stand-in seconds run 1,000 times faster: a user queues 0.03 s and syncs 0.6 s."""
    _, server = start_standin(
        time_scale=1000.0,
        page_size=25,
        throttle_every=11,
        retry_after=0,
        failures={RETRIED: 1},
    )
    yield server
    server.stop()


@pytest.fixture
def wave_of_120(carol) -> Wave:
    cohorts = []
    for i, (code, name) in enumerate(
        [("RCF", "Airedale"), ("RAE", "Bradford Teaching"), ("RR8", "Leeds Teaching")]
    ):
        lead = make_user(f"lead{i}")
        cohorts.append((make_organisation(code, name, lead=lead, mailboxes=40), lead))
    return make_approved_wave(carol, cohorts, capacity_mailboxes=120)


def test_a_killed_worker_leaves_no_duplicate_batch_in_exchange_online(
    standin, wave_of_120, carol, tmp_path
):
    env = standin.portal_environment() | WORKER_ENV
    # Committed at once (transactional test), so the start queues the drive task.
    wave = start_wave_now(wave_of_120, carol, cutover_in=timedelta(seconds=15))
    ids = list(
        CohortMailbox.objects.filter(booking__wave=wave).values_list("mailbox_id", flat=True)
    )

    def under_way() -> bool:
        return bool(standin.standin.batches) and (
            Mailbox.objects.filter(pk__in=ids, status__in=[S.QUEUED, S.SYNCING, S.SYNCED]).exists()
        )

    with Cluster(tmp_path / "first.log", **env) as first:
        wait_for(under_way, cluster=first, timeout=40, what="batches to reach Exchange Online")
        first.kill()  # SIGKILL, mid-wave: no clean-up of any kind

    wave.refresh_from_db()
    assert wave.status == W.RUNNING, "the wave got too far before the worker was killed"
    assert not Mailbox.objects.filter(pk__in=ids, status=S.COMPLETED).exists()
    # The dead driver's lease lapses; until then no one may take the wave over.
    deadline = time.monotonic() + 10
    while Wave.objects.filter(pk=wave.pk, driver_lease_until__gt=timezone.now()).exists():
        assert time.monotonic() < deadline, "the dead driver's lease did not lapse"
        time.sleep(0.2)

    with Cluster(tmp_path / "second.log", **env) as second:
        # What the schedule "Drive active waves" does every minute, queued now.
        async_task("waves.tasks.drive_active_waves")
        wait_for(
            lambda: Wave.objects.filter(pk=wave.pk, status=W.DONE).exists(),
            cluster=second,
            timeout=45,
            what="the wave to finish",
        )
        second.stop()

    wave.refresh_from_db()
    assert set(wave.bookings.values_list("status", flat=True)) == {BookingStatus.DONE}
    for from_, to in [(W.RUNNING, W.COMPLETING), (W.COMPLETING, W.DONE)]:
        assert wave.events.filter(from_status=from_, to_status=to).count() == 1
    assert Task.objects.filter(func="waves.tasks.drive_active_waves", success=True).exists()

    # Every mailbox moved once, by legal steps, with no event lost or written twice.
    histories = assert_migration_histories(ids)
    assert set(Mailbox.objects.filter(pk__in=ids).values_list("status", flat=True)) == {S.COMPLETED}
    assert len(histories) == 120
    retried = CohortMailbox.objects.get(mailbox__address=RETRIED)
    assert (retried.attempts, retried.mailbox.status) == (1, S.COMPLETED)

    # Exchange Online holds exactly our batches, each user in one of them once.
    ours = {
        batch.name: sorted(batch.members.values_list("mailbox__address", flat=True))
        for batch in MigrationBatch.objects.filter(wave=wave)
    }
    assert len(ours) == 3
    held = {name: sorted(b.users) for name, b in standin.standin.batches.items()}
    assert held == ours
    assert sum(len(users) for users in held.values()) == 120
    created = [c.parameters["Name"] for c in standin.standin.cmdlets_called("New-MigrationBatch")]
    assert set(created) == set(ours)  # any repeat was answered "already exists"
    assert standin.standin.throttled > 0  # the storm was absorbed: no mailbox failed for it
