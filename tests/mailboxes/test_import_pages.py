"""The imports pages: upload a file, watch its progress, read its report. Central team only.

Uploads are followed through: the request queues the task (the ORM broker keeps it in the
database), the test then runs it as the worker would, and reads the run's page.
"""

import re
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_q.models import OrmQ

from mailboxes import importing
from mailboxes.models import ImportKind, ImportRun, ImportStatus, Mailbox, Organisation
from mailboxes.tasks import run_import
from tests.conftest import client_for, make_organisation

DATA = Path(__file__).parent / "data"
HEADER = (
    "PrimarySmtpAddress,UserPrincipalName,DisplayName,RecipientTypeDetails,"
    "TotalItemSizeBytes,ItemCount,OrganisationCode\n"
)
GOOD_ROW = "ann.smith@rcf.nhs.net,ann.smith@rcf.nhs.uk,Ann Smith,UserMailbox,1024,10,RCF\n"
URL = "/mailboxes/imports/"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def upload_dir(settings, tmp_path):
    settings.PORTAL_IMPORT_DIR = str(tmp_path / "uploads")
    return tmp_path / "uploads"


@pytest.fixture
def organisations(db):
    return [
        make_organisation("RCF", "Airedale NHS Foundation Trust"),
        make_organisation("B83001", "Bradford Road Practice"),
    ]


def csv_file(name: str, text: str | bytes) -> SimpleUploadedFile:
    content = text.encode() if isinstance(text, str) else text
    return SimpleUploadedFile(name, content, content_type="text/csv")


def upload(client, file, kind=ImportKind.MAILBOXES, skip_bad_rows=False, **extra):
    data = {"kind": kind, "file": file} if file is not None else {"kind": kind}
    if skip_bad_rows:
        data["skip_bad_rows"] = "on"
    with_capture = extra.pop("capture", None)
    if with_capture is not None:
        with with_capture(execute=True):
            return client.post(URL, data, **extra)
    return client.post(URL, data, **extra)


def upload_and_run(client, django_capture_on_commit_callbacks, file, **options) -> ImportRun:
    """Upload through the page, check it queued one task, run that task as a worker would."""
    response = upload(client, file, capture=django_capture_on_commit_callbacks, **options)
    run = ImportRun.objects.get()
    assert response.status_code == 302
    assert response.url == f"{URL}{run.pk}/"
    task = OrmQ.objects.get().task
    assert (task["func"], task["args"]) == ("mailboxes.tasks.run_import", (run.pk,))
    run_import(run.pk)
    run.refresh_from_db()
    return run


def assert_nothing_queued(upload_dir: Path) -> None:
    assert not ImportRun.objects.exists()
    assert not OrmQ.objects.exists()
    assert not upload_dir.exists() or not any(upload_dir.iterdir())


# The page and the upload ------------------------------------------------------------------------


def test_the_central_team_sees_the_form_and_recent_imports(client, carol, alice):
    ImportRun.objects.create(
        kind=ImportKind.MAILBOXES,
        path="/srv/imports/abc/national-mailboxes.csv",
        status=ImportStatus.DONE,
        rows_read=2_100_000,
        created=2_100_000,
        created_by=alice,
    )

    response = client_for(client, carol).get(URL)

    assert response.status_code == 200
    page = response.content.decode()
    assert '<a class="nhsuk-header__navigation-link" href="/mailboxes/imports/"' in page
    assert 'type="file"' in page and 'data-module="nhsuk-file-upload"' in page
    assert 'name="kind" type="radio" value="organisations"' in page
    assert 'name="kind" type="radio" value="mailboxes"' in page
    assert 'name="skip_bad_rows" type="checkbox"' in page
    assert 'enctype="multipart/form-data"' in page
    assert "national-mailboxes.csv" in page
    assert "2,100,000" in page
    assert "nhsuk-tag--green" in page and ">Done<" in page
    assert "by Alice" in page


def test_the_list_takes_the_same_queries_for_many_imports(
    client, carol, alice, django_assert_num_queries
):
    client_for(client, carol).get(URL)  # sessions, role: warm
    ImportRun.objects.create(kind=ImportKind.MAILBOXES, path="/x/a/one.csv", created_by=alice)
    with CaptureQueriesContext(connection) as one:
        client.get(URL)
    for i in range(10):
        ImportRun.objects.create(kind=ImportKind.MAILBOXES, path=f"/x/{i}/f.csv", created_by=carol)
    with django_assert_num_queries(len(one.captured_queries)):
        client.get(URL)


