"""The simulator backend: a seeded stand-in for a migration service, for demos and tests.

It behaves like Exchange Online's migration batches as the engine sees them: a batch is
created stopped, started, reports each user Queued → Syncing → Synced, fails some users at
random (a retry starts a new attempt), stops and starts, and completes on request
(Completing → Completed). Time runs `time_scale` times faster than the wall clock.

State lives in the database (SimulatedBatch, SimulatedUser), so any worker process sees the
same batches, and a killed worker loses nothing. Progress within an attempt is a function of
(seed, address, attempt, time since the attempt started), computed on read.
"""

import math
import random
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from waves.backends import BackendError, UserProgress
from waves.models import SimulatedBatch, SimulatedUser

SIZE_SIGMA = 1.2  # spread of the log-normal size distribution: most small, a few very large
BYTES_PER_ITEM = 75 * 1024


class SimulatorBackend:
    def __init__(
        self,
        *,
        seed: int,
        time_scale: float,
        failure_rate: float,
        mean_mailbox_mb: float,
        throughput_mb_per_second: float,
        max_queue_seconds: float,
        completion_seconds: float,
    ):
        self.seed = seed
        self.time_scale = time_scale
        self.failure_rate = failure_rate
        self.mean_mailbox_bytes = mean_mailbox_mb * 1024**2
        self.throughput = throughput_mb_per_second * 1024**2
        self.max_queue_seconds = max_queue_seconds
        self.completion_seconds = completion_seconds

    def _batch(self, batch_ref: str) -> SimulatedBatch:
        try:
            return SimulatedBatch.objects.get(name=batch_ref)
        except SimulatedBatch.DoesNotExist:
            raise BackendError(f"The migration batch {batch_ref!r} couldn't be found.") from None

    def create_batch(
        self, *, name: str, addresses: list[str], start_after: datetime, complete_after: datetime
    ) -> str:
        try:
            with transaction.atomic():
                batch = SimulatedBatch.objects.create(name=name, created_at=timezone.now())
                SimulatedUser.objects.bulk_create(
                    [SimulatedUser(batch=batch, address=a) for a in addresses], batch_size=2000
                )
        except IntegrityError:
            pass  # "already exists": the batch of that name is the one asked for
        return name

    def start_batch(self, batch_ref: str) -> None:
        now = timezone.now()
        with transaction.atomic():
            batch = self._batch(batch_ref)
            users = batch.users.filter(removed=False)
            if batch.started_at is None:
                users.update(attempt_started_at=now)
                batch.started_at = now
            else:
                # Restarting: failed users start a new attempt; stopped users carry on afresh.
                retry = [
                    u
                    for u in users.exclude(attempt_started_at=None)
                    if self._state(batch, u, now)[0] in {"Failed", "Stopped"}
                ]
                for user in retry:
                    user.attempt += 1
                    user.attempt_started_at = now
                    user.stopped_at = None
                SimulatedUser.objects.bulk_update(
                    retry, ["attempt", "attempt_started_at", "stopped_at"], batch_size=2000
                )
            batch.stopped_at = None
            batch.save(update_fields=["started_at", "stopped_at"])

    def stop_batch(self, batch_ref: str) -> None:
        now = timezone.now()
        with transaction.atomic():
            batch = self._batch(batch_ref)
            stopping = [
                u
                for u in batch.users.filter(removed=False, stopped_at=None)
                if self._state(batch, u, now)[0] not in {"Completed", "Failed"}
            ]
            for user in stopping:
                user.stopped_at = now
            SimulatedUser.objects.bulk_update(stopping, ["stopped_at"], batch_size=2000)
            batch.stopped_at = now
            batch.save(update_fields=["stopped_at"])

    def complete_batch(self, batch_ref: str) -> None:
        SimulatedBatch.objects.filter(name=batch_ref, complete_requested_at=None).update(
            complete_requested_at=timezone.now()
        )
        self._batch(batch_ref)

    def remove_user(self, batch_ref: str, address: str) -> None:
        if not self._batch(batch_ref).users.filter(address=address).update(removed=True):
            raise BackendError(f"{address} is not in the migration batch {batch_ref!r}.")

    def remove_batch(self, batch_ref: str) -> None:
        SimulatedBatch.objects.filter(name=batch_ref).delete()

    def approve_skipped_items(self, batch_ref: str, address: str) -> None:
        """Recorded only: the simulator grades every move Perfect, so nothing waits on it."""
        users = self._batch(batch_ref).users.filter(address=address, removed=False)
        if not users.update(skipped_items_approved_at=timezone.now()):
            raise BackendError(f"{address} is not in the migration batch {batch_ref!r}.")

    def check_sign_in(self) -> str:
        return "The simulator needs no sign-in."

    def check_endpoint(self) -> str:
        return (
            f"The simulator stands in for the migration endpoint (seed {self.seed}, "
            f"{self.time_scale:g} simulated seconds a second)."
        )

    def batch_names(self) -> list[str]:
        return list(SimulatedBatch.objects.order_by("name").values_list("name", flat=True))

    def find_recipients(self, addresses: list[str]) -> dict[str, str]:
        """Every address is a mail user waiting to move, until its move completes."""
        now = timezone.now()
        wanted = {a.lower() for a in addresses}
        found = dict.fromkeys(wanted, "MailUser")
        users = SimulatedUser.objects.filter(removed=False).select_related("batch")
        for user in users.filter(address__in=addresses).exclude(attempt_started_at=None):
            if self._state(user.batch, user, now)[0] == "Completed":
                found[user.address.lower()] = "UserMailbox"
        return found

    def user_statuses(self, batch_ref: str) -> Iterable[UserProgress]:
        now = timezone.now()
        batch = self._batch(batch_ref)
        for user in batch.users.filter(removed=False).iterator(chunk_size=5000):
            status, fraction, error = self._state(batch, user, now)
            size, items = self._size(user.address)
            yield UserProgress(
                address=user.address,
                status=status,
                bytes_transferred=int(size * fraction),
                items_transferred=int(items * fraction),
                error=error,
            )

    def _size(self, address: str) -> tuple[int, int]:
        draw = random.Random(f"{self.seed}:{address}:size")  # noqa: S311 - simulation, not security
        mu = math.log(self.mean_mailbox_bytes) - SIZE_SIGMA**2 / 2
        size = int(draw.lognormvariate(mu, SIZE_SIGMA))
        return size, max(1, size // BYTES_PER_ITEM)

    def _state(
        self, batch: SimulatedBatch, user: SimulatedUser, now: datetime
    ) -> tuple[str, float, str]:
        """(Exchange status, fraction of data copied, error) of one user at `now`."""
        if user.attempt_started_at is None:
            return "Queued", 0.0, ""
        draw = random.Random(f"{self.seed}:{user.address}:{user.attempt}")  # noqa: S311
        queue = draw.uniform(0, self.max_queue_seconds)
        size, _ = self._size(user.address)
        sync = max(1.0, size / self.throughput)
        fails_at = draw.uniform(0.05, 0.95) if draw.random() < self.failure_rate else None
        finish = draw.uniform(0.2, 1.0) * self.completion_seconds
        until = user.stopped_at or now
        elapsed = (until - user.attempt_started_at).total_seconds() * self.time_scale
        if elapsed < queue:
            return ("Stopped" if user.stopped_at else "Queued"), 0.0, ""
        copied = min(1.0, (elapsed - queue) / sync)
        if fails_at is not None and copied >= fails_at:
            return (
                "Failed",
                fails_at,
                "TransientException: the source server did not respond in time.",
            )
        if user.stopped_at:
            return "Stopped", copied, ""
        if copied < 1.0:
            return "Syncing", copied, ""
        if batch.complete_requested_at is None:
            return "Synced", 1.0, ""
        synced_at = user.attempt_started_at + timedelta(seconds=(queue + sync) / self.time_scale)
        completion_starts = max(batch.complete_requested_at, synced_at)
        if now < completion_starts + timedelta(seconds=finish / self.time_scale):
            return "Completing", 1.0, ""
        return "Completed", 1.0, ""
