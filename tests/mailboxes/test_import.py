"""Bulk import of organisations and mailboxes: through the commands and the background task.

Each refused file must change nothing: the tests compare every mailbox's fields before and after.
"""

import csv
import fcntl
from contextlib import contextmanager
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django_q.models import OrmQ

from mailboxes import importing
from mailboxes.importing import import_run_start, mailboxes_import
from mailboxes.models import (
    ImportKind,
    ImportRun,
    ImportStatus,
    Mailbox,
    MailboxStatus,
    Organisation,
    OrganisationType,
)
from mailboxes.services import import_run_transition, mailboxes_transition
from mailboxes.tasks import run_import
from tests.conftest import make_organisation

DATA = Path(__file__).parent / "data"
HEADER = (
    "PrimarySmtpAddress,UserPrincipalName,DisplayName,RecipientTypeDetails,"
    "TotalItemSizeBytes,ItemCount,OrganisationCode\n"
)
GOOD_ROW = "ann.smith@rcf.nhs.net,ann.smith@rcf.nhs.uk,Ann Smith,UserMailbox,1024,10,RCF\n"
MAILBOX_FIELDS = (
    "address",
    "upn",
    "display_name",
    "recipient_type",
    "size_bytes",
    "item_count",
    "organisation__code",
    "status",
    "status_changed_at",
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def organisations(db):
    """The two organisations the mailbox files name: Airedale (RCF) and Bradford Road (B83001)."""
    return [
        make_organisation("RCF", "Airedale NHS Foundation Trust"),
        make_organisation("B83001", "Bradford Road Practice", type_=OrganisationType.GP_PRACTICE),
    ]


def run_command(command: str, path, *options: str) -> str:
    out = StringIO()
    call_command(command, str(path), *options, stdout=out, stderr=StringIO())
    return out.getvalue()


def refused_command(command: str, path, *options: str) -> tuple[str, str]:
    """Run a command that must refuse the file: (its printed report, its error message)."""
    out = StringIO()
    with pytest.raises(CommandError) as refusal:
        call_command(command, str(path), *options, stdout=out, stderr=StringIO())
    return out.getvalue(), str(refusal.value)


def write(tmp_path, text: str, name: str = "mailboxes.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def mailbox_snapshot() -> list[tuple]:
    return list(Mailbox.objects.order_by("address").values_list(*MAILBOX_FIELDS))


# Organisations -------------------------------------------------------------------------------


def test_it_imports_organisations_with_parents_earlier_later_or_none(db):
    out = run_command("import_organisations", DATA / "organisations.csv")

    assert "Rows read 6: created 6, updated 0, unchanged 0, skipped 0" in out
    orgs = {org.code: org for org in Organisation.objects.select_related("parent")}
    assert {code: org.type for code, org in orgs.items()} == {
        "QWO": OrganisationType.ICB,
        "RCF": OrganisationType.TRUST,
        "B83001": OrganisationType.GP_PRACTICE,
        "B83PCN": OrganisationType.OTHER,
        "SC0042": OrganisationType.SOCIAL_CARE,
        "QHM": OrganisationType.ICB,
    }
    assert orgs["RCF"].parent.code == "QWO"
    assert orgs["B83001"].parent.code == "B83PCN"  # a parent later in the file
    assert orgs["B83PCN"].parent.code == "QWO"
    assert orgs["QWO"].parent is None
    assert orgs["RCF"].region == "North East and Yorkshire"


def test_it_reimports_organisations_without_duplicates_and_updates_what_changed(db, tmp_path):
    run_command("import_organisations", DATA / "organisations.csv")

    again = run_command("import_organisations", DATA / "organisations.csv")
    assert "created 0, updated 0, unchanged 6" in again

    text = (
        (DATA / "organisations.csv")
        .read_text()
        .replace(
            "RCF,Airedale NHS Foundation Trust,Trust,North East and Yorkshire,QWO",
            "RCF,Airedale NHS FT,Trust,North East and Yorkshire,QHM",
        )
    )
    changed = run_command("import_organisations", write(tmp_path, text, "orgs.csv"))
    assert "created 0, updated 1, unchanged 5" in changed
    airedale = Organisation.objects.get(code="RCF")
    assert (airedale.name, airedale.parent.code) == ("Airedale NHS FT", "QHM")
    assert Organisation.objects.count() == 6


def test_it_keeps_region_and_parent_when_the_file_has_no_such_columns(db, tmp_path):
    run_command("import_organisations", DATA / "organisations.csv")

    out = run_command(
        "import_organisations",
        write(tmp_path, "Type,Name,OrganisationCode\ntrust,Airedale NHS FT,rcf\n", "orgs.csv"),
    )

    assert "created 0, updated 1, unchanged 0" in out
    airedale = Organisation.objects.get(code="RCF")
    assert (airedale.name, airedale.region, airedale.parent.code) == (
        "Airedale NHS FT",
        "North East and Yorkshire",
        "QWO",
    )


def test_it_refuses_organisations_with_bad_rows_and_lists_each(db, tmp_path):
    make_organisation("RCF", "Airedale NHS Foundation Trust")
    text = (
        "OrganisationCode,Name,Type,Region,ParentCode\n"
        "QWO,West Yorkshire ICB,ICB,,\n"
        "RXX,Somewhere,Hospital,,\n"  # line 3: unknown type
        "RYY,,Trust,,QWO\n"  # line 4: no name
        "QWO,West Yorkshire ICB again,ICB,,\n"  # line 5: duplicate code
        "RZZ,Orphan Trust,Trust,,NOPE\n"  # line 6: unknown parent
        "A1,Loop A,Other,,A2\n"  # lines 7, 8: a loop
        "A2,Loop B,Other,,A1\n"
        "A3,Own parent,Other,,A3\n"  # line 9
        "RCF,Airedale renamed,Trust,,\n"
    )
    out, error = refused_command("import_organisations", write(tmp_path, text, "orgs.csv"))

    assert "refused, nothing was changed" in error
    assert "Refused: 7 bad rows. Nothing was changed." in out
    assert 'line 3, Type "Hospital": is not one of Trust, GP practice, ICB' in out
    assert "line 4, Name (empty): is empty" in out
    assert (
        'line 5, OrganisationCode "QWO": appears more than once in the file (first on line 2)'
        in out
    )
    assert 'line 6, ParentCode "NOPE": is not the code of an organisation' in out
    assert 'line 7, ParentCode "A2": makes a loop' in out
    assert 'line 8, ParentCode "A1": makes a loop' in out
    assert 'line 9, ParentCode "A3": is the organisation\'s own code' in out
    assert list(Organisation.objects.values_list("code", "name")) == [
        ("RCF", "Airedale NHS Foundation Trust")
    ]


def test_it_skips_bad_organisations_and_those_whose_parent_was_skipped(db, tmp_path):
    text = (
        "OrganisationCode,Name,Type,ParentCode\n"
        "QWO,West Yorkshire ICB,ICB,\n"
        "B83PCN,,Other,QWO\n"  # line 3: no name
        "B83001,Bradford Road Practice,GP practice,B83PCN\n"  # line 4: its parent was skipped
        "RCF,Airedale,Trust,QWO\n"
    )
    out = run_command("import_organisations", write(tmp_path, text, "orgs.csv"), "--skip-bad-rows")

    assert "Skipped 2 bad rows:" in out
    assert 'line 4, ParentCode "B83PCN": names an organisation whose row is bad' in out
    assert "Rows read 4: created 2, updated 0, unchanged 0, skipped 2" in out
    assert set(Organisation.objects.values_list("code", flat=True)) == {"QWO", "RCF"}


# Mailboxes: the good path --------------------------------------------------------------------


def test_it_imports_mailboxes_lowercased_and_not_scheduled(organisations):
    out = run_command("import_mailboxes", DATA / "mailboxes.csv")

    assert "Rows read 6: created 6, updated 0, unchanged 0, skipped 0" in out
    bob = Mailbox.objects.get(address="bob.jones@rcf.nhs.net")
    assert bob.upn == "bob.jones@rcf.nhs.uk"
    assert bob.display_name == "Jones, Bob (Dr)"
    assert (bob.size_bytes, bob.item_count, bob.organisation.code) == (52428800, 801, "RCF")
    assert bob.status == MailboxStatus.NOT_SCHEDULED
    assert bob.status_changed_at is not None
    assert Mailbox.objects.get(address="ann.smith@rcf.nhs.net").upn == "ann.smith@rcf.nhs.uk"
    reception = Mailbox.objects.get(address="reception@b83001.nhs.net")
    assert (reception.recipient_type, reception.organisation.code) == ("SharedMailbox", "B83001")
    assert reception.display_name == "Reception – Bradford Road"


def test_it_matches_headers_in_any_case_and_order_ignoring_other_columns_and_a_bom(
    organisations,
):
    run_command("import_mailboxes", DATA / "mailboxes.csv")
    expected = mailbox_snapshot()

    out = run_command("import_mailboxes", DATA / "mailboxes_reordered.csv")

    assert "Rows read 6: created 0, updated 0, unchanged 6" in out
    assert mailbox_snapshot() == expected


def test_it_reimports_without_duplicates_then_updates_only_what_changed(organisations, tmp_path):
    run_command("import_mailboxes", DATA / "mailboxes.csv")
    before = mailbox_snapshot()

    again = run_command("import_mailboxes", DATA / "mailboxes.csv")
    assert "created 0, updated 0, unchanged 6, skipped 0" in again
    assert mailbox_snapshot() == before

    text = (DATA / "mailboxes.csv").read_text().replace("52428800,801,RCF", "62428800,801,RCF")
    changed = run_command("import_mailboxes", write(tmp_path, text))
    assert "created 0, updated 1, unchanged 5" in changed
    assert Mailbox.objects.get(address="bob.jones@rcf.nhs.net").size_bytes == 62428800
    assert Mailbox.objects.count() == 6


def test_it_updates_name_type_counts_and_organisation_but_not_status(organisations, tmp_path):
    run_command("import_mailboxes", DATA / "mailboxes.csv")
    ward7 = Mailbox.objects.get(address="ward7@rcf.nhs.net")
    mailboxes_transition(mailbox_ids=[ward7.pk], to=MailboxStatus.BOOKED, actor="test")
    ward7.refresh_from_db()
    booked_at = ward7.status_changed_at

    text = HEADER + "WARD7@rcf.nhs.net,ward7@rcf.nhs.uk,Ward Seven,UserMailbox,99,9,B83001\n"
    out = run_command("import_mailboxes", write(tmp_path, text))

    assert "created 0, updated 1, unchanged 0" in out
    ward7.refresh_from_db()
    assert (ward7.display_name, ward7.recipient_type, ward7.size_bytes, ward7.item_count) == (
        "Ward Seven",
        "UserMailbox",
        99,
        9,
    )
    assert ward7.organisation.code == "B83001"
    assert (ward7.status, ward7.status_changed_at) == (MailboxStatus.BOOKED, booked_at)
    assert Mailbox.objects.count() == 6  # nothing deleted: the other five were not in the file


def test_it_takes_a_changed_upn_when_no_other_mailbox_has_it(organisations, tmp_path):
    run_command("import_mailboxes", DATA / "mailboxes.csv")

    text = (
        HEADER
        + "ann.smith@rcf.nhs.net,ann.jones@rcf.nhs.uk,Ann Smith,UserMailbox,1073741824,15230,RCF\n"
    )
    out = run_command("import_mailboxes", write(tmp_path, text))

    assert "updated 1" in out
    assert Mailbox.objects.get(address="ann.smith@rcf.nhs.net").upn == "ann.jones@rcf.nhs.uk"


def test_it_reads_exchange_sizes_as_displayed(organisations, tmp_path):
    text = (
        HEADER.replace("TotalItemSizeBytes", "TotalItemSize")
        + 'ann.smith@rcf.nhs.net,ann.smith@rcf.nhs.uk,Ann Smith,UserMailbox,"1.2 GB (1,288,490,189 bytes)",10,RCF\n'
    )
    run_command("import_mailboxes", write(tmp_path, text))

    assert Mailbox.objects.get().size_bytes == 1_288_490_189


# Mailboxes: bad rows -------------------------------------------------------------------------

BAD_ROWS = {
    "bad address": (
        "ann.smith.rcf.nhs.net,ann.smith@rcf.nhs.uk,Ann Smith,UserMailbox,1024,10,RCF",
        "PrimarySmtpAddress",
        "ann.smith.rcf.nhs.net",
        "is not a valid email address",
    ),
    "missing address": (
        ",ann.smith@rcf.nhs.uk,Ann Smith,UserMailbox,1024,10,RCF",
        "PrimarySmtpAddress",
        "",
        "is empty",
    ),
    "bad UPN": (
        "ann.smith@rcf.nhs.net,ann smith@rcf,Ann Smith,UserMailbox,1024,10,RCF",
        "UserPrincipalName",
        "ann smith@rcf",
        "is not a valid email address",
    ),
    "unknown recipient type": (
        "ann.smith@rcf.nhs.net,ann.smith@rcf.nhs.uk,Ann Smith,LinkedMailbox,1024,10,RCF",
        "RecipientTypeDetails",
        "LinkedMailbox",
        "is not one of UserMailbox, SharedMailbox, RoomMailbox, EquipmentMailbox",
    ),
    "negative size": (
        "ann.smith@rcf.nhs.net,ann.smith@rcf.nhs.uk,Ann Smith,UserMailbox,-1024,10,RCF",
        "TotalItemSizeBytes",
        "-1024",
        "must not be negative",
    ),
    "size not a number": (
        "ann.smith@rcf.nhs.net,ann.smith@rcf.nhs.uk,Ann Smith,UserMailbox,1.5 GB,10,RCF",
        "TotalItemSizeBytes",
        "1.5 GB",
        "is not a whole number",
    ),
    "item count not a number": (
        "ann.smith@rcf.nhs.net,ann.smith@rcf.nhs.uk,Ann Smith,UserMailbox,1024,lots,RCF",
        "ItemCount",
        "lots",
        "is not a whole number",
    ),
    "negative item count": (
        "ann.smith@rcf.nhs.net,ann.smith@rcf.nhs.uk,Ann Smith,UserMailbox,1024,-3,RCF",
        "ItemCount",
        "-3",
        "must not be negative",
    ),
    "empty display name": (
        "ann.smith@rcf.nhs.net,ann.smith@rcf.nhs.uk,  ,UserMailbox,1024,10,RCF",
        "DisplayName",
        "  ",
        "is empty",
    ),
    "unknown organisation": (
        "ann.smith@rcf.nhs.net,ann.smith@rcf.nhs.uk,Ann Smith,UserMailbox,1024,10,ZZZ99",
        "OrganisationCode",
        "ZZZ99",
        "is not the code of an organisation",
    ),
    "duplicate address": (
        "Ward7@RCF.nhs.net,ward7.second@rcf.nhs.uk,Ward 7 again,SharedMailbox,1,1,RCF",
        "PrimarySmtpAddress",
        "ward7@rcf.nhs.net",
        "appears more than once in the file (first on line 4)",
    ),
    "duplicate UPN": (
        "ward7.second@rcf.nhs.net,WARD7@rcf.nhs.uk,Ward 7 again,SharedMailbox,1,1,RCF",
        "UserPrincipalName",
        "ward7@rcf.nhs.uk",
        "appears more than once in the file (first on line 4)",
    ),
    "UPN of another mailbox in the portal": (
        "new.person@rcf.nhs.net,user00001@rcf.nhs.uk,New Person,UserMailbox,1,1,RCF",
        "UserPrincipalName",
        "user00001@rcf.nhs.uk",
        "belongs to another mailbox already in the portal, user00001@rcf.nhs.net",
    ),
}


@pytest.mark.parametrize("bad_row", BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_it_refuses_a_file_with_a_bad_row_and_changes_nothing(organisations, tmp_path, bad_row):
    row, column, value, reason = bad_row
    make_organisation("XYZ", "Existing Trust", mailboxes=0)
    Mailbox.objects.create(
        address="user00001@rcf.nhs.net",
        upn="user00001@rcf.nhs.uk",
        display_name="User 1",
        recipient_type="UserMailbox",
        size_bytes=5,
        item_count=5,
        organisation=organisations[0],
    )
    run_command("import_mailboxes", DATA / "mailboxes.csv")
    before = mailbox_snapshot()
    # Good rows around the bad one, including one that would change an existing mailbox.
    text = (DATA / "mailboxes.csv").read_text().replace("52428800,801", "1,1") + row + "\n"
    text += "later.good@rcf.nhs.net,later.good@rcf.nhs.uk,Later,UserMailbox,1,1,RCF\n"

    out, error = refused_command("import_mailboxes", write(tmp_path, text))

    assert "Refused: 1 bad row. Nothing was changed." in out
    shown = f'"{value}"' if value else "(empty)"
    assert f"line 8, {column} {shown}: {reason}" in out
    assert "Rows read 8: created 0, updated 0, unchanged 0, skipped 0" in out
    assert "--skip-bad-rows" in error
    assert mailbox_snapshot() == before


def test_it_lists_every_bad_row_of_a_file_but_prints_a_thousand(organisations, tmp_path):
    rows = [
        f"user{i}@rcf.nhs.net,user{i}@rcf.nhs.uk,User {i},UserMailbox,{-i - 1},x,RCF\n"
        for i in range(1200)
    ]
    path = write(tmp_path, HEADER + "".join(rows))

    with path.open("rb") as stream:
        report = mailboxes_import(stream)
    out, _ = refused_command("import_mailboxes", path)

    assert report.refused and report.bad_rows == 1200 and report.problem_count == 2400
    assert len(report.problems) == 2400
    assert report.problems[0] == (2, "TotalItemSizeBytes", "-1", "must not be negative")
    assert report.problems[-1].line == 1201
    assert "Refused: 1,200 bad rows." in out
    assert out.count("\n  line ") == 1000
    assert "… and 1,400 more problems not listed." in out
    assert Mailbox.objects.count() == 0


def test_it_imports_the_good_rows_and_lists_the_skipped_ones_when_asked(organisations, tmp_path):
    text = (DATA / "mailboxes.csv").read_text()
    text += "bad.size@rcf.nhs.net,bad.size@rcf.nhs.uk,Bad Size,UserMailbox,-1,1,RCF\n"
    text += "Ann.Smith@rcf.nhs.net,ann.smith2@rcf.nhs.uk,Ann Again,UserMailbox,1,1,RCF\n"
    text += "no.org@rcf.nhs.net,no.org@rcf.nhs.uk,No Org,UserMailbox,1,1,NOPE\n"

    out = run_command("import_mailboxes", write(tmp_path, text), "--skip-bad-rows")

    assert "Skipped 3 bad rows:" in out
    assert 'line 8, TotalItemSizeBytes "-1": must not be negative' in out
    assert (
        'line 9, PrimarySmtpAddress "ann.smith@rcf.nhs.net": appears more than once in the file '
        "(first on line 2)" in out
    )
    assert 'line 10, OrganisationCode "NOPE": is not the code of an organisation' in out
    assert "Rows read 9: created 6, updated 0, unchanged 0, skipped 3" in out
    assert Mailbox.objects.count() == 6
    assert Mailbox.objects.get(address="ann.smith@rcf.nhs.net").display_name == "Ann Smith"


def test_it_skips_a_new_address_whose_upn_belongs_to_an_existing_mailbox(airedale, tmp_path):
    existing = Mailbox.objects.get(upn="user00003@rcf.nhs.uk")
    text = HEADER + GOOD_ROW
    text += "renamed@rcf.nhs.net,user00003@rcf.nhs.uk,Renamed,UserMailbox,1,1,RCF\n"

    out = run_command("import_mailboxes", write(tmp_path, text), "--skip-bad-rows")

    assert (
        'line 3, UserPrincipalName "user00003@rcf.nhs.uk": belongs to another mailbox already '
        "in the portal, user00003@rcf.nhs.net" in out
    )
    assert "created 1, updated 0, unchanged 0, skipped 1" in out
    assert not Mailbox.objects.filter(address="renamed@rcf.nhs.net").exists()
    assert Mailbox.objects.get(upn="user00003@rcf.nhs.uk") == existing


# Mailboxes: files refused whole ----------------------------------------------------------------


def test_it_refuses_a_file_that_is_not_utf8(organisations):
    out, error = refused_command("import_mailboxes", DATA / "mailboxes_windows1252.csv")

    assert "Refused: the file is not UTF-8 text: line 3 has the byte 0xe9" in out
    assert "--skip-bad-rows" not in error
    assert Mailbox.objects.count() == 0


def test_it_refuses_utf8_trouble_even_when_skipping_bad_rows(organisations):
    out, _ = refused_command(
        "import_mailboxes", DATA / "mailboxes_windows1252.csv", "--skip-bad-rows"
    )

    assert "the file is not UTF-8 text" in out
    assert Mailbox.objects.count() == 0


def test_it_recognises_utf16(organisations, tmp_path):
    path = tmp_path / "utf16.csv"
    path.write_text(HEADER + GOOD_ROW, encoding="utf-16")

    out, _ = refused_command("import_mailboxes", path)

    assert "the file is not UTF-8 text: it looks like UTF-16" in out


def test_it_names_a_missing_required_column(organisations, tmp_path):
    text = HEADER.replace(",ItemCount", "") + GOOD_ROW.replace(",10,", ",")

    out, _ = refused_command("import_mailboxes", write(tmp_path, text))

    assert "Refused: required column missing: ItemCount (the header has: PrimarySmtpAddress," in out


def test_it_refuses_a_file_with_no_data_rows(organisations, tmp_path):
    out, _ = refused_command("import_mailboxes", write(tmp_path, HEADER + "\n"))

    assert "Refused: the file has no data rows, only a header." in out


def test_it_refuses_an_empty_file(organisations, tmp_path):
    out, _ = refused_command("import_mailboxes", write(tmp_path, ""))

    assert "Refused: the file is empty: it has no header row." in out


def test_it_refuses_a_missing_file(db, tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_mailboxes", str(tmp_path / "nope.csv"), stdout=StringIO())


def test_a_refused_reimport_leaves_the_earlier_import_as_it_was(organisations, tmp_path):
    run_command("import_mailboxes", DATA / "mailboxes.csv")
    before = mailbox_snapshot()
    text = (DATA / "mailboxes.csv").read_text().replace(",1024,3,", ",2048,3,")
    text += "extra@rcf.nhs.net,extra@rcf.nhs.uk,Extra,UserMailbox,1,1,RCF\n"
    text += "bad@rcf.nhs.net,bad@rcf.nhs.uk,Bad,Mailbox,1,1,RCF\n"

    refused_command("import_mailboxes", write(tmp_path, text))

    assert mailbox_snapshot() == before


# In the background ------------------------------------------------------------------------------


def test_it_queues_an_import_run_once_the_request_commits(
    carol, organisations, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = import_run_start(
            kind=ImportKind.MAILBOXES,
            path=str(DATA / "mailboxes.csv"),
            skip_bad_rows=False,
            created_by=carol,
        )
        assert not OrmQ.objects.exists()

    assert (run.status, run.created_by, run.rows_read) == (ImportStatus.QUEUED, carol, 0)
    assert history(run) == [("", "queued", "Carol", "mailboxes.csv queued for a worker")]
    assert len(callbacks) == 1
    callbacks[0]()
    task = OrmQ.objects.get().task
    assert (task["func"], task["args"]) == ("mailboxes.tasks.run_import", (run.pk,))
    assert task["timeout"] == importing.TASK_TIMEOUT


def test_the_task_imports_and_records_the_report(carol, organisations, monkeypatch):
    run = ImportRun.objects.create(
        kind=ImportKind.MAILBOXES, path=str(DATA / "mailboxes.csv"), created_by=carol
    )
    monkeypatch.setattr(importing, "PROGRESS_EVERY", 2)
    reported = []
    real_writer = importing._ProgressWriter

    class RecordingWriter(real_writer):
        def __call__(self, rows_read):
            reported.append(rows_read)
            super().__call__(rows_read)

    monkeypatch.setattr(importing, "_ProgressWriter", RecordingWriter)

    assert run_import(run.pk) == ImportStatus.DONE

    run.refresh_from_db()
    assert (run.status, run.rows_total, run.rows_read, run.created, run.unchanged) == (
        ImportStatus.DONE,
        6,
        6,
        6,
        0,
    )
    assert run.started_at <= run.finished_at
    assert run.percent_done == 100
    assert reported == [2, 4, 6, 6]
    assert history(run)[0][:3] == ("queued", "running", "Import worker")
    assert history(run)[1][:3] == ("running", "done", "Import worker")
    assert history(run)[1][3].startswith("Rows read 6: created 6, updated 0, unchanged 0")
    assert Mailbox.objects.count() == 6


def test_the_task_does_not_run_an_import_twice(carol, organisations):
    run = ImportRun.objects.create(kind=ImportKind.MAILBOXES, path=str(DATA / "mailboxes.csv"))
    run_import(run.pk)
    Mailbox.objects.filter(address="ann.smith@rcf.nhs.net").delete()

    assert run_import(run.pk) == ImportStatus.DONE

    assert Mailbox.objects.count() == 5  # not imported again
    assert [event[:2] for event in history(run)] == [("queued", "running"), ("running", "done")]


def history(run: ImportRun) -> list[tuple[str, str, str, str]]:
    return list(run.events.values_list("from_status", "to_status", "actor_label", "reason"))


@pytest.fixture(autouse=True)
def upload_dir(settings, tmp_path):
    """The folder of uploads, where a worker on SQLite keeps the lock file of a run."""
    settings.PORTAL_IMPORT_DIR = str(tmp_path / "uploads")
    return Path(settings.PORTAL_IMPORT_DIR)


@contextmanager
def another_worker_running(run: ImportRun):
    """A worker elsewhere, in the middle of the run, holding the run's lock: on PostgreSQL an
    advisory lock of its session, on SQLite a lock on the run's file through an open file of
    its own (flock locks of two opens conflict, as between two processes)."""
    if connection.vendor != "postgresql":
        path = importing.run_lock_path(run.pk)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield
        return
    worker = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with worker.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [importing.IMPORT_RUN_LOCK, run.pk])
        yield
    finally:
        worker.close()


def test_the_task_leaves_a_run_another_worker_is_running(organisations):
    run = ImportRun.objects.create(
        kind=ImportKind.MAILBOXES, path=str(DATA / "mailboxes.csv"), status=ImportStatus.RUNNING
    )

    with another_worker_running(run):
        assert run_import(run.pk) == ImportStatus.RUNNING

    assert Mailbox.objects.count() == 0
    run.refresh_from_db()
    assert run.status == ImportStatus.RUNNING
    assert history(run) == []


def test_the_task_runs_again_a_run_whose_worker_stopped(organisations, caplog):
    """Its worker claimed it and died mid-import: the import rolled back and the run's lock went
    with the worker's session (PostgreSQL) or process (SQLite). The task queue delivers the
    task again."""
    run = ImportRun.objects.create(
        kind=ImportKind.MAILBOXES,
        path=str(DATA / "mailboxes.csv"),
        status=ImportStatus.RUNNING,
        rows_read=4,
    )

    with caplog.at_level("WARNING", logger="mailboxes.importing"):
        assert run_import(run.pk) == ImportStatus.DONE

    assert f"Import run {run.pk} was left by a worker that stopped" in caplog.text
    run.refresh_from_db()
    assert (run.status, run.rows_read, run.created) == (ImportStatus.DONE, 6, 6)
    assert history(run)[0] == (
        "running",
        "running",
        "Import worker",
        "Started again: the worker running it stopped, and its import was undone",
    )
    assert history(run)[1][:2] == ("running", "done")
    assert Mailbox.objects.count() == 6
    assert_no_run_locks(run)


def test_a_lock_let_go_leaves_the_run_to_the_next_worker(organisations):
    run = ImportRun.objects.create(
        kind=ImportKind.MAILBOXES, path=str(DATA / "mailboxes.csv"), status=ImportStatus.RUNNING
    )
    with another_worker_running(run):
        assert run_import(run.pk) == ImportStatus.RUNNING
    # The other worker stopped without finishing: its lock went with it.
    assert run_import(run.pk) == ImportStatus.DONE
    assert Mailbox.objects.count() == 6
    assert_no_run_locks(run)


def test_a_run_finished_while_the_task_waited_for_its_lock_is_not_run_again(
    organisations, monkeypatch
):
    """The task saw the run "running" with no worker's lock on it, but its worker was only
    between two steps: by the time the task holds the lock, that worker has finished it."""
    run = ImportRun.objects.create(
        kind=ImportKind.MAILBOXES, path=str(DATA / "mailboxes.csv"), status=ImportStatus.RUNNING
    )
    take_lock = importing._run_lock

    def the_other_worker_finishes_first(run_id: int) -> bool:
        assert import_run_transition(run_id=run_id, to=ImportStatus.DONE, reason="Imported")
        return take_lock(run_id)

    monkeypatch.setattr(importing, "_run_lock", the_other_worker_finishes_first)

    assert run_import(run.pk) == ImportStatus.DONE

    assert Mailbox.objects.count() == 0
    assert [step[:2] for step in history(run)] == [("running", "done")]
    assert_no_run_locks(run)


def assert_no_run_locks(run: ImportRun) -> None:
    if connection.vendor != "postgresql":
        assert not importing.run_lock_path(run.pk).exists()
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s",
            [importing.IMPORT_RUN_LOCK],
        )
        assert cursor.fetchone()[0] == 0


def test_the_task_records_a_refusal_with_its_problems(carol, organisations, tmp_path):
    text = HEADER + GOOD_ROW + GOOD_ROW.replace("UserMailbox", "Nonsense").replace("ann.", "an.")
    run = ImportRun.objects.create(kind=ImportKind.MAILBOXES, path=str(write(tmp_path, text)))

    assert run_import(run.pk) == ImportStatus.REFUSED

    run.refresh_from_db()
    assert (run.rows_read, run.bad_rows, run.problem_count, run.created) == (2, 1, 1, 0)
    assert history(run)[-1] == ("running", "refused", "Import worker", "Refused: 1 bad row")
    assert run.problems == [
        {
            "line": 3,
            "column": "RecipientTypeDetails",
            "value": "Nonsense",
            "reason": "is not one of UserMailbox, SharedMailbox, RoomMailbox, EquipmentMailbox",
        }
    ]
    assert Mailbox.objects.count() == 0


def test_the_task_skips_bad_rows_when_the_run_says_so(organisations, tmp_path):
    text = HEADER + GOOD_ROW + GOOD_ROW.replace("ann.", "an.").replace(",10,", ",-10,")
    run = ImportRun.objects.create(
        kind=ImportKind.MAILBOXES, path=str(write(tmp_path, text)), skip_bad_rows=True
    )

    assert run_import(run.pk) == ImportStatus.DONE

    run.refresh_from_db()
    assert (run.created, run.skipped, run.problem_count) == (1, 1, 1)


def test_the_task_imports_organisations(db):
    run = ImportRun.objects.create(
        kind=ImportKind.ORGANISATIONS, path=str(DATA / "organisations.csv")
    )

    assert run_import(run.pk) == ImportStatus.DONE

    assert Organisation.objects.count() == 6


def test_the_task_records_a_failure_when_the_file_has_gone(db, tmp_path):
    run = ImportRun.objects.create(kind=ImportKind.MAILBOXES, path=str(tmp_path / "gone.csv"))

    assert run_import(run.pk) == ImportStatus.FAILED

    run.refresh_from_db()
    assert run.error == "FileNotFoundError: No such file or directory"
    assert run.finished_at is not None


def test_it_estimates_the_rows_of_a_file(tmp_path):
    assert importing.estimate_rows(DATA / "mailboxes.csv") == 6
    assert importing.estimate_rows(write(tmp_path, HEADER + GOOD_ROW.rstrip("\n"))) == 1
    assert importing.estimate_rows(write(tmp_path, "")) == 0


# PostgreSQL bulk loads ---------------------------------------------------------------------------


def mailbox_schema() -> tuple[set, set]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'mailboxes_mailbox'"
        )
        indexes = set(cursor.fetchall())
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'mailboxes_mailbox'::regclass"
        )
        return indexes, set(cursor.fetchall())


def postgres_only(test):
    """For what only PostgreSQL does: bulk loads, and progress committed on the side."""
    skip = pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="PostgreSQL only; set DATABASE_URL=postgres://... to run it.",
    )
    return pytest.mark.postgres_only(skip(test))


