"""Data migrations of the support app, run on a database as an earlier release left it."""

import pytest
from django.contrib.auth import get_user_model

from tests.waves.test_migrations import latest, migrate_to

pytestmark = pytest.mark.django_db(transaction=True)


def test_calls_resolved_before_0002_were_resolved_when_recorded_by_who_recorded_them():
    try:
        apps = migrate_to(("support", "0001_initial"))
        HelpdeskCall = apps.get_model("support", "HelpdeskCall")  # noqa: N806 - a model class
        Organisation = apps.get_model("mailboxes", "Organisation")  # noqa: N806
        Mailbox = apps.get_model("mailboxes", "Mailbox")  # noqa: N806
        user = apps.get_model(*get_user_model()._meta.label.split(".")).objects.create(
            username="dave"
        )
        organisation = Organisation.objects.create(code="RCF", name="Airedale", type="trust")
        mailbox = Mailbox.objects.create(
            address="ann@rcf.nhs.net",
            upn="ann@rcf.nhs.uk",
            display_name="Ann",
            recipient_type="UserMailbox",
            organisation=organisation,
        )
        resolved = HelpdeskCall.objects.create(
            mailbox=mailbox, recorded_by=user, summary="Sorted", resolved=True
        )
        waiting = HelpdeskCall.objects.create(
            mailbox=mailbox, recorded_by=user, summary="Call back", resolved=False
        )

        apps = migrate_to(("support", "0002_call_resolution"))

        HelpdeskCall = apps.get_model("support", "HelpdeskCall")  # noqa: N806
        resolved = HelpdeskCall.objects.get(pk=resolved.pk)
        assert (resolved.resolved_at, resolved.resolved_by_id) == (resolved.recorded_at, user.pk)
        waiting = HelpdeskCall.objects.get(pk=waiting.pk)
        assert (waiting.resolved_at, waiting.resolved_by_id) == (None, None)
    finally:
        latest()
