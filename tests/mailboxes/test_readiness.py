"""An organisation's readiness: its mailboxes by status, its data, and the mailboxes too large
to move as they are (over 100 GB: check the licence; over 200 GB: Exchange Online does not move
them), on the IT lead's page and in the API, with a filter listing them."""

import re

import pytest

from mailboxes.models import GB, Mailbox, MailboxStatus
from mailboxes.services import mailboxes_transition
from tests.api.conftest import signed_in

S = MailboxStatus


@pytest.fixture
def sized(airedale, bradford):
    """Airedale: 2 mailboxes over 200 GB and 3 of 100–200 GB still to move, and one of 250 GB
    already moved; the rest (24) half a GB. Bradford: one of 300 GB, not Airedale's business."""

    def resize(addresses: list[str], size: int) -> None:
        Mailbox.objects.filter(address__in=addresses).update(size_bytes=size)

    resize(["user00000@rcf.nhs.net", "user00001@rcf.nhs.net"], 201 * GB)
    resize(["user00002@rcf.nhs.net", "user00003@rcf.nhs.net"], 150 * GB)
    resize(["user00004@rcf.nhs.net"], 200 * GB)  # the limit itself: still movable
    resize(["user00005@rcf.nhs.net"], 250 * GB)
    resize(["user00000@b83001.nhs.net"], 300 * GB)
    moved = Mailbox.objects.get(address="user00005@rcf.nhs.net")
    for status in (S.BOOKED, S.SCHEDULED, S.QUEUED, S.COMPLETED):
        assert mailboxes_transition(mailbox_ids=[moved.pk], to=status, actor="test")
    return airedale


def listed_addresses(html: str) -> list[str]:
    return re.findall(r">(user\d+@[a-z0-9.]+)</a>", html)


def test_the_lead_sees_what_is_too_large_to_move_and_lists_it(client, alice, sized):
    page = signed_in(client, alice).get("/mailboxes/?organisation=RCF").content.decode()

    assert "30 (1.1\xa0TB)" in page  # 1,164 GB; Django joins number and unit with a no-break space
    assert "2 mailboxes still to move are over 200 GB, which Exchange Online does not move" in page
    assert "3 mailboxes still to move are over 100 GB" in page

    too_large = client.get("/mailboxes/?organisation=RCF&size=over_200_gb").content.decode()
    assert listed_addresses(too_large) == ["user00000@rcf.nhs.net", "user00001@rcf.nhs.net"]
    large = client.get("/mailboxes/?organisation=RCF&size=over_100_gb").content.decode()
    assert listed_addresses(large) == [
        "user00002@rcf.nhs.net",
        "user00003@rcf.nhs.net",
        "user00004@rcf.nhs.net",
    ]


def test_an_organisation_with_no_large_mailbox_is_told_so(client, bob, bradford):
    Mailbox.objects.filter(organisation=bradford).update(size_bytes=GB)

    page = signed_in(client, bob).get("/mailboxes/?organisation=B83001").content.decode()

    assert "No mailbox still to move is over 100 GB" in page
    assert 'id="size-warning"' not in page


def test_a_size_the_filter_does_not_know_is_shown_as_an_error(client, alice, sized):
    response = signed_in(client, alice).get("/mailboxes/?organisation=RCF&size=huge")

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert len(listed_addresses(response.content.decode())) == 30  # nothing filtered away


def test_the_api_gives_the_readiness_and_filters_by_size(client, alice, sized):
    signed_in(client, alice)

    body = client.get("/api/organisations/RCF/").json()
    assert body["readiness"] == {
        "mailboxes": 30,
        "size_bytes": 24 * GB // 2 + 2 * 201 * GB + 2 * 150 * GB + 200 * GB + 250 * GB,
        "over_100_gb": 3,
        "over_200_gb": 2,
    }
    assert body["mailbox_counts"]["completed"] == 1
    listed = client.get("/api/mailboxes/?size=over_200_gb").json()
    assert [m["address"] for m in listed["results"]] == [
        "user00000@rcf.nhs.net",
        "user00001@rcf.nhs.net",
    ]  # Bradford's 300 GB mailbox is not the lead's
    refused = client.get("/api/mailboxes/?size=huge")
    assert refused.status_code == 400
    assert "size" in refused.json()


TOO_LARGE = "Over 200 GB: too large for Exchange Online to move."
OVER_QUOTA = "Over 100 GB, the primary mailbox limit on most Exchange Online plans"


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("user00000@rcf.nhs.net", TOO_LARGE),  # 201 GB
        ("user00004@rcf.nhs.net", OVER_QUOTA),  # 200 GB exactly
        ("user00005@rcf.nhs.net", None),  # 250 GB, already moved
        ("user00006@rcf.nhs.net", None),  # half a GB
    ],
)
def test_the_helpdesk_sees_why_a_mailbox_may_not_move(client, dave, sized, address, says):
    mailbox = Mailbox.objects.get(address=address)
    client.force_login(dave)

    page = client.get(f"/helpdesk/mailboxes/{mailbox.pk}/").content.decode()

    for warning in (TOO_LARGE, OVER_QUOTA):
        assert (warning in page) == (warning == says), warning