@postgres_only
def test_a_bulk_load_rebuilds_every_index_and_foreign_key(organisations, monkeypatch, caplog):
    schema = mailbox_schema()
    monkeypatch.setattr(importing, "BULK_LOAD_MIN_ROWS", 1)
    with connection.cursor() as cursor:
        # As in a fresh transaction: no deferred checks left pending by the fixtures' inserts.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")

    with caplog.at_level("INFO", logger="mailboxes.importing"):
        out = run_command("import_mailboxes", DATA / "mailboxes.csv")

    assert "created 6" in out
    assert "rebuild indexes and foreign keys" in caplog.text
    assert mailbox_schema() == schema
    assert Mailbox.objects.filter(organisation__code="RCF").count() == 4


@postgres_only
def test_a_bulk_load_gives_way_to_readers_and_merges_with_the_indexes_in_place(
    organisations, monkeypatch, caplog
):
    monkeypatch.setattr(importing, "BULK_LOAD_MIN_ROWS", 1)
    monkeypatch.setattr(importing, "BULK_LOAD_LOCK_TIMEOUT", "50ms")
    reader = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        reader.set_autocommit(False)
        with reader.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM mailboxes_mailbox")
        with caplog.at_level("INFO", logger="mailboxes.importing"):
            out = run_command("import_mailboxes", DATA / "mailboxes.csv")
    finally:
        reader.rollback()
        reader.close()

    assert "created 6" in out
    assert "canceling statement due to lock timeout" in caplog.text
    assert "rebuild indexes" not in caplog.text


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_progress_is_visible_to_a_page_while_the_import_runs(monkeypatch):
    """The import holds its rows in one transaction; its progress is committed on the side."""
    make_organisation("RCF", "Airedale NHS Foundation Trust")
    make_organisation("B83001", "Bradford Road Practice")
    run = ImportRun.objects.create(kind=ImportKind.MAILBOXES, path=str(DATA / "mailboxes.csv"))
    monkeypatch.setattr(importing, "PROGRESS_EVERY", 2)
    seen_by_a_page = []
    real_writer = importing._ProgressWriter

    class WatchedWriter(real_writer):
        def __call__(self, rows_read):
            super().__call__(rows_read)
            page = connections.create_connection(DEFAULT_DB_ALIAS)
            try:
                with page.cursor() as cursor:
                    cursor.execute(
                        "SELECT rows_read FROM mailboxes_importrun WHERE id = %s", [run.pk]
                    )
                    seen_by_a_page.append(cursor.fetchone()[0])
            finally:
                page.close()

    monkeypatch.setattr(importing, "_ProgressWriter", WatchedWriter)

    assert run_import(run.pk) == ImportStatus.DONE

    assert seen_by_a_page == [2, 4, 6, 6]


