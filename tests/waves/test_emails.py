"""Emails to an organisation's IT leads when their booking is approved, rejected, withdrawn or
done: queued as a worker task when the change commits, run here as the worker would."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django_q.models import OrmQ

from tests.conftest import make_approved_wave, make_user, start_wave_now
from tests.waves.conftest import drive_to_the_end
from waves import tasks
from waves.models import BookingStatus
from waves.services import booking_create, booking_withdraw

PORTAL = "https://migration.example.nhs.uk"


@pytest.fixture(autouse=True)
def portal_url(settings):
    settings.PORTAL_URL = PORTAL


@pytest.fixture
def leads(alice, airedale, bob):
    """Alice and a co-lead of Airedale have addresses; a third lead has none; Bob leads
    Bradford, not Airedale."""
    alice.email = "alice@airedale.nhs.net"
    alice.save()
    co_lead = make_user("colin")
    co_lead.email = "colin@airedale.nhs.net"
    co_lead.save()
    airedale.leads.add(co_lead, make_user("nomail"))
    bob.email = "bob@bradford.nhs.net"
    bob.save()
    return alice, co_lead


def run_queued_emails(captured) -> list[tuple[int, str]]:
    """Run the email tasks the committed change queued, as a worker would."""
    for callback in captured:
        callback()
    queued = [task.task for task in OrmQ.objects.all()]
    calls = [task["args"] for task in queued if task["func"] == "waves.tasks.email_booking"]
    for booking_id, status in calls:
        tasks.email_booking(booking_id, status)
    return calls


def test_an_approval_is_emailed_to_the_organisations_leads(
    client, carol, leads, wave, airedale, mailoutbox, django_capture_on_commit_callbacks
):
    alice, _ = leads
    booking = booking_create(wave=wave, organisation=airedale, actor=alice)
    client.force_login(carol)

    with django_capture_on_commit_callbacks() as captured:
        client.post(
            reverse("waves:booking_decide", args=[booking.public_id]), {"decision": "approve"}
        )

    assert run_queued_emails(captured) == [(booking.pk, BookingStatus.APPROVED)]
    (message,) = mailoutbox
    assert message.to == ["alice@airedale.nhs.net", "colin@airedale.nhs.net"]
    assert message.subject == (
        "Approved: 30 mailboxes of Airedale NHS Foundation Trust in Weeknight 1"
    )
    assert "Carol of the central migration team approved the booking of 30 mailboxes" in (
        message.body
    )
    assert f"{PORTAL}/waves/bookings/{booking.public_id}/" in message.body
    assert "&amp;" not in message.body


def test_a_rejection_gives_the_reason(
    client, carol, leads, wave, airedale, mailoutbox, django_capture_on_commit_callbacks
):
    booking = booking_create(wave=wave, organisation=airedale, actor=leads[0])
    client.force_login(carol)

    with django_capture_on_commit_callbacks() as captured:
        client.post(
            reverse("waves:booking_decide", args=[booking.public_id]),
            {"decision": "reject", "reason": "Year-end freeze & audit"},
        )

    run_queued_emails(captured)
    (message,) = mailoutbox
    assert message.subject.startswith("Not approved: 30 mailboxes")
    assert "Reason: Year-end freeze & audit" in message.body
    assert f"{PORTAL}/waves/book/" in message.body


def test_a_refused_decision_emails_no_one(
    client, carol, leads, wave, airedale, mailoutbox, django_capture_on_commit_callbacks
):
    booking = booking_create(wave=wave, organisation=airedale, actor=leads[0])
    client.force_login(carol)

    with django_capture_on_commit_callbacks() as captured:
        response = client.post(
            reverse("waves:booking_decide", args=[booking.public_id]),
            {"decision": "reject", "reason": ""},
        )

    assert response.status_code == 400
    assert run_queued_emails(captured) == []
    assert mailoutbox == []


def test_whoever_withdraws_is_not_told_but_the_other_leads_are(
    leads, wave, airedale, mailoutbox, django_capture_on_commit_callbacks
):
    alice, _ = leads
    booking = booking_create(wave=wave, organisation=airedale, actor=alice)

    with django_capture_on_commit_callbacks() as captured:
        booking_withdraw(booking=booking, actor=alice, reason="Wrong wave")

    run_queued_emails(captured)
    (message,) = mailoutbox
    assert message.to == ["colin@airedale.nhs.net"]
    assert "Alice withdrew the booking" in message.body
    assert "Reason: Wrong wave" in message.body


def test_a_finished_wave_tells_each_organisation_what_moved_and_what_failed(
    carol,
    leads,
    airedale,
    bob,
    bradford,
    simulator,
    settings,
    mailoutbox,
    django_capture_on_commit_callbacks,
):
    settings.MAILBOX_MAX_ATTEMPTS = 1
    simulator["failure_rate"] = 0.2
    wave = make_approved_wave(carol, [(airedale, leads[0]), (bradford, bob)])

    with django_capture_on_commit_callbacks() as captured:
        wave = drive_to_the_end(start_wave_now(wave, carol, cutover_in=-timedelta(minutes=1)))
    assert wave.status == "done"

    done = [call for call in run_queued_emails(captured) if call[1] == BookingStatus.DONE]
    assert len(done) == 2
    by_address = {tuple(message.to): message for message in mailoutbox}
    assert set(by_address) >= {
        ("alice@airedale.nhs.net", "colin@airedale.nhs.net"),
        ("bob@bradford.nhs.net",),
    }
    airedale_email = by_address[("alice@airedale.nhs.net", "colin@airedale.nhs.net")]
    failed = airedale.mailboxes.filter(status="failed").count()
    moved = airedale.mailboxes.filter(status="completed").count()
    assert moved + failed == 30 and failed > 0
    assert airedale_email.subject == (
        f"{wave.name} finished: {moved} of 30 mailboxes of Airedale NHS Foundation Trust moved"
    )
    assert f"booked into it, {moved} moved to Exchange Online" in airedale_email.body
    assert f"{failed} failed and need" in airedale_email.body
    assert f"{PORTAL}/mailboxes/?organisation=RCF&status=failed" in airedale_email.body
    assert "bradford" not in " ".join(airedale_email.to)


def test_a_mail_server_that_refuses_fails_the_task_so_the_queue_retries_it(
    settings, leads, wave, airedale
):
    booking = booking_create(wave=wave, organisation=airedale, actor=leads[0])
    booking_withdraw(booking=booking, actor=make_user("someone"), reason="Test")
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", 9, False

    with pytest.raises(OSError):
        tasks.email_booking(booking.pk, BookingStatus.WITHDRAWN)
