"""The demo's helpdesk calls, recorded by `load_demo_calls` after `load_demo_data`."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from support.models import HelpdeskCall


def load(command: str, *args: str) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_the_demo_has_calls_some_to_follow_up_and_loading_twice_adds_none():
    load("load_demo_data", "--mailboxes", "600")

    out = load("load_demo_calls")

    total, waiting = HelpdeskCall.objects.count(), HelpdeskCall.objects.filter(resolved=False)
    assert out.strip() == f"Recorded {total} demo calls, {waiting.count()} to follow up."
    assert total >= 6 and waiting.count() >= 2
    assert {call.recorded_by.username for call in HelpdeskCall.objects.all()} == {"helpdesk"}
    assert all(call.resolved_at is None for call in waiting)
    assert load("load_demo_calls").strip() == "Demo calls already recorded."
    assert HelpdeskCall.objects.count() == total


@pytest.mark.django_db
def test_it_needs_the_demo_data_first():
    with pytest.raises(CommandError, match="run load_demo_data first"):
        load("load_demo_calls")
    assert not HelpdeskCall.objects.exists()
