"""Migration backends: what the transfer engine drives.

The interface is batch-shaped because Exchange Online is: a tenant runs at most 100 migration
batches, each holding many users, and reports its users' statuses in pages. The engine never
knows which backend it drives; `PORTAL_MIGRATION_BACKEND` chooses.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from django.conf import settings

from mailboxes.models import MailboxStatus

# Exchange Online holds at most this many migration batches in a tenant, whatever their state.
TENANT_MAX_BATCHES = 100


@dataclass(frozen=True)
class UserProgress:
    address: str
    status: str  # the backend's own word, e.g. Exchange's "IncrementalSyncing"
    bytes_transferred: int = 0
    items_transferred: int = 0
    error: str = ""
    consistency: str = ""  # a DataConsistency value (Exchange's word), or "" if none given


class BackendError(Exception):
    """The backend refused or failed a call; the message is fit for an operator."""


class MigrationBackend(Protocol):
    def create_batch(
        self, *, name: str, addresses: list[str], start_after: datetime, complete_after: datetime
    ) -> str:
        """Create (or find, if one of that name exists) a batch; return its reference."""

    def start_batch(self, batch_ref: str) -> None:
        """Start syncing; on a started batch, retry its failed users and resume stopped ones."""

    def stop_batch(self, batch_ref: str) -> None: ...

    def complete_batch(self, batch_ref: str) -> None: ...

    def remove_user(self, batch_ref: str, address: str) -> None: ...

    def remove_batch(self, batch_ref: str) -> None:
        """Remove a finished batch and its users from the service; one already gone is fine."""

    def user_statuses(self, batch_ref: str) -> Iterable[UserProgress]: ...

    def approve_skipped_items(self, batch_ref: str, address: str) -> None:
        """Approve the items the user's move skipped, so that its completion can go ahead."""

    # Pre-flight: what the portal can learn before a wave starts. Each returns (or raises, as
    # BackendError) something fit for an operator.

    def check_sign_in(self) -> str:
        """Sign in to the service now; say how."""

    def check_endpoint(self) -> str:
        """Ask the service about the migration endpoint batches are created on; describe it."""

    def batch_names(self) -> list[str]:
        """Every migration batch the tenant holds now, whoever made it."""

    def find_recipients(self, addresses: list[str]) -> dict[str, str]:
        """The recipient type (e.g. "MailUser") at the target of each address found, by address
        in lower case; addresses not found are left out. Callers keep the list short (≤ 100)."""


M = MailboxStatus
# Exchange Online's migration user statuses (Get-MigrationUser -Status), mapped to ours.
EXCHANGE_USER_STATUS: dict[str, MailboxStatus] = {
    "Queued": M.QUEUED,
    "Validating": M.QUEUED,
    "Provisioning": M.QUEUED,
    "ProvisionUpdating": M.QUEUED,
    "Starting": M.QUEUED,
    "Syncing": M.SYNCING,
    "IncrementalSyncing": M.SYNCING,
    "Synced": M.SYNCED,
    "IncrementalSynced": M.SYNCED,
    "Completing": M.COMPLETING,
    "CompletionSynced": M.COMPLETING,
    "Completed": M.COMPLETED,
    "CompletedWithWarnings": M.COMPLETED,
    "Failed": M.FAILED,
    "IncrementalFailed": M.FAILED,
    "CompletionFailed": M.FAILED,
    "Corrupted": M.FAILED,
    "Stopping": M.STOPPED,
    "Stopped": M.STOPPED,
    "IncrementalStopped": M.STOPPED,
    # Leaving the batch: the engine records a roll-back itself when it asks for one.
    "Removing": M.STOPPED,
}


def portal_status(backend_status: str) -> MailboxStatus:
    try:
        return EXCHANGE_USER_STATUS[backend_status]
    except KeyError:
        raise BackendError(f"Unknown migration user status {backend_status!r}") from None


def get_backend() -> MigrationBackend:
    if settings.MIGRATION_BACKEND == "simulator":
        from waves.backends.simulator import SimulatorBackend

        return SimulatorBackend(**settings.SIMULATOR)
    if settings.MIGRATION_BACKEND == "exchange_online":
        from waves.backends.exchange_online import ExchangeOnlineBackend

        return ExchangeOnlineBackend(**settings.EXCHANGE_ONLINE)
    raise BackendError(f"No migration backend called {settings.MIGRATION_BACKEND!r}")
