"""The Exchange Online backend, against the local stand-in for Exchange Online and Entra ID.

The stand-in (standins/exchange_online.py) is a real HTTPS server on loopback; the backend
signs in with the real msal library, which discovers the stand-in's OpenID configuration and
asks its token endpoint for tokens. Nothing is patched. The stand-in's clock runs fast
(`time_scale`), and its faults (429 storms, the concurrency refusal, expired tokens, the
100-batch limit) are switched on per test. What is known of the real service, and what the
stand-in makes up, is in the docstrings of both modules.
"""

import base64
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from django.db.models import Count

from mailboxes.models import Mailbox, MailboxStatus
from standins.exchange_online import FAILURE_TEXT, start_standin
from tests.conftest import assert_migration_histories, make_approved_wave, start_wave_now
from waves.backends import (
    EXCHANGE_USER_STATUS,
    BackendError,
    get_backend,
    portal_status,
)
from waves.backends.exchange_online import ExchangeError, ExchangeOnlineBackend
from waves.models import (
    WAVE_ACTIVE,
    CohortMailbox,
    MigrationBatch,
    MigrationBatchStatus,
    WaveStatus,
)
from waves.transfers import batches_remove_finished, wave_advance

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent.parent
ANCHOR = "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@standin-nhs.onmicrosoft.com"
# Stand-in seconds per real second: a user queues in 0.03 s, syncs in 0.6 s, completes in 0.12 s.
FAST = 1000.0


