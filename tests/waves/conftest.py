"""The simulator as the engine's tests set it up, and driving a wave to its end."""

import time

import pytest
from django.db.models import Count

from waves.models import WAVE_ACTIVE, CohortMailbox, Wave
from waves.transfers import wave_advance

MAX_ATTEMPTS = 3


@pytest.fixture
def simulator(settings):
    settings.SIMULATOR = {
        "seed": 2020,
        "time_scale": 1e6,
        "failure_rate": 0.0,
        "mean_mailbox_mb": 50.0,
        "throughput_mb_per_second": 50.0,
        "max_queue_seconds": 60.0,
        "completion_seconds": 60.0,
    }
    settings.MAILBOX_MAX_ATTEMPTS = MAX_ATTEMPTS
    settings.WAVE_MAX_BATCHES = 2
    settings.WAVE_POLL_SECONDS = 0.005
    settings.WAVE_DRIVE_SECONDS = 10.0
    return settings.SIMULATOR


def drive_to_the_end(wave: Wave, *, rounds: int = 100) -> Wave:
    for _ in range(rounds):
        wave = wave_advance(wave.pk)
        if wave.status not in WAVE_ACTIVE:
            return wave
        time.sleep(0.002)
    stuck = (
        CohortMailbox.objects.filter(booking__wave=wave, active=True)
        .values_list("mailbox__status", "backend_status", "attempts")
        .annotate(n=Count("pk"))
        .order_by()
    )
    raise AssertionError(f"{wave.name} is still {wave.status} after {rounds} rounds: {list(stuck)}")
