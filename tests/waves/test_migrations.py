"""Data migrations of the waves app, run on a database as an earlier release left it."""

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = ("waves", "0005_fewer_cohort_index_entries")
AFTER = ("waves", "0006_migration_batch_events")


def migrate_to(target):
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    return executor.loader.project_state([target]).apps


def latest():
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_batches_of_waves_already_done_become_completed_so_that_they_are_removed_later():
    """Before 0006 a done wave's batches stayed "completing" for good."""
    try:
        apps = migrate_to(BEFORE)
        Wave = apps.get_model("waves", "Wave")  # noqa: N806 - a model class
        MigrationBatch = apps.get_model("waves", "MigrationBatch")  # noqa: N806
        now = timezone.now()
        finished_at = now - timedelta(days=3)

        def wave(name, status):
            return Wave.objects.create(
                name=name,
                kind="weeknight",
                status=status,
                starts_at=now - timedelta(days=4),
                cutover_at=now - timedelta(days=3),
                booking_deadline=now - timedelta(days=5),
                capacity_mailboxes=100,
                capacity_gb=100,
            )

        done = wave("Done wave", "done")
        Wave.objects.filter(pk=done.pk).update(status_changed_at=finished_at)
        running = wave("Running wave", "running")
        for name, parent, status in [
            ("w1-done-001", done, "completing"),
            ("w1-done-002", done, "submitted"),  # every mailbox in it failed
            ("w2-running-001", running, "completing"),
        ]:
            MigrationBatch.objects.create(wave=parent, name=name, status=status)

        apps = migrate_to(AFTER)

        MigrationBatch = apps.get_model("waves", "MigrationBatch")  # noqa: N806
        statuses = dict(MigrationBatch.objects.values_list("name", "status"))
        assert statuses == {
            "w1-done-001": "completed",
            "w1-done-002": "completed",
            "w2-running-001": "completing",
        }
        completed = MigrationBatch.objects.get(name="w1-done-001")
        assert completed.status_changed_at == finished_at
        (event,) = completed.events.all()
        assert (event.from_status, event.to_status, event.at, event.reason) == (
            "completing",
            "completed",
            finished_at,
            "Done wave finished",
        )
        assert not MigrationBatch.objects.get(name="w2-running-001").events.exists()
    finally:
        latest()
