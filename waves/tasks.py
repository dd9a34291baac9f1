"""django-q2 tasks: thin wrappers that load by id and call the transfer engine."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django_q.tasks import async_task

from waves import emails, transfers


def drive_wave(wave_id: int) -> bool:
    drove = transfers.wave_drive(
        wave_id, seconds=settings.WAVE_DRIVE_SECONDS, interval=settings.WAVE_POLL_SECONDS
    )
    if drove and transfers.wave_is_active(wave_id):
        # Hand over to the next task at once rather than leave the wave unpolled until the
        # minute's schedule; the lease still lets only one of them drive.
        async_task("waves.tasks.drive_wave", wave_id, task_name=f"drive-wave-{wave_id}")
    return drove


def drive_active_waves() -> int:
    """Scheduled every minute: pick up any active wave nobody is driving (after a crash, too)."""
    wave_ids = transfers.waves_needing_a_driver()
    for wave_id in wave_ids:
        async_task("waves.tasks.drive_wave", wave_id, task_name=f"drive-wave-{wave_id}")
    return len(wave_ids)


def remove_finished_batches() -> int:
    """Scheduled every 15 minutes: take finished waves' batches out of the migration service."""
    return transfers.batches_remove_finished()


def email_booking(booking_id: int, status: str) -> int:
    """Email the booking's leads of its move to `status`; returns how many were sent."""
    message = emails.booking_email(booking_id, status)
    return message.send() if message is not None else 0


def approve_investigate_items(wave_id: int, user_id: int) -> int:
    user = get_user_model().objects.filter(pk=user_id).first()
    return transfers.wave_approve_investigate_items(wave_id, actor=user or "central team")