def column_defaults() -> set:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name, column_default FROM information_schema.columns"
            " WHERE table_name = 'mailboxes_mailbox'"
        )
        return set(cursor.fetchall())


@pytest.fixture
def bulk_loads(monkeypatch):
    """Every file counts as large; no deferred checks pending, as in a fresh transaction."""
    monkeypatch.setattr(importing, "BULK_LOAD_MIN_ROWS", 1)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


@postgres_only
def test_a_refresh_that_changes_every_mailbox_updates_them_in_place_without_a_table_lock(
    organisations, bulk_loads, tmp_path, caplog
):
    """As many changed rows as the table holds, but none new: the indexes stay, and so the pages
    and polls that read the table are not locked out of it while it runs."""
    run_command("import_mailboxes", DATA / "mailboxes.csv")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE mailboxes_mailbox")  # the table's size, as the import reads it
    header, *rows = csv.reader(StringIO((DATA / "mailboxes.csv").read_text()))
    for row in rows:
        row[5] = str(int(row[5]) + 1)  # every mailbox's item count
    grown = StringIO()
    csv.writer(grown, lineterminator="\n").writerows([header, *rows])
    caplog.clear()

    with caplog.at_level("INFO", logger="mailboxes.importing"):
        out = run_command("import_mailboxes", write(tmp_path, grown.getvalue()))

    assert "created 0, updated 6" in out
    assert "merge" in caplog.text
    assert "rebuild indexes" not in caplog.text