def test_an_upload_is_queued_run_and_reported(
    client, carol, organisations, upload_dir, django_capture_on_commit_callbacks
):
    file = csv_file("mailboxes.csv", (DATA / "mailboxes.csv").read_bytes())

    run = upload_and_run(client_for(client, carol), django_capture_on_commit_callbacks, file)

    assert (run.kind, run.created_by, run.skip_bad_rows) == (ImportKind.MAILBOXES, carol, False)
    assert (run.status, run.rows_read, run.created) == (ImportStatus.DONE, 6, 6)
    assert Path(run.path).name == "mailboxes.csv"
    assert Path(run.path).parent.parent == upload_dir
    assert not Path(run.path).exists()  # deleted once imported: it holds people's names
    assert Mailbox.objects.count() == 6

    page = client.get(f"{URL}{run.pk}/").content.decode()
    assert "Imported: 6 created, 0 updated, 0 unchanged." in page
    assert "nhsuk-notification-banner--success" in page
    assert "hx-trigger" not in page  # finished: nothing to poll
    assert "mailboxes.csv" in page
    history = re.findall(r"<strong>(\w+)</strong>, ([^.]+)\. ([^<]*)</li>", page)
    assert [(status, who) for status, who, _ in history] == [
        ("Queued", "Carol"),
        ("Running", "Import worker"),
        ("Done", "Import worker"),
    ]
    assert history[2][2].startswith("Rows read 6: created 6")


def test_a_large_upload_spooled_to_disk_is_moved_not_copied(
    client, carol, organisations, upload_dir, settings, django_capture_on_commit_callbacks
):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 100  # Django spools anything larger to a temp file
    file = csv_file("mailboxes.csv", (DATA / "mailboxes.csv").read_bytes())

    run = upload_and_run(client_for(client, carol), django_capture_on_commit_callbacks, file)

    assert (run.status, run.created) == (ImportStatus.DONE, 6)
    assert Path(run.path).parent.parent == upload_dir
    assert not any(upload_dir.iterdir())  # its folder went with it


def test_organisations_then_mailboxes(
    client, carol, upload_dir, django_capture_on_commit_callbacks
):
    signed_in = client_for(client, carol)
    organisations = csv_file("orgs.csv", (DATA / "organisations.csv").read_bytes())
    run = upload_and_run(
        signed_in, django_capture_on_commit_callbacks, organisations, kind="organisations"
    )
    assert (run.status, run.created) == (ImportStatus.DONE, 6)
    assert Organisation.objects.count() == 6

    ImportRun.objects.all().delete()
    OrmQ.objects.all().delete()
    mailboxes = csv_file("mailboxes.csv", (DATA / "mailboxes.csv").read_bytes())
    run = upload_and_run(signed_in, django_capture_on_commit_callbacks, mailboxes)
    assert (run.status, run.created) == (ImportStatus.DONE, 6)


def test_a_file_with_bad_rows_is_refused_and_its_page_lists_each_problem(
    client, carol, organisations, django_capture_on_commit_callbacks
):
    text = HEADER + GOOD_ROW + "bob@rcf.nhs.net,bob@rcf.nhs.uk,Bob,LinkedMailbox,-5,1,NOPE\n"

    run = upload_and_run(
        client_for(client, carol), django_capture_on_commit_callbacks, csv_file("bad.csv", text)
    )

    assert (run.status, run.bad_rows, run.problem_count) == (ImportStatus.REFUSED, 1, 3)
    assert not Mailbox.objects.exists()
    page = client.get(f"{URL}{run.pk}/").content.decode()
    assert "The file was refused and nothing was changed: it has 1 bad row." in page
    assert "Problems (3)" in page
    for column, value, reason in [
        ("RecipientTypeDetails", "LinkedMailbox", "is not one of UserMailbox"),
        ("TotalItemSizeBytes", "-5", "must not be negative"),
        ("OrganisationCode", "NOPE", "is not the code of an organisation"),
    ]:
        assert f'<td class="nhsuk-table__cell">{column}</td>' in page
        assert f">{value}</td>" in page
        assert reason in page
    assert page.count('<td class="nhsuk-table__cell app-numeric">3</td>') == 3  # the line


