"""POST /api/imports/ and GET /api/imports/{id}/: bulk imports through the API, central team only.

Each upload is followed through: the request queues the task, the test runs it as the worker
would, and reads the run back.
"""

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django_q.models import OrmQ

from mailboxes import importing
from mailboxes.models import ImportKind, ImportRun, ImportStatus, Mailbox
from mailboxes.tasks import run_import
from tests.api.conftest import signed_in
from tests.conftest import make_organisation

DATA = Path(__file__).parent.parent / "mailboxes" / "data"
HEADER = (
    "PrimarySmtpAddress,UserPrincipalName,DisplayName,RecipientTypeDetails,"
    "TotalItemSizeBytes,ItemCount,OrganisationCode\n"
)
GOOD_ROW = "ann.smith@rcf.nhs.net,ann.smith@rcf.nhs.uk,Ann Smith,UserMailbox,1024,10,RCF\n"
URL = "/api/imports/"
FIELDS = {
    "id",
    "url",
    "page",
    "kind",
    "file_name",
    "skip_bad_rows",
    "status",
    "rows_total",
    "rows_read",
    "percent_done",
    "created",
    "updated",
    "unchanged",
    "skipped",
    "bad_rows",
    "problem_count",
    "problems",
    "error",
    "created_by",
    "created_at",
    "started_at",
    "finished_at",
}


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


def csv_file(name: str, content: str | bytes) -> SimpleUploadedFile:
    data = content.encode() if isinstance(content, str) else content
    return SimpleUploadedFile(name, data, content_type="text/csv")


def post_upload(client, **fields):
    return client.post(URL, fields)  # multipart, as the test client sends a dict with a file


def upload_and_run(client, capture, file, **fields) -> dict:
    with capture(execute=True):
        response = post_upload(client, kind=ImportKind.MAILBOXES, file=file, **fields)
    assert response.status_code == 202, response.content
    body = response.json()
    task = OrmQ.objects.get().task
    assert (task["func"], task["args"]) == ("mailboxes.tasks.run_import", (body["id"],))
    run_import(body["id"])
    fetched = client.get(f"{URL}{body['id']}/")
    assert fetched.status_code == 200
    return fetched.json()


def assert_nothing_queued(upload_dir: Path) -> None:
    assert not ImportRun.objects.exists()
    assert not OrmQ.objects.exists()
    assert not upload_dir.exists() or not any(upload_dir.iterdir())


def test_an_upload_is_accepted_with_where_to_follow_it(
    client, carol, organisations, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_upload(
            signed_in(client, carol),
            kind="mailboxes",
            file=csv_file("national.csv", HEADER + GOOD_ROW),
            skip_bad_rows="true",
        )

    assert response.status_code == 202
    body = response.json()
    run = ImportRun.objects.get()
    assert set(body) == FIELDS
    assert body["id"] == run.pk
    assert body["url"] == f"http://testserver/api/imports/{run.pk}/"
    assert response["Location"] == body["url"]
    assert body["page"] == f"http://testserver/mailboxes/imports/{run.pk}/"
    assert (body["kind"], body["file_name"], body["status"]) == (
        "mailboxes",
        "national.csv",
        "queued",
    )
    assert (body["skip_bad_rows"], body["created_by"]) == (True, "carol")
    assert OrmQ.objects.count() == 1


def test_the_run_reports_its_counts_when_done(
    client, carol, organisations, django_capture_on_commit_callbacks
):
    body = upload_and_run(
        signed_in(client, carol),
        django_capture_on_commit_callbacks,
        csv_file("mailboxes.csv", (DATA / "mailboxes.csv").read_bytes()),
    )

    assert body["status"] == "done"
    assert (body["rows_total"], body["rows_read"], body["percent_done"]) == (6, 6, 100)
    assert (body["created"], body["updated"], body["unchanged"], body["skipped"]) == (6, 0, 0, 0)
    assert (body["problem_count"], body["problems"], body["error"]) == (0, [], "")
    assert body["started_at"] and body["finished_at"]
    assert Mailbox.objects.count() == 6


def test_a_refused_run_lists_every_problem(
    client, carol, organisations, django_capture_on_commit_callbacks
):
    text = HEADER + GOOD_ROW + GOOD_ROW.replace("ann.", "an.").replace("UserMailbox", "Linked")
    text += GOOD_ROW  # line 4: the same address again

    body = upload_and_run(
        signed_in(client, carol), django_capture_on_commit_callbacks, csv_file("bad.csv", text)
    )

    assert (body["status"], body["bad_rows"], body["problem_count"]) == ("refused", 2, 3)
    assert body["problems"] == [
        {
            "line": 3,
            "column": "RecipientTypeDetails",
            "value": "Linked",
            "reason": "is not one of UserMailbox, SharedMailbox, RoomMailbox, EquipmentMailbox",
        },
        {
            "line": 4,
            "column": "PrimarySmtpAddress",
            "value": "ann.smith@rcf.nhs.net",
            "reason": "appears more than once in the file (first on line 2)",
        },
        {
            "line": 4,
            "column": "UserPrincipalName",
            "value": "ann.smith@rcf.nhs.uk",
            "reason": "appears more than once in the file (first on line 2)",
        },
    ]
    assert body["created"] == 0
    assert not Mailbox.objects.exists()


def test_skipping_bad_rows(client, carol, organisations, django_capture_on_commit_callbacks):
    text = HEADER + GOOD_ROW + GOOD_ROW.replace("ann.", "an.").replace(",1024,", ",-1,")

    body = upload_and_run(
        signed_in(client, carol),
        django_capture_on_commit_callbacks,
        csv_file("skip.csv", text),
        skip_bad_rows="true",
    )

    assert (body["status"], body["created"], body["skipped"]) == ("done", 1, 1)
    assert body["problems"][0]["reason"] == "must not be negative"


def test_a_whole_file_refusal_says_why(
    client, carol, organisations, django_capture_on_commit_callbacks
):
    body = upload_and_run(
        signed_in(client, carol),
        django_capture_on_commit_callbacks,
        csv_file("only-header.csv", HEADER),
    )

    assert body["status"] == "refused"
    assert body["error"] == "the file has no data rows, only a header"


def test_progress_is_given_while_the_import_runs(client, carol):
    run = ImportRun.objects.create(
        kind=ImportKind.MAILBOXES,
        path="/x/y/national.csv",
        status=ImportStatus.RUNNING,
        rows_total=2_100_000,
        rows_read=1_050_000,
    )

    body = signed_in(client, carol).get(f"{URL}{run.pk}/").json()

    assert (body["status"], body["rows_read"], body["percent_done"]) == ("running", 1_050_000, 50)


def test_an_unknown_run_is_not_found(client, carol):
    assert signed_in(client, carol).get(f"{URL}999/").status_code == 404


# Bad input: a clear error, nothing queued ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"kind": "mailboxes"}, "file", "No file was submitted."),
        ({"file": "x"}, "kind", "This field is required."),
        ({"kind": "wards", "file": "x"}, "kind", '"wards" is not a valid choice.'),
        ({"kind": "mailboxes", "file": b""}, "file", "The selected file is empty"),
        ({"kind": "mailboxes", "file": "name.xlsx"}, "file", "The selected file must be a CSV"),
        (
            {"kind": "mailboxes", "file": b"PK\x03\x04\x00\x00"},
            "file",
            "The selected file is an Excel workbook: save it as 'CSV UTF-8' and upload that",
        ),
    ],
    ids=["no file", "no kind", "unknown kind", "empty", "not .csv", "spreadsheet"],
)
def test_a_bad_upload_is_refused(client, carol, upload_dir, fields, field, message):
    fields = dict(fields)
    if fields.get("file") == "x":
        fields["file"] = csv_file("m.csv", HEADER + GOOD_ROW)
    elif fields.get("file") == "name.xlsx":
        fields["file"] = csv_file("m.xlsx", HEADER + GOOD_ROW)
    elif isinstance(fields.get("file"), bytes):
        fields["file"] = csv_file("m.csv", fields["file"])

    response = post_upload(signed_in(client, carol), **fields)

    assert response.status_code == 400, response.content
    assert response.json()[field] == [message]
    assert_nothing_queued(upload_dir)