@postgres_only
def test_a_first_load_copies_into_the_table_and_leaves_its_schema_as_it_was(
    organisations, bulk_loads, caplog
):
    schema, defaults = mailbox_schema(), column_defaults()

    with caplog.at_level("INFO", logger="mailboxes.importing"):
        out = run_command("import_mailboxes", DATA / "mailboxes.csv")

    assert "created 6" in out
    assert "copy into the table, organisation by organisation" in caplog.text
    assert "work table" not in caplog.text
    assert (mailbox_schema(), column_defaults()) == (schema, defaults)
    # Each organisation's mailboxes in address order (the file has ward7 before the room).
    assert list(Mailbox.objects.order_by("pk").values_list("address", flat=True)) == [
        "ann.smith@rcf.nhs.net",
        "bob.jones@rcf.nhs.net",
        "room.boardroom@rcf.nhs.net",
        "ward7@rcf.nhs.net",
        "projector@b83001.nhs.net",
        "reception@b83001.nhs.net",
    ]
    bob = Mailbox.objects.get(address="bob.jones@rcf.nhs.net")
    assert (bob.upn, bob.display_name, bob.size_bytes, bob.organisation.code) == (
        "bob.jones@rcf.nhs.uk",
        "Jones, Bob (Dr)",
        52428800,
        "RCF",
    )
    assert (bob.status, bob.status_changed_at is not None) == (MailboxStatus.NOT_SCHEDULED, True)
    # New mailboxes still get ids from the table's sequence afterwards.
    later = Mailbox.objects.create(
        address="later@rcf.nhs.net",
        upn="later@rcf.nhs.uk",
        display_name="Later",
        recipient_type="UserMailbox",
        organisation=organisations[0],
    )
    assert later.pk > max(Mailbox.objects.exclude(pk=later.pk).values_list("pk", flat=True))