def test_skipping_bad_rows_imports_the_rest_and_lists_what_was_skipped(
    client, carol, organisations, django_capture_on_commit_callbacks
):
    text = HEADER + GOOD_ROW + GOOD_ROW.replace("ann.", "an.").replace(",10,", ",ten,")

    run = upload_and_run(
        client_for(client, carol),
        django_capture_on_commit_callbacks,
        csv_file("skip.csv", text),
        skip_bad_rows=True,
    )

    assert (run.status, run.skip_bad_rows, run.created, run.skipped) == (
        ImportStatus.DONE,
        True,
        1,
        1,
    )
    page = client.get(f"{URL}{run.pk}/").content.decode()
    assert "Imported: 1 created" in page
    assert "1 bad row was skipped: it is listed below." in page
    assert "is not a whole number" in page


def test_a_whole_file_refusal_is_explained(
    client, carol, organisations, django_capture_on_commit_callbacks
):
    file = csv_file("latin1.csv", (DATA / "mailboxes_windows1252.csv").read_bytes())

    run = upload_and_run(client_for(client, carol), django_capture_on_commit_callbacks, file)

    assert run.status == ImportStatus.REFUSED
    page = client.get(f"{URL}{run.pk}/").content.decode()
    assert "The file was refused and nothing was changed: the file is not UTF-8 text" in page


# Progress, polled by htmx ------------------------------------------------------------------------


def test_the_run_page_polls_while_the_import_waits_and_runs(client, carol):
    run = ImportRun.objects.create(kind=ImportKind.MAILBOXES, path="/x/y/national.csv")
    signed_in = client_for(client, carol)

    page = signed_in.get(f"{URL}{run.pk}/").content.decode()
    assert f'hx-get="{URL}{run.pk}/" hx-trigger="every 2s"' in page
    assert "Waiting for a worker" in page
    assert '<progress class="app-progress"' in page

    ImportRun.objects.filter(pk=run.pk).update(
        status=ImportStatus.RUNNING, rows_total=2_100_000, rows_read=525_000
    )
    partial = signed_in.get(f"{URL}{run.pk}/", headers={"HX-Request": "true"})
    assert partial.status_code == 200
    body = partial.content.decode()
    assert "<html" not in body
    assert f'<label class="nhsuk-label" for="import-{run.pk}-progress">Rows read</label>' in body
    assert 'max="2100000" value="525000"' in body
    assert "525,000 of about 2,100,000 rows read (25%)." in body

    ImportRun.objects.filter(pk=run.pk).update(rows_read=2_100_000)
    body = signed_in.get(f"{URL}{run.pk}/", headers={"HX-Request": "true"}).content.decode()
    assert "All 2,100,000 rows read: checking them across the file and saving them." in body


def test_the_last_poll_brings_the_report_and_stops_polling(
    client, carol, organisations, django_capture_on_commit_callbacks
):
    signed_in = client_for(client, carol)
    file = csv_file("mailboxes.csv", (DATA / "mailboxes.csv").read_bytes())
    with django_capture_on_commit_callbacks(execute=True):
        upload(signed_in, file)
    run = ImportRun.objects.get()
    assert signed_in.get(f"{URL}{run.pk}/", headers={"HX-Request": "true"}).status_code == 200

    run_import(run.pk)

    last = signed_in.get(f"{URL}{run.pk}/", headers={"HX-Request": "true"})
    assert last.status_code == 286
    body = last.content.decode()
    assert 'role="alert"' in body
    assert "Imported: 6 created" in body


def test_the_report_pages_its_problems_and_says_how_many_are_not_stored(client, carol):
    problems = [
        {"line": n, "column": "ItemCount", "value": "x", "reason": "is not a whole number"}
        for n in range(2, 252)
    ]
    run = ImportRun.objects.create(
        kind=ImportKind.MAILBOXES,
        path="/x/y/big.csv",
        status=ImportStatus.REFUSED,
        bad_rows=5000,
        problem_count=5000,
        problems=problems,
    )
    signed_in = client_for(client, carol)

    first = signed_in.get(f"{URL}{run.pk}/").content.decode()
    second = signed_in.get(f"{URL}{run.pk}/?page=2").content.decode()

    assert "Problems (5,000)" in first
    assert "The first 250 problems, in line order, are listed; 4,750 more are not." in first
    assert first.count("is not a whole number") == 100
    assert '<td class="nhsuk-table__cell app-numeric">101</td>' in first
    assert '<td class="nhsuk-table__cell app-numeric">102</td>' in second
    assert 'aria-label="Pagination"' in first


