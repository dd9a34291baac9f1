"""A whole wave run by a real `manage.py qcluster` process against the simulator.

The cluster runs in its own process group, on the test's own database: on PostgreSQL the test
database; on SQLite a test database in a file (see `django_db_modify_db_settings` in
tests/conftest.py). The simulator's clock runs 100,000 times faster than the wall clock, so a
mailbox's sync takes milliseconds; cutover is a few seconds after the start.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from importlib import import_module
from pathlib import Path
from urllib.parse import quote

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_q.models import Schedule, Task

from mailboxes.models import Mailbox, MailboxEvent, MailboxStatus, StatusCount
from tests.conftest import (
    assert_migration_histories,
    make_approved_wave,
    make_organisation,
    make_user,
    start_wave_now,
)
from waves.models import (
    BookingStatus,
    CohortMailbox,
    MigrationBatch,
    MigrationBatchStatus,
    SimulatedBatch,
    SimulatedUser,
    Wave,
    WaveStatus,
)

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

S = MailboxStatus
W = WaveStatus
PROJECT = Path(__file__).resolve().parents[2]
MAX_ATTEMPTS = 3
DRIVE_SCHEDULE_MIGRATION = import_module("waves.migrations.0002_drive_schedule")
REMOVAL_SCHEDULE_MIGRATION = import_module("waves.migrations.0007_remove_finished_batches_schedule")
COUNT_SCHEDULE_MIGRATION = import_module("mailboxes.migrations.0009_programme_status_counts")
WORKER_ENV = {
    "PORTAL_SIMULATOR_TIME_SCALE": "100000",
    "PORTAL_SIMULATOR_FAILURE_RATE": "0.05",
    "PORTAL_MAILBOX_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "PORTAL_WAVE_POLL_SECONDS": "0.5",
    "PORTAL_WAVE_DRIVE_SECONDS": "20",
    "PORTAL_WAVE_MAX_BATCHES": "3",
    "PORTAL_Q_WORKERS": "2",
}


def database_url() -> str:
    """The test database, as a DATABASE_URL for the cluster process."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        name = str(db["NAME"])
        assert "memory" not in name, f"the SQLite test database must be a file, not {name}"
        return f"sqlite:///{name}"
    assert connection.vendor == "postgresql", connection.vendor
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "localhost"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{auth}@{host}{port}/{quote(db['NAME'], safe='')}"


class Cluster:
    """A `manage.py qcluster` in its own session; every process in it is killed at the end."""

    def __init__(self, log_path: Path, **env: str):
        self.log_path = log_path
        self.env = os.environ | {
            "PORTAL_SECRET_KEY": settings.SECRET_KEY,  # tasks are signed with it
            "PORTAL_HTTPS": "false",
            "PORTAL_DEBUG": "false",
            "DATABASE_URL": database_url(),
        }
        self.env |= WORKER_ENV | env
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Cluster":
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"],
                cwd=PROJECT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __exit__(self, *exc_info) -> None:
        self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def check_alive(self) -> None:
        assert self.process.poll() is None, f"qcluster exited early:\n{self.log()}"

    def stop(self, timeout: float = 15) -> None:
        """Ask the cluster to stop (SIGTERM to its main process), then kill what is left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group: the sentinel, its workers, pusher and monitor."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def wait_for(condition: Callable[[], bool], *, cluster: Cluster, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        cluster.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}:\n{cluster.log()}"
            )
        time.sleep(0.25)


@pytest.fixture
def drive_schedule(db):
    """The schedule that finds waves nobody drives, as the data migration makes it.

    Transactional tests empty the database afterwards, so an earlier one may have removed it.
    """
    DRIVE_SCHEDULE_MIGRATION.add_schedule(apps, None)
    return Schedule.objects.get(name=DRIVE_SCHEDULE_MIGRATION.SCHEDULE_NAME)


@pytest.fixture
def wave_of_300(carol) -> Wave:
    """Three trusts' cohorts of 100 mailboxes, booked, approved and closed for booking."""
    cohorts = []
    for i, (code, name) in enumerate(
        [("RCF", "Airedale"), ("RAE", "Bradford Teaching"), ("RR8", "Leeds Teaching")]
    ):
        lead = make_user(f"lead{i}")
        cohorts.append((make_organisation(code, name, lead=lead, mailboxes=100), lead))
    return make_approved_wave(carol, cohorts, capacity_mailboxes=300)


def wave_mailboxes(wave: Wave) -> list[int]:
    return list(
        CohortMailbox.objects.filter(booking__wave=wave, active=True).values_list(
            "mailbox_id", flat=True
        )
    )


def is_done(wave: Wave) -> Callable[[], bool]:
    return lambda: Wave.objects.filter(pk=wave.pk, status=W.DONE).exists()