@postgres_only
def test_a_first_load_of_a_file_not_grouped_by_organisation_is_written_in_organisation_order(
    organisations, bulk_loads, tmp_path, caplog
):
    schema, defaults = mailbox_schema(), column_defaults()
    header, *rows = (DATA / "mailboxes.csv").read_text().splitlines()
    mixed = [rows[0], rows[4], rows[1], rows[5], rows[2], rows[3]]  # RCF, B83001, RCF, …

    with caplog.at_level("INFO", logger="mailboxes.importing"):
        out = run_command("import_mailboxes", write(tmp_path, "\n".join([header, *mixed]) + "\n"))

    assert "created 6" in out
    assert "copy into a work table" in caplog.text
    assert "write to the table in organisation order" in caplog.text
    assert (mailbox_schema(), column_defaults()) == (schema, defaults)
    by_id = list(Mailbox.objects.order_by("pk").values_list("organisation__code", "address"))
    assert by_id == sorted(by_id, key=lambda row: (row[0] != "RCF", row[1]))  # RCF made first
    assert len(by_id) == 6


@postgres_only
def test_a_first_load_with_a_repeated_address_is_reported_through_staging(
    organisations, bulk_loads, tmp_path, caplog
):
    schema = mailbox_schema()
    text = (DATA / "mailboxes.csv").read_text()
    text += "WARD7@rcf.nhs.net,ward7.again@rcf.nhs.uk,Ward 7 again,SharedMailbox,1,1,RCF\n"

    with caplog.at_level("INFO", logger="mailboxes.importing"):
        out, _ = refused_command("import_mailboxes", write(tmp_path, text))

    assert "Bulk load found a value twice" in caplog.text
    assert (
        'line 8, PrimarySmtpAddress "ward7@rcf.nhs.net": appears more than once in the file'
        " (first on line 4)" in out
    )
    assert "Refused: 1 bad row." in out
    assert Mailbox.objects.count() == 0
    assert mailbox_schema() == schema


