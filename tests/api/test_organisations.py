"""GET /api/organisations/: an IT lead sees their own organisations; the others see all."""

import pytest

from tests.api.conftest import signed_in


def codes(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [o["code"] for o in response.json()["results"]]


def test_an_it_lead_lists_only_their_organisations(client, alice, airedale, bradford):
    response = signed_in(client, alice).get("/api/organisations/")
    assert codes(response) == ["RCF"]
    assert response.json()["results"][0] == {
        "code": "RCF",
        "name": "Airedale NHS Foundation Trust",
        "type": "trust",
        "region": "North East and Yorkshire",
        "parent": None,
    }


@pytest.mark.parametrize("user", ["carol", "dave"])
def test_the_central_team_and_helpdesk_list_every_organisation(
    client, request, user, airedale, bradford
):
    response = signed_in(client, request.getfixturevalue(user)).get("/api/organisations/")
    assert codes(response) == ["RCF", "B83001"]  # by name: Airedale, Bradford


def test_an_it_lead_fetches_their_organisation_with_mailbox_counts(client, alice, airedale):
    response = signed_in(client, alice).get("/api/organisations/RCF/")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Airedale NHS Foundation Trust"
    assert body["mailbox_counts"]["not_scheduled"] == 30
    assert body["mailbox_counts"]["booked"] == 0


def test_an_it_lead_cannot_fetch_another_organisation(client, alice, airedale, bradford):
    response = signed_in(client, alice).get("/api/organisations/B83001/")
    assert response.status_code == 404
    assert "B83001" not in response.content.decode()
    assert "Bradford" not in response.content.decode()


def test_an_unknown_code_is_not_found(client, carol, airedale):
    assert signed_in(client, carol).get("/api/organisations/NOPE/").status_code == 404
