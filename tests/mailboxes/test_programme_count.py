"""The programme's progress on the central team's overview: every mailbox counted by status by
a worker (`mailboxes.tasks.count_programme`, every 5 minutes), shown as last counted."""

import re

from django.urls import reverse
from django.utils import timezone

from mailboxes.models import Mailbox, MailboxStatus, StatusCount
from mailboxes.selectors import programme_progress
from mailboxes.tasks import count_programme
from waves.services import booking_create

S = MailboxStatus
URL = reverse("waves:list")


def arrange(mailboxes, status: MailboxStatus) -> None:
    """Test set-up: mailboxes left in `status` by earlier waves (counting only reads it)."""
    Mailbox.objects.filter(pk__in=[m.pk for m in mailboxes]).update(status=status)


def summary(page: str) -> list[tuple[str, str]]:
    block = page[page.index('id="programme"') : page.index("Plan a wave")]
    return re.findall(
        r'<strong class="nhsuk-tag[^"]*">([^<]+)</strong>\s*</dt>\s*<dd[^>]*>([^<]+)<', block
    )


def test_the_overview_shows_the_programme_as_last_counted(
    client, carol, alice, airedale, bradford, wave
):
    booking_create(
        wave=wave,
        organisation=bradford,
        actor=carol,
        mailbox_ids=list(bradford.mailboxes.values_list("pk", flat=True)[:5]),
    )
    mailboxes = list(airedale.mailboxes.order_by("address"))
    arrange(mailboxes[:3], S.COMPLETED)
    arrange(mailboxes[3:4], S.FAILED)
    before = timezone.now()

    counts = count_programme()

    assert counts[S.COMPLETED] == 3 and counts[S.BOOKED] == 5 and counts[S.FAILED] == 1
    assert counts[S.NOT_SCHEDULED] == 42 - 3 - 5 - 1
    assert sum(counts.values()) == 42 and set(counts) == set(S.values)
    client.force_login(carol)
    page = client.get(URL).content.decode()
    assert "3 of 42 mailboxes migrated (7.1%)." in page
    assert summary(page) == [
        ("Not scheduled", "33"),
        ("Booked", "5"),
        ("Completed", "3"),
        ("Needs attention", "1"),
    ]
    assert before <= programme_progress().counted_at <= timezone.now()
    assert "A worker counts every mailbox every 5 minutes" in page


def test_each_count_replaces_the_last(client, carol, airedale):
    count_programme()
    first = programme_progress()
    arrange(airedale.mailboxes.all()[:30], S.COMPLETED)

    count_programme()

    assert StatusCount.objects.count() == len(S.values)
    latest = programme_progress()
    assert (latest.migrated, latest.total, latest.percent_migrated) == (30, 30, "100.0")
    assert latest.counted_at > first.counted_at
    client.force_login(carol)
    assert "30 of 30 mailboxes migrated (100.0%)." in client.get(URL).content.decode()


def test_before_the_first_count_the_overview_says_so(client, carol, airedale):
    client.force_login(carol)

    page = client.get(URL).content.decode()

    assert "have not been counted yet: a worker counts them every 5 minutes" in page
    assert "mailboxes migrated" not in page


def test_the_api_gives_the_central_team_the_last_count(client, carol, airedale):
    client.force_login(carol)
    before = client.get("/api/programme/").json()
    assert before == {"counted_at": None, "total": 0, "migrated": 0, "counts": {}}

    arrange(airedale.mailboxes.all()[:4], S.COMPLETED)
    count_programme()
    body = client.get("/api/programme/").json()

    assert (body["total"], body["migrated"]) == (30, 4)
    assert body["counts"] == {**dict.fromkeys(S.values, 0), "completed": 4, "not_scheduled": 26}
    assert body["counted_at"] == programme_progress().counted_at.isoformat().replace("+00:00", "Z")
