"""The central team's list of organisations yet to book: whom to chase, with their leads."""

import csv
import io
import re

import pytest
from django.urls import reverse

from mailboxes.models import OrganisationType
from tests.conftest import make_organisation, make_user
from waves.services import booking_create, booking_reject, booking_withdraw

URL = reverse("waves:not_booked")
CSV_URL = reverse("waves:not_booked_csv")


@pytest.fixture
def organisations(carol, alice, airedale, bob, bradford, wave):
    """Airedale has booked; Bradford has not; Calderdale's booking was rejected; Dewsbury's
    withdrawn; Elland has no mailboxes; Fixby has not booked and has no lead."""
    booking_create(wave=wave, organisation=airedale, actor=alice)
    bob.email = "bob@bradford.nhs.net"
    bob.save()
    calderdale = make_organisation("RWY", "Calderdale", lead=make_user("cara"), mailboxes=5)
    booking_reject(
        booking=booking_create(wave=wave, organisation=calderdale, actor=carol),
        actor=carol,
        reason="Too late",
    )
    dewsbury = make_organisation(
        "Y001",
        "Dewsbury Practice",
        lead=make_user("dan"),
        mailboxes=3,
        type_=OrganisationType.GP_PRACTICE,
    )
    withdrawn = booking_create(wave=wave, organisation=dewsbury, actor=carol)
    booking_withdraw(booking=withdrawn, actor=carol, reason="Wrong wave")
    make_organisation("Y002", "Elland Practice", type_=OrganisationType.GP_PRACTICE)
    make_organisation("Y003", "Fixby Practice", mailboxes=2, type_=OrganisationType.GP_PRACTICE)


def listed(html: str) -> list[str]:
    """The codes of the organisations in the table, in order."""
    return re.findall(r"</a> \(([A-Z0-9]+)\)</td>", html)


def test_the_central_team_sees_who_has_booked_nothing_with_their_leads(
    client, carol, organisations
):
    client.force_login(carol)
    page = client.get(URL).content.decode()

    assert "4 organisations yet to book" in page
    assert listed(page) == ["B83001", "RWY", "Y001", "Y003"]  # by name
    assert '<a href="mailto:bob@bradford.nhs.net">bob@bradford.nhs.net</a>' in page
    assert "No IT lead" in page  # Fixby
    assert '<td class="nhsuk-table__cell app-numeric">12</td>' in page  # Bradford's mailboxes

    practices = client.get(URL + "?type=gp_practice").content.decode()
    assert listed(practices) == ["B83001", "Y001", "Y003"]


def test_the_csv_lists_the_same_organisations_for_a_mail_merge(client, carol, organisations):
    client.force_login(carol)
    response = client.get(CSV_URL + "?type=gp_practice")

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows == [
        ["OrganisationCode", "Name", "Type", "Region", "Mailboxes", "Leads", "LeadEmails"],
        [
            "B83001",
            "Bradford Road Practice",
            "GP practice",
            "North East and Yorkshire",
            "12",
            "Bob",
            "bob@bradford.nhs.net",
        ],
        ["Y001", "Dewsbury Practice", "GP practice", "North East and Yorkshire", "3", "Dan", ""],
        ["Y003", "Fixby Practice", "GP practice", "North East and Yorkshire", "2", "", ""],
    ]


def test_a_name_that_looks_like_a_formula_is_not_run_by_a_spreadsheet(client, carol, wave):
    make_organisation("Y009", '=HYPERLINK("http://evil.example","Click")', mailboxes=1)
    client.force_login(carol)

    response = client.get(CSV_URL)

    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[1][:2] == ["Y009", '\'=HYPERLINK("http://evil.example","Click")']


def test_the_csv_refuses_a_filter_it_cannot_use_rather_than_list_everyone(
    client, carol, organisations
):
    client.force_login(carol)

    response = client.get(CSV_URL + "?type=castle")

    assert response.status_code == 400
    body = response.content.decode()
    assert body.startswith("No CSV: Type: Select a valid choice. castle is not one of")
    assert "B83001" not in body


def test_a_filter_value_it_does_not_know_is_shown_as_an_error(client, carol, organisations):
    client.force_login(carol)
    response = client.get(URL + "?type=castle")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Select a valid choice" in page
    assert "4 organisations yet to book" in page  # nothing filtered away


@pytest.mark.parametrize("person", ["alice", "dave", "eve"])
def test_only_the_central_team_sees_the_list(client, request, person, organisations):
    client.force_login(request.getfixturevalue(person))

    assert client.get(URL).status_code == 403
    assert client.get(CSV_URL).status_code == 403


def test_signed_out_visitors_are_sent_to_sign_in(client, organisations):
    assert client.get(URL).url.startswith(reverse("login"))
    assert client.get(CSV_URL).url.startswith(reverse("login"))
