"""GET /api/lookup/?q=: the helpdesk's search as you type, across every organisation."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from mailboxes.models import Mailbox
from tests.api.conftest import signed_in


def found(client, q: str) -> list[str]:
    response = client.get("/api/lookup/", {"q": q})
    assert response.status_code == 200, response.content
    return [m["address"] for m in response.json()]


@pytest.mark.parametrize("user", ["dave", "carol"])
def test_the_helpdesk_and_central_team_find_a_mailbox_by_exact_address(
    client, request, user, airedale, bradford
):
    signed_in(client, request.getfixturevalue(user))
    assert found(client, "User00003@B83001.nhs.net") == ["user00003@b83001.nhs.net"]


def test_it_finds_by_upn(client, dave, airedale):
    assert found(signed_in(client, dave), "user00004@rcf.nhs.uk") == ["user00004@rcf.nhs.net"]


def test_it_finds_across_organisations_by_display_name(client, dave, airedale, bradford):
    results = found(signed_in(client, dave), "User 00001")
    assert results == ["user00001@b83001.nhs.net", "user00001@rcf.nhs.net"]


def named(organisation, address: str, display_name: str) -> None:
    Mailbox.objects.create(
        address=address, upn=address, display_name=display_name, organisation=organisation
    )


def test_a_name_is_searched_in_the_person_not_the_organisation_after_it(
    client, dave, airedale, bradford
):
    """NHSmail appends the organisation: "ford" must find people named Ford, not every mailbox
    of "BRADFORD ROAD PRACTICE"."""
    named(airedale, "harrison.ford@nhs.net", "FORD, Harrison (AIREDALE NHS FOUNDATION TRUST)")
    named(airedale, "joan.crawford@nhs.net", "CRAWFORD, Joan (AIREDALE NHS FOUNDATION TRUST)")
    for i in range(3):
        named(bradford, f"jane.smith{i}@nhs.net", "SMITH, Jane (BRADFORD ROAD PRACTICE)")
    signed_in(client, dave)

    assert found(client, "ford") == ["joan.crawford@nhs.net", "harrison.ford@nhs.net"]
    assert found(client, "Harrison Ford") == ["harrison.ford@nhs.net"]
    assert found(client, "bradford") == []
    assert found(client, "smith airedale") == []
    assert len(found(client, "jane smith")) == 3


def test_it_gives_at_most_twenty_results(client, dave, airedale, bradford):
    assert len(found(signed_in(client, dave), "user")) == 20


def test_it_gives_nothing_for_fewer_than_two_characters(client, dave, airedale):
    signed_in(client, dave)
    assert found(client, "u") == []
    assert found(client, "") == []


def test_a_result_has_the_mailbox_fields(client, dave, airedale):
    response = signed_in(client, dave).get("/api/lookup/", {"q": "user00000@rcf.nhs.net"})
    assert response.json()[0]["organisation"] == "RCF"
    assert response.json()[0]["status"] == "not_scheduled"


def test_a_missing_query_is_a_field_error(client, dave):
    response = signed_in(client, dave).get("/api/lookup/")
    assert response.status_code == 400
    assert "q" in response.json()


def test_a_query_longer_than_an_address_is_a_field_error(client, dave):
    response = signed_in(client, dave).get("/api/lookup/", {"q": "x" * 255})
    assert response.status_code == 400
    assert "q" in response.json()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only: collations")
def test_an_address_prefix_is_read_in_order_from_the_unique_index(client, dave, airedale):
    """Collation "C" (migration 0005): the unique index serves the prefix as a range, in order,
    so the first 20 of 160,000 matches need no sort; no second pattern index is kept."""
    with CaptureQueriesContext(connection) as queries:
        found(signed_in(client, dave), "user0001")
    prefix_query = next(q["sql"] for q in queries if "LIKE 'user0001%'" in q["sql"])
    with connection.cursor() as cursor:
        # Few rows here: the planner is asked whether the index can give them in order at all.
        for plan_kind in ("seqscan", "bitmapscan", "sort"):
            cursor.execute(f"SET LOCAL enable_{plan_kind} = off")
        cursor.execute(f"EXPLAIN {prefix_query}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute(
            "SELECT attname, collname FROM pg_attribute a JOIN pg_collation c"
            " ON c.oid = a.attcollation WHERE attrelid = 'mailboxes_mailbox'::regclass"
            " AND attname IN ('address', 'upn') ORDER BY attname"
        )
        collations = cursor.fetchall()
        cursor.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'mailboxes_mailbox'"
            " AND indexdef LIKE '%%pattern_ops%%'"
        )
        (pattern_indexes,) = cursor.fetchone()

    assert collations == [("address", "C"), ("upn", "C")]
    assert pattern_indexes == 0
    assert "Index Cond: (((address)::text >= 'user0001'::text)" in plan, plan
    assert "Sort" not in plan, plan


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only: pg_trgm")
def test_a_name_is_found_through_the_trigram_index_of_the_persons_name(client, dave, airedale):
    """Migration 0007 indexes exactly the expression the name search compiles to."""
    with CaptureQueriesContext(connection) as queries:
        found(signed_in(client, dave), "michelle")
    name_query = next(q["sql"] for q in queries if "LIKE UPPER('%michelle%')" in q["sql"])
    with connection.cursor() as cursor:
        # Few rows here: the planner is asked whether it can answer from the index at all.
        for plan_kind in ("seqscan", "indexscan"):
            cursor.execute(f"SET LOCAL enable_{plan_kind} = off")
        cursor.execute(f"EXPLAIN {name_query}")
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "Bitmap Index Scan on mailbox_person_name_trgm" in plan, plan