# Bad uploads: a clear error, nothing queued --------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "message"),
    [
        (None, "Select a CSV file"),
        (csv_file("empty.csv", b""), "The selected file is empty"),
        (csv_file("mailboxes.txt", HEADER + GOOD_ROW), "The selected file must be a CSV"),
        (
            csv_file("mailboxes.csv", b"PK\x03\x04" + b"\x00" * 100),
            "The selected file is an Excel workbook: save it as &#x27;CSV UTF-8&#x27;",
        ),
        (csv_file("photo.csv", b"\x89PNG\r\n\x1a\n\x00\x00"), "The selected file must be a CSV"),
    ],
    ids=["no file", "empty", "not .csv", "spreadsheet", "binary"],
)
def test_a_bad_upload_is_refused_with_a_clear_error(client, carol, upload_dir, file, message):
    response = upload(client_for(client, carol), file)

    assert response.status_code == 400
    page = response.content.decode()
    assert "There is a problem" in page
    assert f'<a href="#id_file">{message}' in page
    assert '<span class="nhsuk-error-message" id="id_file-error">' in page
    assert "<title>Error: Imports" in page
    assert_nothing_queued(upload_dir)


def test_an_upload_must_say_what_the_file_holds(client, carol, upload_dir):
    response = upload(client_for(client, carol), csv_file("m.csv", HEADER + GOOD_ROW), kind="")

    assert response.status_code == 400
    assert '<a href="#id_kind_0">Select what the file holds</a>' in response.content.decode()
    assert_nothing_queued(upload_dir)


def test_a_file_over_the_limit_is_refused(client, carol, upload_dir, monkeypatch):
    monkeypatch.setattr(importing, "MAX_UPLOAD_BYTES", 100)

    response = upload(client_for(client, carol), csv_file("big.csv", HEADER + GOOD_ROW * 2))

    assert response.status_code == 400
    assert "The selected file must be smaller than 1 GB" in response.content.decode()
    assert_nothing_queued(upload_dir)


def test_a_request_over_the_limit_is_refused_before_its_body_is_read(
    client, carol, upload_dir, monkeypatch
):
    monkeypatch.setattr(importing, "MAX_UPLOAD_BYTES", 100)
    signed_in = client_for(client, carol)
    big = csv_file("big.csv", HEADER + GOOD_ROW * 2000)  # about 160 KB with the form

    response = upload(signed_in, big)

    assert response.status_code == 400
    page = response.content.decode()
    assert '<a href="#id_file">The selected file must be smaller than 1 GB</a>' in page
    assert_nothing_queued(upload_dir)


def test_an_upload_needs_a_csrf_token(carol, organisations, upload_dir):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(carol)

    response = upload(client, csv_file("mailboxes.csv", HEADER + GOOD_ROW))

    assert response.status_code == 403
    assert_nothing_queued(upload_dir)


# Who may ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["alice", "dave", "eve"])
def test_only_the_central_team_may_see_or_upload(client, request, user, upload_dir):
    run = ImportRun.objects.create(kind=ImportKind.MAILBOXES, path="/x/y/national.csv")
    signed_in = client_for(client, request.getfixturevalue(user))

    assert signed_in.get(URL).status_code == 403
    assert signed_in.get(f"{URL}{run.pk}/").status_code == 403
    assert signed_in.get(f"{URL}{run.pk}/", headers={"HX-Request": "true"}).status_code == 403
    assert upload(signed_in, csv_file("m.csv", HEADER + GOOD_ROW)).status_code == 403
    assert ImportRun.objects.count() == 1
    assert not OrmQ.objects.exists()
    assert not upload_dir.exists()


def test_signed_out_visitors_are_sent_to_sign_in(client):
    response = client.get(URL)

    assert response.status_code == 302
    assert response.url.startswith("/sign-in/")


def test_only_the_central_team_has_the_imports_link(client, alice):
    page = client_for(client, alice).get("/mailboxes/").content.decode()

    assert "/mailboxes/imports/" not in page


def test_an_unknown_run_is_not_found(client, carol):
    assert client_for(client, carol).get(f"{URL}999/").status_code == 404
