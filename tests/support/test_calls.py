"""Calls to follow up: the helpdesk's list of calls not resolved yet, and marking one resolved."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from support.models import HelpdeskCall
from support.services import helpdesk_call_record

URL = reverse("support:calls")


def resolve_url(call: HelpdeskCall) -> str:
    return reverse("support:resolve_call", args=[call.pk])


@pytest.fixture
def calls(dave, airedale):
    """Three calls about Airedale's mailboxes, an hour apart; the middle one resolved at once."""
    mailboxes = list(airedale.mailboxes.order_by("address")[:3])
    made = []
    for hours_ago, mailbox, resolved in [(3, mailboxes[0], False), (2, mailboxes[1], True)] + [
        (1, mailboxes[2], False)
    ]:
        call = helpdesk_call_record(
            mailbox=mailbox, recorded_by=dave, summary=f"About {mailbox.address}", resolved=resolved
        )
        HelpdeskCall.objects.filter(pk=call.pk).update(
            recorded_at=timezone.now() - timedelta(hours=hours_ago)
        )
        made.append(call)
    return made


def test_the_list_holds_the_calls_not_resolved_oldest_first(client, dave, calls):
    client.force_login(dave)

    page = client.get(URL).content.decode()

    assert "2 calls not resolved yet, oldest first." in page
    assert page.index("About user00000@rcf.nhs.net") < page.index("About user00002@rcf.nhs.net")
    assert "About user00001@rcf.nhs.net" not in page
    assert page.count("Mark resolved") == 2
    assert 'aria-current="page"' in page and ">Calls<" in page  # the menu's current item


def test_marking_a_call_resolved_records_who_and_when_and_takes_it_off_the_list(
    client, dave, calls
):
    first = calls[0]
    client.force_login(dave)
    before = timezone.now()

    response = client.post(resolve_url(first), {"page": "1"}, follow=True)

    assert response.redirect_chain == [(f"{URL}?page=1", 302)]
    page = response.content.decode()
    assert "Call about user00000@rcf.nhs.net marked resolved." in page
    assert "1 call not resolved yet" in page
    first.refresh_from_db()
    assert (first.resolved, first.resolved_by) == (True, dave)
    assert before <= first.resolved_at <= timezone.now()
    story = client.get(reverse("support:mailbox", args=[first.mailbox_id])).content.decode()
    assert "resolved by Dave" in story


def test_a_call_resolved_already_says_by_whom_and_changes_nothing(client, carol, dave, calls):
    client.force_login(carol)
    client.post(resolve_url(calls[0]))
    resolved = HelpdeskCall.objects.get(pk=calls[0].pk)
    client.force_login(dave)

    page = client.post(resolve_url(calls[0]), follow=True).content.decode()

    assert "This call was already marked resolved (Carol, " in page
    assert HelpdeskCall.objects.get(pk=calls[0].pk).resolved_at == resolved.resolved_at
    assert HelpdeskCall.objects.get(pk=calls[0].pk).resolved_by == carol


def test_recording_a_call_resolved_records_who_resolved_it(dave, calls):
    resolved = HelpdeskCall.objects.get(pk=calls[1].pk)
    assert (resolved.resolved, resolved.resolved_by) == (True, dave)
    assert resolved.resolved_at is not None


def test_with_nothing_to_follow_up_the_list_says_so(client, dave, airedale):
    client.force_login(dave)
    assert "No call is waiting to be followed up." in client.get(URL).content.decode()


@pytest.mark.parametrize("person", ["alice", "eve"])
def test_it_leads_and_people_without_a_role_may_not_see_or_resolve_calls(
    client, request, person, calls
):
    client.force_login(request.getfixturevalue(person))

    assert client.get(URL).status_code == 403
    assert client.post(resolve_url(calls[0])).status_code == 403
    assert not HelpdeskCall.objects.get(pk=calls[0].pk).resolved


def test_resolving_needs_a_post_with_a_csrf_token(dave, calls):
    client = Client(enforce_csrf_checks=True)
    client.force_login(dave)

    assert client.get(resolve_url(calls[0])).status_code == 405
    assert client.post(resolve_url(calls[0])).status_code == 403
    assert not HelpdeskCall.objects.get(pk=calls[0].pk).resolved


def test_resolving_an_unknown_call_is_not_found(client, dave, calls):
    client.force_login(dave)
    assert client.post(reverse("support:resolve_call", args=[987_654])).status_code == 404


def test_the_list_reads_the_same_queries_however_many_calls(client, dave, airedale, calls):
    client.force_login(dave)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(URL).status_code == 200
        return len(captured.captured_queries)

    few = queries()
    for mailbox in airedale.mailboxes.all()[3:23]:
        helpdesk_call_record(mailbox=mailbox, recorded_by=dave, summary="More", resolved=False)
    assert queries() == few