@pytest.fixture
def make_standin():
    """Start stand-ins on free loopback ports; stop them after the test."""
    servers = []

    def make(**options):
        options.setdefault("time_scale", FAST)
        _, server = start_standin(**options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def backend_for(server, **overrides) -> ExchangeOnlineBackend:
    return ExchangeOnlineBackend(**server.portal_settings(backoff_seconds=0.01, **overrides))


def addresses(count: int, domain: str = "rcf.nhs.net") -> list[str]:
    return [f"user{i:05d}@{domain}" for i in range(count)]


def create(backend, name="w1-pilot-001", users=None, *, start_after=None, complete_after=None):
    now = datetime.now(UTC)
    return backend.create_batch(
        name=name,
        addresses=addresses(3) if users is None else users,
        start_after=start_after or now - timedelta(hours=1),
        complete_after=complete_after or now + timedelta(days=1),
    )


def statuses(backend, batch="w1-pilot-001") -> dict[str, str]:
    return {u.address: u.status for u in backend.user_statuses(batch)}


def wait_for(backend, wanted: set[str], batch="w1-pilot-001", seconds=10.0) -> list:
    deadline = time.monotonic() + seconds
    while True:
        progress = list(backend.user_statuses(batch))
        if {u.status for u in progress} <= wanted:
            return progress
        if time.monotonic() > deadline:
            raise AssertionError(f"still {[(u.address, u.status) for u in progress]}")
        time.sleep(0.05)


# The lifecycle, and what goes over the wire.


def test_a_batch_is_created_started_polled_and_completed(make_standin):
    standin = make_standin()
    backend = backend_for(standin)
    complete_after = datetime.now(UTC) + timedelta(days=1)

    assert create(backend, complete_after=complete_after) == "w1-pilot-001"
    backend.start_batch("w1-pilot-001")
    synced = wait_for(backend, {"Synced"})
    backend.complete_batch("w1-pilot-001")
    completed = wait_for(backend, {"Completed"})

    assert [u.address for u in completed] == addresses(3)
    assert all(u.bytes_transferred > 0 and u.items_transferred > 0 for u in completed)
    assert [u.bytes_transferred for u in completed] == [u.bytes_transferred for u in synced]
    (new,) = standin.standin.cmdlets_called("New-MigrationBatch")
    assert base64.b64decode(new.parameters["CSVData"]).decode() == (
        "EmailAddress\r\nuser00000@rcf.nhs.net\r\nuser00001@rcf.nhs.net\r\nuser00002@rcf.nhs.net\r\n"
    )
    assert new.parameters["SourceEndpoint"] == "Hybrid Migration Endpoint - EWS (Default Web Site)"
    assert new.parameters["TargetDeliveryDomain"] == "standin-nhs.mail.onmicrosoft.com"
    assert datetime.fromisoformat(new.parameters["CompleteAfter"]) == complete_after.replace(
        microsecond=0
    )
    assert "StartAfter" not in new.parameters  # already past: the batch starts at once
    assert "AutoStart" not in new.parameters  # the engine starts it
    for call in standin.standin.cmdlets_called():
        assert call.headers["x-anchormailbox"] == ANCHOR
        assert call.headers["prefer"] == "odata.maxpagesize=1000"
        assert uuid.UUID(call.headers["client-request-id"])
    assert standin.standin.tokens_issued == 1  # msal's cache served every later call


def test_start_after_and_complete_after_go_in_uk_time_with_their_offset(make_standin):
    standin = make_standin()
    backend = backend_for(standin)

    create(
        backend,
        start_after=datetime(2030, 1, 15, 18, 0, tzinfo=UTC),
        complete_after=datetime(2030, 7, 1, 6, 30, tzinfo=UTC),
    )
    backend.start_batch("w1-pilot-001")
    time.sleep(0.1)

    (new,) = standin.standin.cmdlets_called("New-MigrationBatch")
    assert new.parameters["StartAfter"] == "2030-01-15T18:00:00+00:00"  # GMT
    assert new.parameters["CompleteAfter"] == "2030-07-01T07:30:00+01:00"  # BST
    assert set(statuses(backend).values()) == {"Queued"}  # waiting for StartAfter


def test_users_are_read_page_by_page(make_standin):
    standin = make_standin(page_size=2)
    backend = backend_for(standin)
    create(backend, users=addresses(7))

    assert list(statuses(backend)) == addresses(7)

    pages = standin.standin.cmdlets_called("Get-MigrationUser")
    assert len(pages) == 4
    assert [page.next_page for page in pages] == [False, True, True, True]


def test_a_stopped_batch_resumes_and_a_failed_user_is_retried_by_starting_again(make_standin):
    standin = make_standin(failures={"user00001@rcf.nhs.net": 1})
    backend = backend_for(standin)
    create(backend)
    backend.start_batch("w1-pilot-001")

    progress = wait_for(backend, {"Synced", "Failed"})
    failed = {u.address: u.error for u in progress if u.status == "Failed"}
    assert failed == {"user00001@rcf.nhs.net": FAILURE_TEXT}  # the full text, from statistics

    backend.start_batch("w1-pilot-001")
    time.sleep(0.1)
    backend.stop_batch("w1-pilot-001")
    assert statuses(backend)["user00001@rcf.nhs.net"] == "Stopped"
    backend.start_batch("w1-pilot-001")
    wait_for(backend, {"Synced"})


def test_statistics_are_read_for_a_bounded_number_of_users_per_poll(make_standin):
    standin = make_standin()
    backend = backend_for(standin, statistics_per_poll=3)
    create(backend, users=addresses(7))
    backend.start_batch("w1-pilot-001")
    wait_for(backend, {"Synced"})

    before = len(standin.standin.cmdlets_called("Get-MigrationUserStatistics"))
    progress = list(backend.user_statuses("w1-pilot-001"))
    assert len(standin.standin.cmdlets_called("Get-MigrationUserStatistics")) - before == 3
    assert sum(u.bytes_transferred > 0 for u in progress) == 3  # the others: what we hold (0)
    assert all(u.items_transferred > 0 for u in progress)  # from Get-MigrationUser itself


def test_every_exchange_user_status_is_read_and_mapped(make_standin):
    standin = make_standin()
    backend = backend_for(standin)
    users = {f"{status.lower()}@rcf.nhs.net": status for status in EXCHANGE_USER_STATUS}
    create(backend, users=list(users))
    for address, status in users.items():
        error = "Stalled. Details follow." if status in {"Failed", "Corrupted"} else ""
        standin.standin.set_user_status(address, status, error)

    progress = {u.address: u for u in backend.user_statuses("w1-pilot-001")}

    assert {address: u.status for address, u in progress.items()} == users
    for address, status in users.items():
        assert portal_status(progress[address].status) == EXCHANGE_USER_STATUS[status]
    assert progress["failed@rcf.nhs.net"].error == "Stalled. Details follow."
    assert progress["incrementalfailed@rcf.nhs.net"].error == (
        "Exchange Online reports IncrementalFailed without a reason."
    )


# Idempotency and Exchange's refusals.


def test_creating_a_batch_again_is_success_and_leaves_one_batch(make_standin):
    standin = make_standin()
    backend = backend_for(standin)

    assert create(backend) == "w1-pilot-001"
    assert create(backend) == "w1-pilot-001"

    assert list(standin.standin.batches) == ["w1-pilot-001"]
    assert len(standin.standin.cmdlets_called("New-MigrationBatch")) == 2
    assert len(standin.standin.cmdlets_called("Get-MigrationBatch")) == 1  # confirmed by name


def test_a_user_already_in_another_batch_is_not_success(make_standin):
    standin = make_standin()
    backend = backend_for(standin)
    create(backend, "w1-pilot-001")

    with pytest.raises(BackendError, match="already exists in migration batch 'w1-pilot-001'"):
        create(backend, "w1-pilot-002", users=addresses(1))
    assert list(standin.standin.batches) == ["w1-pilot-001"]


def test_the_hundred_batch_limit_is_explained(make_standin):
    backend = backend_for(make_standin(max_batches=2))
    create(backend, "b1", addresses(1, "a.nhs.net"))
    create(backend, "b2", addresses(1, "b.nhs.net"))

    with pytest.raises(BackendError) as refused:
        create(backend, "b3", addresses(1, "c.nhs.net"))
    assert "The maximum number of migration batches is already running" in str(refused.value)
    assert "PORTAL_WAVE_MAX_BATCHES" in str(refused.value)


def test_an_error_body_becomes_one_sentence(make_standin):
    backend = backend_for(make_standin())

    with pytest.raises(ExchangeError) as refused:
        backend.start_batch("w9-missing-001")
    assert str(refused.value).startswith(
        "Exchange Online refused Start-MigrationBatch: The operation couldn't be performed "
        "because object 'w9-missing-001' couldn't be found"
    )
    assert refused.value.exception_type.endswith("ManagementObjectNotFoundException")
    assert refused.value.not_found


def test_an_unknown_cmdlet_is_refused_with_advice(make_standin):
    backend = backend_for(make_standin())

    with pytest.raises(ExchangeError, match="Check the Exchange role") as refused:
        backend._invoke("Get-SomethingElse", {})
    assert refused.value.status == 403


def test_a_user_is_removed_from_its_own_batch_only(make_standin):
    standin = make_standin()
    backend = backend_for(standin)
    create(backend, "w1-pilot-001")
    create(backend, "w1-pilot-002", addresses(2, "b83001.nhs.net"))

    backend.remove_user("w1-pilot-001", "user00001@rcf.nhs.net")
    with pytest.raises(BackendError, match="is in w1-pilot-001, not in the migration batch"):
        backend.remove_user("w1-pilot-002", "user00002@rcf.nhs.net")
    with pytest.raises(BackendError, match="couldn't be found"):
        backend.remove_user("w1-pilot-001", "nobody@rcf.nhs.net")

    assert list(statuses(backend)) == ["user00000@rcf.nhs.net", "user00002@rcf.nhs.net"]
    (removal,) = standin.standin.cmdlets_called("Remove-MigrationUser")
    assert removal.parameters == {"Identity": "user00001@rcf.nhs.net", "Confirm": False}


def test_a_completed_batch_is_removed_and_removing_it_again_is_success(make_standin):
    standin = make_standin()
    backend = backend_for(standin)
    create(backend)
    backend.start_batch("w1-pilot-001")
    wait_for(backend, {"Synced"})
    backend.complete_batch("w1-pilot-001")
    wait_for(backend, {"Completed"})

    backend.remove_batch("w1-pilot-001")
    assert backend.batch_names() == []
    backend.remove_batch("w1-pilot-001")  # already gone: a worker that stopped, run again

    first, again = standin.standin.cmdlets_called("Remove-MigrationBatch")
    assert first.parameters == again.parameters == {"Identity": "w1-pilot-001", "Confirm": False}
    create(backend, "w2-weeknight-001")  # its users may go in a new batch now
    assert backend.batch_names() == ["w2-weeknight-001"]


def test_a_syncing_batch_is_not_removed(make_standin):
    backend = backend_for(make_standin(time_scale=1.0))
    create(backend)
    backend.start_batch("w1-pilot-001")  # its users queue for 30 s: the batch is Syncing

    with pytest.raises(BackendError, match="can't be removed while it is Syncing"):
        backend.remove_batch("w1-pilot-001")
    assert backend.batch_names() == ["w1-pilot-001"]


# Throttling, parallelism and failures on the way.


def test_a_429_storm_is_waited_out(make_standin):
    standin = make_standin(retry_after=0)
    backend = backend_for(standin)
    create(backend)
    standin.standin.throttle_next(5)

    backend.start_batch("w1-pilot-001")

    assert standin.standin.throttled == 5
    assert len(standin.standin.cmdlets_called("Start-MigrationBatch")) == 6


def test_retry_after_is_honoured_within_a_bound(make_standin):
    standin = make_standin(retry_after=1)
    backend = backend_for(standin)
    create(backend)

    standin.standin.throttle_next(1)
    started = time.monotonic()
    backend.start_batch("w1-pilot-001")
    assert time.monotonic() - started >= 1.0

    impatient = backend_for(standin, max_throttle_wait=0.5)
    standin.standin.throttle_next(1)
    with pytest.raises(BackendError, match="Exchange Online is throttling the portal"):
        impatient.start_batch("w1-pilot-001")


def test_the_tenant_concurrency_refusal_is_waited_out(make_standin):
    standin = make_standin(max_concurrent=1, latency=0.05)
    backend = backend_for(standin, max_parallel_calls=4)
    create(backend)
    errors = run_in_threads(6, lambda: backend.start_batch("w1-pilot-001"))

    assert errors == []
    assert standin.standin.refused_concurrency > 0


def test_parallel_calls_stay_within_the_limit(make_standin):
    standin = make_standin(latency=0.05)
    backend = backend_for(standin, max_parallel_calls=2)
    create(backend)
    errors = run_in_threads(8, lambda: list(backend.user_statuses("w1-pilot-001")))

    assert errors == []
    assert standin.standin.max_in_flight == 2


def run_in_threads(count: int, call) -> list[Exception]:
    errors: list[Exception] = []

    def run():
        try:
            call()
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


def test_a_server_error_repeats_reads_but_never_new_batch(make_standin):
    standin = make_standin()
    backend = backend_for(standin)

    standin.standin.fail_next(1, status=503)
    with pytest.raises(BackendError):
        create(backend)
    assert len(standin.standin.cmdlets_called("New-MigrationBatch")) == 1
    assert standin.standin.batches == {}

    create(backend)
    standin.standin.fail_next(1, status=503)
    assert len(statuses(backend)) == 3


# Signing in.


def test_an_expired_token_is_replaced_once(make_standin):
    standin = make_standin()
    backend = backend_for(standin)
    create(backend)

    standin.standin.expire_tokens()
    backend.start_batch("w1-pilot-001")

    assert standin.standin.tokens_issued == 2


def test_a_token_refused_twice_is_an_error(make_standin):
    standin = make_standin(token_lifetime=0)  # dead on arrival, every time

    with pytest.raises(BackendError, match="refused the portal's token for New-MigrationBatch"):
        create(backend_for(standin))
    assert standin.standin.tokens_issued == 2


def test_a_wrong_client_secret_is_explained(make_standin):
    standin = make_standin()
    backend = backend_for(standin, client_secret="not-the-secret")

    with pytest.raises(BackendError) as refused:
        backend.start_batch("w1-pilot-001")

    assert str(refused.value) == (
        "Exchange Online refused the portal's sign-in: AADSTS7000215: Invalid client secret "
        "provided. Ensure the secret being sent in the request is the client secret value, not "
        "the client secret ID, for a secret added to app "
        f"'{standin.standin.client_id}'. Check PORTAL_EXCHANGE_CLIENT_SECRET: it must be the "
        "secret's value, not its ID."
    )
    assert standin.standin.cmdlets_called() == []


def test_an_unknown_tenant_or_app_is_explained(make_standin):
    standin = make_standin()
    wrong_tenant = backend_for(standin, authority=f"{standin.url}/not-our-tenant")
    with pytest.raises(BackendError, match="Check PORTAL_EXCHANGE_TENANT_ID"):
        wrong_tenant.start_batch("w1-pilot-001")

    wrong_app = backend_for(standin, client_id=str(uuid.uuid4()))
    with pytest.raises(BackendError, match="AADSTS700016: Application with identifier"):
        wrong_app.start_batch("w1-pilot-001")


def certificate_pem(tmp_path: Path, name: str) -> tuple[str, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    public = certificate.public_bytes(serialization.Encoding.PEM).decode()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path / f"{name}.pem"
    path.write_text(private + public)
    return public, path


def test_the_app_signs_in_with_a_certificate(make_standin, tmp_path):
    registered, key_file = certificate_pem(tmp_path, "portal")
    _, other_file = certificate_pem(tmp_path, "someone-else")
    standin = make_standin(certificates=[registered], client_secret=None)

    backend = backend_for(standin, client_secret="", certificate_file=str(key_file))
    create(backend)  # thumbprint worked out from the certificate in the file
    certificate = x509.load_pem_x509_certificate(registered.encode())
    thumbprint = certificate.fingerprint(hashes.SHA1())  # noqa: S303 - what Entra shows
    create(
        backend_for(
            standin, certificate_file=str(key_file), certificate_thumbprint=thumbprint.hex()
        )
    )

    impostor = backend_for(standin, client_secret="", certificate_file=str(other_file))
    with pytest.raises(BackendError, match="AADSTS700027.+PORTAL_EXCHANGE_CERTIFICATE_FILE"):
        impostor.start_batch("w1-pilot-001")


# Configuration.


def test_get_backend_builds_the_exchange_backend_from_settings(make_standin, settings):
    standin = make_standin()
    settings.MIGRATION_BACKEND = "exchange_online"
    settings.EXCHANGE_ONLINE = standin.portal_settings()
    assert isinstance(get_backend(), ExchangeOnlineBackend)

    settings.EXCHANGE_ONLINE = {**settings.EXCHANGE_ONLINE, "organization": "", "client_secret": ""}
    with pytest.raises(BackendError) as refused:
        get_backend()
    assert "PORTAL_EXCHANGE_ORGANIZATION" in str(refused.value)
    assert "PORTAL_EXCHANGE_CERTIFICATE_FILE (or PORTAL_EXCHANGE_CLIENT_SECRET)" in str(
        refused.value
    )


@pytest.mark.django_db(False)
def test_start_up_names_the_missing_exchange_settings():
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env = {
        **clean,
        "PORTAL_SECRET_KEY": "x" * 50,
        "DATABASE_URL": "sqlite:///:memory:",
        "PORTAL_MIGRATION_BACKEND": "exchange_online",
        "PORTAL_EXCHANGE_TENANT_ID": "5e7a1c2b-0d1e-4c3a-9b8f-57a2d1e0c0de",
        "PORTAL_EXCHANGE_CLIENT_ID": "c1e2f3a4-5b6c-4d7e-8f90-57a2d1e0c0de",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert (
        "PORTAL_MIGRATION_BACKEND is exchange_online: set PORTAL_EXCHANGE_ORGANIZATION, "
        "PORTAL_EXCHANGE_SOURCE_ENDPOINT, PORTAL_EXCHANGE_TARGET_DELIVERY_DOMAIN, "
        "PORTAL_EXCHANGE_CERTIFICATE_FILE (or PORTAL_EXCHANGE_CLIENT_SECRET)"
    ) in result.stderr


# The engine, driving Exchange Online (the stand-in) from start to done.


def test_the_engine_runs_a_wave_through_exchange_online(
    make_standin, settings, carol, airedale, alice, bradford, bob
):
    standin = make_standin(
        page_size=5,
        throttle_every=9,
        retry_after=0,
        time_scale=2000.0,
        failures={"user00003@rcf.nhs.net": 1},
    )
    settings.MIGRATION_BACKEND = "exchange_online"
    settings.EXCHANGE_ONLINE = standin.portal_settings(backoff_seconds=0.01, statistics_per_poll=50)
    settings.WAVE_MAX_BATCHES = 2
    settings.MAILBOX_MAX_ATTEMPTS = 3
    wave = make_approved_wave(carol, [(airedale, alice), (bradford, bob)])
    wave = start_wave_now(wave, carol, cutover_in=timedelta(seconds=2))
    ids = list(
        CohortMailbox.objects.filter(booking__wave=wave).values_list("mailbox_id", flat=True)
    )

    deadline = time.monotonic() + 30
    while wave.status in WAVE_ACTIVE:
        assert time.monotonic() < deadline, list(
            CohortMailbox.objects.filter(booking__wave=wave)
            .values_list("mailbox__status", "backend_status")
            .annotate(n=Count("pk"))
            .order_by()
        )
        wave = wave_advance(wave.pk)
        time.sleep(0.05)

    assert wave.status == WaveStatus.DONE
    assert set(Mailbox.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
        MailboxStatus.COMPLETED
    }
    assert_migration_histories(ids)
    batches = {b.name: b for b in MigrationBatch.objects.filter(wave=wave)}
    assert sorted(standin.standin.batches) == sorted(batches)
    for name, batch in batches.items():
        members = batch.members.values_list("mailbox__address", flat=True)
        assert sorted(standin.standin.batches[name].users) == sorted(members)
        assert batch.last_error == ""
    assert not CohortMailbox.objects.filter(booking__wave=wave, bytes_transferred=0).exists()
    retried = CohortMailbox.objects.get(mailbox__address="user00003@rcf.nhs.net")
    assert (retried.attempts, retried.last_error) == (1, FAILURE_TEXT)  # full text: statistics
    assert standin.standin.throttled > 0
    assert any(call.next_page for call in standin.standin.cmdlets_called("Get-MigrationUser"))

    # Once kept long enough, the batches leave the tenant; one refused is tried again.
    settings.BATCH_KEEP_HOURS = 0
    standin.standin.fail_next(1)
    assert batches_remove_finished() == 1
    refused = MigrationBatch.objects.get(wave=wave, status=MigrationBatchStatus.COMPLETED)
    assert "Exchange Online refused Remove-MigrationBatch" in refused.last_error
    assert batches_remove_finished() == 1
    assert standin.standin.batches == {}
    assert set(MigrationBatch.objects.filter(wave=wave).values_list("status", "last_error")) == {
        (MigrationBatchStatus.REMOVED, "")
    }