@postgres_only
def test_a_first_load_with_a_bad_row_reports_every_problem_duplicates_too(
    organisations, bulk_loads, tmp_path
):
    text = HEADER + GOOD_ROW.replace(",10,", ",-10,") + GOOD_ROW + GOOD_ROW

    out, _ = refused_command("import_mailboxes", write(tmp_path, text))

    assert "Refused: 2 bad rows." in out
    assert 'line 2, ItemCount "-10": must not be negative' in out
    assert 'line 4, PrimarySmtpAddress "ann.smith@rcf.nhs.net": appears more than once' in out
    assert Mailbox.objects.count() == 0


@postgres_only
def test_a_first_load_skipping_bad_rows(organisations, bulk_loads, tmp_path):
    schema = mailbox_schema()
    text = HEADER + GOOD_ROW + GOOD_ROW.replace("ann.", "an.").replace(",RCF", ",NOPE")

    out = run_command("import_mailboxes", write(tmp_path, text), "--skip-bad-rows")

    assert "created 1, updated 0, unchanged 0, skipped 1" in out
    assert 'line 3, OrganisationCode "NOPE": is not the code of an organisation' in out
    assert mailbox_schema() == schema


@postgres_only
def test_a_large_load_into_a_table_with_rows_inserts_and_updates_without_merging(
    airedale, bulk_loads, tmp_path, caplog
):
    """Not empty, so not straight into the table: staged, then plain INSERT and UPDATE."""
    schema = mailbox_schema()
    booked = Mailbox.objects.get(address="user00001@rcf.nhs.net")
    mailboxes_transition(mailbox_ids=[booked.pk], to=MailboxStatus.BOOKED, actor="test")
    rows = [
        f"user{i:05d}@rcf.nhs.net,user{i:05d}@rcf.nhs.uk,Renamed {i},UserMailbox,1,1,RCF\n"
        for i in range(25)
    ]
    rows += [
        f"new{i}@rcf.nhs.net,new{i}@rcf.nhs.uk,New {i},SharedMailbox,2,2,RCF\n" for i in range(40)
    ]

    with caplog.at_level("INFO", logger="mailboxes.importing"):
        out = run_command("import_mailboxes", write(tmp_path, HEADER + "".join(rows)))

    assert "Rows read 65: created 40, updated 25, unchanged 0" in out
    assert "insert and update" in caplog.text
    assert mailbox_schema() == schema
    assert Mailbox.objects.count() == 70
    booked.refresh_from_db()
    assert (booked.display_name, booked.status) == ("Renamed 1", MailboxStatus.BOOKED)
    assert Mailbox.objects.get(address="new3@rcf.nhs.net").status == MailboxStatus.NOT_SCHEDULED


def test_it_reads_lines_given_as_text(organisations):
    report = mailboxes_import([HEADER, GOOD_ROW])

    assert (report.refused, report.created) == (False, 1)


def test_it_leaves_the_file_open_for_its_owner(organisations):
    with (DATA / "mailboxes.csv").open("rb") as stream:
        mailboxes_import(stream)
        assert not stream.closed