def test_a_file_over_the_limit_is_refused(client, carol, upload_dir, monkeypatch):
    monkeypatch.setattr(importing, "MAX_UPLOAD_BYTES", 100)

    response = post_upload(
        signed_in(client, carol), kind="mailboxes", file=csv_file("m.csv", HEADER + GOOD_ROW * 2)
    )

    assert response.status_code == 400
    assert response.json() == {"file": ["The selected file must be smaller than 1 GB"]}
    assert_nothing_queued(upload_dir)


def test_a_request_over_the_limit_is_refused_before_its_body_is_read(
    client, carol, upload_dir, monkeypatch
):
    monkeypatch.setattr(importing, "MAX_UPLOAD_BYTES", 100)

    response = post_upload(
        signed_in(client, carol),
        kind="mailboxes",
        file=csv_file("m.csv", HEADER + GOOD_ROW * 2000),
    )

    assert response.status_code == 413
    assert response.json() == {"detail": "The selected file must be smaller than 1 GB"}
    assert_nothing_queued(upload_dir)


@pytest.mark.parametrize("user", [None, "alice", "dave", "eve"])
def test_a_request_over_the_limit_from_anyone_else_is_refused_as_theirs_to_make(
    client, db, request, user, upload_dir, monkeypatch
):
    """Refused before its body is read as well, but for who is asking, not for its size."""
    monkeypatch.setattr(importing, "MAX_UPLOAD_BYTES", 100)
    client = signed_in(client, request.getfixturevalue(user) if user else None)

    response = post_upload(
        client, kind="mailboxes", file=csv_file("m.csv", HEADER + GOOD_ROW * 2000)
    )

    assert response.status_code == 403
    assert "1 GB" not in response.json()["detail"]
    assert_nothing_queued(upload_dir)


# Who may ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", [None, "alice", "dave", "eve"])
def test_only_the_central_team_may_upload_or_read_imports(
    client, request, user, organisations, upload_dir
):
    run = ImportRun.objects.create(kind=ImportKind.MAILBOXES, path="/x/y/national.csv")
    client = signed_in(client, request.getfixturevalue(user) if user else None)

    upload = post_upload(client, kind="mailboxes", file=csv_file("m.csv", HEADER + GOOD_ROW))
    read = client.get(f"{URL}{run.pk}/")

    assert (upload.status_code, read.status_code) == (403, 403)
    assert "detail" in upload.json()
    assert list(ImportRun.objects.values_list("pk", flat=True)) == [run.pk]
    assert not OrmQ.objects.exists()
    assert not upload_dir.exists()


def test_an_upload_needs_a_csrf_token(carol, organisations, upload_dir):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(carol)

    response = post_upload(client, kind="mailboxes", file=csv_file("m.csv", HEADER + GOOD_ROW))

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert_nothing_queued(upload_dir)