def assert_finished_cleanly(wave: Wave) -> None:
    wave.refresh_from_db()
    assert wave.status == W.DONE
    assert wave.driver_lease_until is None or wave.driver_lease_until < timezone.now()
    assert set(wave.bookings.values_list("status", flat=True)) == {BookingStatus.DONE}
    for from_, to in [(W.RUNNING, W.COMPLETING), (W.COMPLETING, W.DONE)]:
        assert wave.events.filter(from_status=from_, to_status=to).count() == 1
    ids = wave_mailboxes(wave)
    assert len(ids) == 300
    assert_migration_histories(ids)
    # One batch at the backend for each of ours, each user in it once.
    names = sorted(MigrationBatch.objects.filter(wave=wave).values_list("name", flat=True))
    assert len(names) == 3
    assert sorted(SimulatedBatch.objects.values_list("name", flat=True)) == names
    assert SimulatedUser.objects.count() == 300
    failed = CohortMailbox.objects.filter(mailbox_id__in=ids, mailbox__status=S.FAILED)
    # Flagged after the last allowed attempt (or later, if a restart of its batch retried it).
    for mailbox_id, attempts in failed.values_list("mailbox_id", "attempts"):
        assert attempts >= MAX_ATTEMPTS
        last = MailboxEvent.objects.filter(mailbox_id=mailbox_id).last()
        assert last.reason.startswith(f"Failed after {attempts} attempts: ")
    completed = Mailbox.objects.filter(pk__in=ids, status=S.COMPLETED).count()
    assert completed + failed.count() == 300
    assert completed > 250  # one attempt in twenty fails; three in a row are rare
    assert wave.events.last().reason == f"{completed} completed, {failed.count()} need attention"


def test_a_worker_cluster_runs_a_whole_wave(wave_of_300, carol, drive_schedule, tmp_path):
    # Committed at once (transactional test), so the start queues the drive task.
    wave = start_wave_now(wave_of_300, carol, cutover_in=timedelta(seconds=6))
    assert Wave.objects.get(pk=wave.pk).status == W.RUNNING

    with Cluster(tmp_path / "qcluster.log") as cluster:
        wait_for(is_done(wave), cluster=cluster, timeout=90, what="the wave to finish")
        cluster.stop()

    assert_finished_cleanly(wave)
    assert Task.objects.filter(func="waves.tasks.drive_wave", success=True).exists()

    # The periodic work after a wave, on its schedules' first runs: its batches leave the
    # backend (kept 0 hours here), and the programme's mailboxes are counted.
    REMOVAL_SCHEDULE_MIGRATION.add_schedule(apps, None)
    COUNT_SCHEDULE_MIGRATION.add_schedule(apps, None)
    with Cluster(tmp_path / "removal.log", PORTAL_BATCH_KEEP_HOURS="0") as cluster:
        wait_for(
            lambda: not SimulatedBatch.objects.exists() and StatusCount.objects.exists(),
            cluster=cluster,
            timeout=60,
            what="the finished wave's batches to be removed and the programme counted",
        )
        cluster.stop()
    assert set(MigrationBatch.objects.values_list("status", flat=True)) == {
        MigrationBatchStatus.REMOVED
    }
    counted = dict(StatusCount.objects.values_list("status", "mailboxes"))
    assert counted[S.COMPLETED] == Mailbox.objects.filter(status=S.COMPLETED).count() > 0
    assert sum(counted.values()) == Mailbox.objects.count()
    assert_migration_histories(wave_mailboxes(wave))


def test_a_new_cluster_takes_over_a_wave_whose_worker_was_killed(
    wave_of_300, carol, drive_schedule, tmp_path
):
    # A short drive and lease margin: the dead driver's lease lapses 11 s after it was taken.
    lease = {"PORTAL_WAVE_DRIVE_SECONDS": "10", "PORTAL_WAVE_LEASE_MARGIN_SECONDS": "1"}
    wave = start_wave_now(wave_of_300, carol, cutover_in=timedelta(seconds=15))
    ids = wave_mailboxes(wave)

    def under_way() -> bool:
        return Mailbox.objects.filter(
            pk__in=ids, status__in=[S.QUEUED, S.SYNCING, S.SYNCED]
        ).exists()

    with Cluster(tmp_path / "first.log", **lease) as first:
        wait_for(under_way, cluster=first, timeout=60, what="mailboxes to be queued")
        first.kill()  # SIGKILL, mid-wave: no clean-up of any kind

    wave.refresh_from_db()
    assert wave.status == W.RUNNING, "the wave got too far before the worker was killed"
    assert wave.driver_lease_until is not None and wave.driver_lease_until > timezone.now()
    assert not Mailbox.objects.filter(pk__in=ids, status=S.COMPLETED).exists()

    # The scheduler of the new cluster looks for undriven waves every 30 s; the dead
    # driver's lease has lapsed by then, so it hands the wave to a new driver.
    with Cluster(tmp_path / "second.log", **lease) as second:
        wait_for(is_done(wave), cluster=second, timeout=100, what="the wave to finish")
        second.stop()

    assert_finished_cleanly(wave)
    assert Schedule.objects.get(pk=drive_schedule.pk).next_run > timezone.now()  # it ran
