"""An organisation's mailboxes as CSV, filtered as on its page: for IT leads who work in
spreadsheets, and in the import's own columns so that it can be imported again."""

import csv
import io

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from mailboxes.models import Mailbox, MailboxStatus
from waves.services import booking_create

URL = reverse("mailboxes:list_csv")


def download(client, **query) -> list[list[str]]:
    response = client.get(URL, query)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_a_lead_downloads_every_mailbox_of_their_organisation(client, alice, airedale):
    client.force_login(alice)

    response = client.get(URL, {"organisation": "RCF"})
    assert response["Content-Disposition"] == 'attachment; filename="mailboxes-rcf.csv"'
    header, *rows = download(client, organisation="RCF")

    assert header == [
        "PrimarySmtpAddress",
        "UserPrincipalName",
        "DisplayName",
        "RecipientTypeDetails",
        "TotalItemSizeBytes",
        "ItemCount",
        "OrganisationCode",
        "MigrationStatus",
        "StatusChangedAtUTC",
    ]
    assert len(rows) == 30  # every one, not a page of the list
    assert [row[0] for row in rows] == sorted(row[0] for row in rows)
    first = Mailbox.objects.get(address="user00000@rcf.nhs.net")
    assert rows[0] == [
        "user00000@rcf.nhs.net",
        "user00000@rcf.nhs.uk",
        "User 00000 RCF",
        "UserMailbox",
        str(512 * 1024**2),
        "1000",
        "RCF",
        "Not scheduled",
        first.status_changed_at.strftime("%Y-%m-%d %H:%M:%S"),  # the test database is in UTC
    ]
    assert rows[9][3] == "SharedMailbox"


def test_the_download_keeps_the_pages_filters(client, alice, airedale, wave):
    booked = list(airedale.mailboxes.order_by("address")[:4])
    booking_create(
        wave=wave, organisation=airedale, actor=alice, mailbox_ids=[m.pk for m in booked]
    )
    client.force_login(alice)

    _, *rows = download(client, organisation="RCF", status=MailboxStatus.BOOKED)
    assert [row[0] for row in rows] == [m.address for m in booked]
    assert {row[7] for row in rows} == {"Booked"}

    _, *rows = download(client, organisation="RCF", q="user0001", recipient_type="SharedMailbox")
    assert [row[0] for row in rows] == ["user00019@rcf.nhs.net"]

    page = client.get(reverse("mailboxes:list"), {"status": "booked"}).content.decode()
    assert f'href="{URL}?status=booked&amp;organisation=RCF" download' in page


def test_a_filter_the_download_cannot_use_is_refused_with_why(client, alice, airedale):
    client.force_login(alice)

    response = client.get(URL, {"organisation": "RCF", "status": "nonsense"})

    assert response.status_code == 400
    assert response.content.decode().startswith("No CSV: Status: Select a valid choice.")


@pytest.mark.parametrize("query", [{}, {"organisation": "  "}])
def test_a_download_without_an_organisation_says_what_is_missing(client, carol, airedale, query):
    client.force_login(carol)

    response = client.get(URL, query)

    assert response.status_code == 400
    assert response.content.decode() == (
        "No CSV: say whose mailboxes, as ?organisation=CODE (the organisation's ODS code)."
    )


def test_a_lead_cannot_download_another_organisations_mailboxes(client, alice, airedale, bradford):
    client.force_login(alice)

    response = client.get(URL, {"organisation": "B83001"})

    assert response.status_code == 404
    assert b"b83001.nhs.net" not in response.content


@pytest.mark.parametrize(("person", "status"), [("carol", 200), ("dave", 403), (None, 302)])
def test_the_central_team_may_download_and_the_helpdesk_may_not(
    client, request, airedale, bradford, person, status
):
    if person:
        client.force_login(request.getfixturevalue(person))

    response = client.get(URL, {"organisation": "B83001"})

    assert response.status_code == status
    if status == 200:
        assert len(b"".join(response.streaming_content).splitlines()) == 13
    else:
        assert b"b83001.nhs.net" not in response.content


def test_text_a_spreadsheet_would_run_as_a_formula_is_quoted(client, alice, airedale):
    Mailbox.objects.filter(address="user00001@rcf.nhs.net").update(
        display_name='=HYPERLINK("http://evil.example","Click")'
    )
    client.force_login(alice)

    _, *rows = download(client, organisation="RCF")

    assert rows[1][2] == '\'=HYPERLINK("http://evil.example","Click")'


def test_a_download_imports_again_unchanged(client, alice, airedale, tmp_path):
    client.force_login(alice)
    response = client.get(URL, {"organisation": "RCF"})
    path = tmp_path / "mailboxes-rcf.csv"
    path.write_bytes(b"".join(response.streaming_content))
    out = io.StringIO()

    call_command("import_mailboxes", str(path), stdout=out)

    assert "Rows read 30: created 0, updated 0, unchanged 30, skipped 0" in out.getvalue()


def test_the_download_reads_the_same_queries_however_many_mailboxes(client, alice, airedale):
    client.force_login(alice)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            download(client, organisation="RCF")
        return len(captured.captured_queries)

    few = queries()
    Mailbox.objects.bulk_create(
        [
            Mailbox(
                address=f"extra{i:05d}@rcf.nhs.net",
                upn=f"extra{i:05d}@rcf.nhs.uk",
                display_name=f"Extra {i}",
                recipient_type="UserMailbox",
                size_bytes=1,
                item_count=1,
                organisation=airedale,
            )
            for i in range(6000)  # more than one chunk of the iterator
        ]
    )
    assert queries() == few
