"""The Exchange Online backend: migration batches through the admin endpoint of Exchange Online.

Every cmdlet is one POST to `{base_url}/adminapi/beta/{tenant}/InvokeCommand`, the endpoint the
ExchangeOnlineManagement V3 module uses itself. It is not a documented API: this module follows
what public clients of it show, and marks what no public source confirms "unverified", next to
the code that relies on it, so that it is easy to correct.

  create_batch   New-MigrationBatch (CSVData base64, StartAfter/CompleteAfter with their offset,
                 no AutoStart: the engine starts the batch itself); "already exists" is success
                 once Get-MigrationBatch confirms a batch of that name is there
  start/stop/complete   Start-, Stop-, Complete-MigrationBatch -Identity
  remove_user    Remove-MigrationUser -Identity, after checking the user is in that batch
  remove_batch   Remove-MigrationBatch -Identity; "couldn't be found" is success (already gone)
  user_statuses  Get-MigrationUser -BatchId, every page; Get-MigrationUserStatistics for a
                 bounded number of users per poll (bytes copied, full error text); each user's
                 DataConsistencyScore
  approve_skipped_items   Set-MigrationUser -Identity -ApproveSkippedItems, after the same check
  pre-flight     a token from msal; Get-MigrationEndpoint -Identity; Get-MigrationBatch (all);
                 Get-Recipient -Filter on EmailAddresses, RECIPIENTS_PER_CALL addresses a call

Calls share, per process and configuration, one msal application (with its token cache), one
HTTP session and one semaphore of `max_parallel_calls`. Throttling (429 with Retry-After, or the
per-tenant concurrency message) is waited out up to `max_throttle_wait` seconds; an expired token
(401) is dropped and acquired again once. A cmdlet that may have changed something (anything but
Get-*) is repeated only when Exchange throttled it, so it cannot have run.
"""

import base64
import email.utils
import functools
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msal
import requests

from mailboxes.models import MailboxStatus
from waves.backends import EXCHANGE_USER_STATUS, BackendError, UserProgress
from waves.models import DataConsistency

log = logging.getLogger(__name__)

# The system mailbox every app-only call is anchored to (guide; CIPP uses the same GUID with the
# tenant id after the @). Unverified beyond public client code: kept in one place to correct.
ANCHOR_MAILBOX = "APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{organization}"
PAGE_SIZE = 1000
HTTP_TIMEOUT = (10, 120)  # connect, read (seconds); a page of 1,000 users can take a while
MAX_THROTTLE_RETRIES = 30
MAX_TRANSIENT_RETRIES = 2  # reads only: 5xx or a dropped connection
# Get-MigrationUserStatistics is one call per user: at most this many per batch per poll (with
# 50 batches, up to 1,250 calls a poll). A guess to tune against a real tenant's throttling.
STATISTICS_PER_POLL = 25
# Hosts where msal's instance discovery applies; any other authority (the local stand-in, say)
# is used as given.
MICROSOFT_LOGIN_HOSTS = frozenset(
    {"login.microsoftonline.com", "login.microsoft.com", "login.microsoftonline.us"}
)
CONCURRENCY_MESSAGE = "maximum number of concurrent requests per tenant"
# Addresses looked up per Get-Recipient call, as one OPATH filter of -or'ed EmailAddresses
# comparisons. How long a filter Exchange accepts is unverified: kept short.
RECIPIENTS_PER_CALL = 20
TRANSIENT_STATUSES = {500, 502, 503, 504}

FAILED_STATUSES = {s for s, ours in EXCHANGE_USER_STATUS.items() if ours == MailboxStatus.FAILED}
COPYING_STATUSES = {"Syncing", "IncrementalSyncing", "Completing", "CompletionSynced"}
COPIED_STATUSES = {"Synced", "IncrementalSynced", "Completed", "CompletedWithWarnings"}

# What an operator can do about a refused sign-in, by AADSTS code.
SIGN_IN_HINTS = {
    7000215: "Check PORTAL_EXCHANGE_CLIENT_SECRET: it must be the secret's value, not its ID.",
    7000222: "The client secret has expired: add a new one to the app registration and set "
    "PORTAL_EXCHANGE_CLIENT_SECRET.",
    7000218: "Set PORTAL_EXCHANGE_CERTIFICATE_FILE or PORTAL_EXCHANGE_CLIENT_SECRET.",
    700016: "Check PORTAL_EXCHANGE_CLIENT_ID and PORTAL_EXCHANGE_TENANT_ID: the app must be "
    "registered (or consented to) in that tenant.",
    700027: "Check PORTAL_EXCHANGE_CERTIFICATE_FILE and PORTAL_EXCHANGE_CERTIFICATE_THUMBPRINT: "
    "the certificate must be uploaded to the app registration.",
    90002: "Check PORTAL_EXCHANGE_TENANT_ID.",
    500011: "Check PORTAL_EXCHANGE_BASE_URL, and that the app has the Exchange.ManageAsApp "
    "permission with admin consent.",
}


class ExchangeError(BackendError):
    """Exchange Online answered a cmdlet with an error; the message is fit for an operator."""

    def __init__(
        self, cmdlet: str, text: str, *, status: int, code: str = "", exception_type: str = ""
    ):
        super().__init__(f"Exchange Online refused {cmdlet}: {text}")
        self.cmdlet = cmdlet
        self.text = text
        self.status = status
        self.code = code
        self.exception_type = exception_type

    @property
    def already_exists(self) -> bool:
        return "already exists" in self.text.lower() or "AlreadyExists" in self.exception_type

    @property
    def not_found(self) -> bool:
        return (
            self.code == "NotFound"
            or "NotFound" in self.exception_type
            or "couldn't be found" in self.text
        )


@dataclass(frozen=True)
class _Config:
    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)
    certificate_file: str
    certificate_thumbprint: str
    authority: str
    base_url: str
    ca_bundle: str
    max_parallel_calls: int

    @property
    def resource(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"


class _Connection:
    """One per configuration per process: msal application and token cache, session, semaphore."""

    def __init__(self, config: _Config):
        self.config = config
        self.slots = threading.BoundedSemaphore(config.max_parallel_calls)
        self.session = _http_session(config.ca_bundle)
        self.cache = msal.TokenCache()
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    def app(self) -> msal.ConfidentialClientApplication:
        with self._lock:
            if self._app is None:
                config = self.config
                host = urlsplit(config.authority).hostname or ""
                try:
                    self._app = msal.ConfidentialClientApplication(
                        config.client_id,
                        client_credential=_credential(config),
                        authority=config.authority,
                        token_cache=self.cache,
                        http_client=self.session,
                        # msal's advice: discovery for Microsoft's hosts, none for others.
                        instance_discovery=None if host in MICROSOFT_LOGIN_HOSTS else False,
                        app_name="migration-control-portal",
                    )
                except ValueError as error:  # msal's word for a bad or unknown authority
                    raise BackendError(
                        f"Exchange Online sign-in can't use {config.authority}: "
                        f"{_first_line(str(error))} Check PORTAL_EXCHANGE_TENANT_ID and "
                        "PORTAL_EXCHANGE_AUTHORITY."
                    ) from None
                except requests.RequestException as error:
                    raise BackendError(
                        f"Exchange Online sign-in at {config.authority} can't be reached: {error}"
                    ) from None
            return self._app

    def token(self) -> str:
        """A bearer token for Exchange Online: msal's cached one while it is fresh."""
        try:
            result = self.app().acquire_token_for_client(
                scopes=[f"{self.config.resource}/.default"]
            )
        except requests.RequestException as error:
            raise BackendError(
                f"Exchange Online sign-in at {self.config.authority} can't be reached: {error}"
            ) from None
        if result and "access_token" in result:
            return result["access_token"]
        raise BackendError(_sign_in_refused(result or {}))

    def drop_token(self, token: str) -> None:
        """Forget a token Exchange refused, so the next call signs in again."""
        for entry in list(self.cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            if entry.get("secret") == token:
                self.cache.remove_at(entry)


def _http_session(ca_bundle: str) -> requests.Session:
    """A session for sign-in and cmdlets, with a timeout and the configured CA bundle.

    The bundle goes with each request: set on the session, requests would let a
    REQUESTS_CA_BUNDLE in the environment override it. Only a failed connection is retried
    here (nothing was sent); everything else is decided in `_post`.
    """
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(max_retries=1)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    options = {"timeout": HTTP_TIMEOUT}
    if ca_bundle:
        options["verify"] = ca_bundle
    session.request = functools.partial(session.request, **options)
    return session


_CONNECTIONS: dict[tuple[int, _Config], _Connection] = {}
_CONNECTIONS_LOCK = threading.Lock()


def _connection(config: _Config) -> _Connection:
    key = (os.getpid(), config)  # a forked worker builds its own sockets and locks
    with _CONNECTIONS_LOCK:
        if key not in _CONNECTIONS:
            _CONNECTIONS[key] = _Connection(config)
        return _CONNECTIONS[key]


def _credential(config: _Config) -> str | dict:
    """The certificate (preferred) or the client secret, as msal takes them."""
    if not config.certificate_file:
        return config.client_secret
    try:
        pem = Path(config.certificate_file).read_text()
    except OSError as error:
        raise BackendError(
            f"PORTAL_EXCHANGE_CERTIFICATE_FILE: can't read {config.certificate_file}: "
            f"{error.strerror}"
        ) from None
    key = re.search(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", pem, re.S
    )
    if key is None:
        raise BackendError(
            f"PORTAL_EXCHANGE_CERTIFICATE_FILE: {config.certificate_file} holds no private key "
            "in PEM form."
        )
    thumbprint = config.certificate_thumbprint.replace(":", "").strip()
    if not thumbprint:
        thumbprint = _sha1_thumbprint(pem)
    return {"private_key": key.group(0), "thumbprint": thumbprint}


def _sha1_thumbprint(pem: str) -> str:
    """The thumbprint Entra shows for the certificate in the file (SHA-1, as in its portal)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    block = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
    if block is None:
        raise BackendError(
            "PORTAL_EXCHANGE_CERTIFICATE_THUMBPRINT: not set, and PORTAL_EXCHANGE_CERTIFICATE_FILE "
            "holds no certificate to work it out from."
        )
    certificate = x509.load_pem_x509_certificate(block.group(0).encode())
    return certificate.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - Entra's thumbprint


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if line.endswith(".") else f"{line}."


def _sign_in_refused(result: dict) -> str:
    """An operator-facing sentence from Entra's error (trace and correlation ids left out)."""
    description = _first_line(result.get("error_description") or result.get("error") or "")
    codes = result.get("error_codes") or []
    hint = next((SIGN_IN_HINTS[c] for c in codes if c in SIGN_IN_HINTS), "")
    return " ".join(
        part
        for part in (f"Exchange Online refused the portal's sign-in: {description}", hint)
        if part
    )


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_from(response: requests.Response, cmdlet: str) -> ExchangeError:
    """Exchange's error body: details[].message is "error id|exception type|text"."""
    status = response.status_code
    diagnostics = response.headers.get("x-ms-diagnostics", "")
    if status == 403:
        reason = diagnostics or "no reason given: the cmdlet is unknown, or not in the app's role"
        return ExchangeError(
            cmdlet,
            f"{reason} (HTTP 403). Check the Exchange role assigned to the portal's app.",
            status=status,
        )
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        error = {}
    code = str(error.get("code") or "")
    texts, exception_type = [], ""
    for detail in error.get("details") or []:
        parts = str(detail.get("message") or "").split("|", 2)
        if len(parts) == 3:
            exception_type = exception_type or parts[1]
            texts.append(parts[2].strip())
        elif parts[0]:
            texts.append(parts[0].strip())
    if not texts:
        inner = ((error.get("innererror") or {}).get("internalException") or {}).get("message")
        texts.append(inner or error.get("message") or diagnostics or response.reason or "")
    text = " ".join(t for t in texts if t) or f"HTTP {status}"
    return ExchangeError(cmdlet, text, status=status, code=code, exception_type=exception_type)


def _bytes(value) -> int | None:
    """BytesTransferred as a number, or as Exchange prints it: "1.2 GB (1,288,490,189 bytes)"."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    text = str(value)
    found = re.search(r"\(([\d,. ]+) bytes\)", text)
    if found:
        return int(re.sub(r"\D", "", found.group(1)))
    return int(text) if text.isdigit() else None


def _count(value) -> int | None:
    if isinstance(value, bool) or value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class ExchangeOnlineBackend:
    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        organization: str,
        source_endpoint: str,
        target_delivery_domain: str,
        client_secret: str = "",
        certificate_file: str = "",
        certificate_thumbprint: str = "",
        authority: str = "",
        base_url: str = "https://outlook.office365.com",
        max_parallel_calls: int = 4,
        time_zone: str = "Europe/London",
        ca_bundle: str = "",
        max_throttle_wait: float = 120.0,
        backoff_seconds: float = 1.0,
        statistics_per_poll: int = STATISTICS_PER_POLL,
    ):
        required = {
            "PORTAL_EXCHANGE_TENANT_ID": tenant_id,
            "PORTAL_EXCHANGE_CLIENT_ID": client_id,
            "PORTAL_EXCHANGE_ORGANIZATION": organization,
            "PORTAL_EXCHANGE_SOURCE_ENDPOINT": source_endpoint,
            "PORTAL_EXCHANGE_TARGET_DELIVERY_DOMAIN": target_delivery_domain,
            "PORTAL_EXCHANGE_CERTIFICATE_FILE (or PORTAL_EXCHANGE_CLIENT_SECRET)": (
                certificate_file or client_secret
            ),
        }
        missing = [name for name, value in required.items() if not value]
        if missing:
            raise BackendError(f"Exchange Online is not configured: set {', '.join(missing)}.")
        try:
            self.zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise BackendError(
                f"PORTAL_EXCHANGE_TIME_ZONE: unknown time zone {time_zone!r}"
            ) from None
        base_url = base_url.rstrip("/")
        self.config = _Config(
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            certificate_file=certificate_file,
            certificate_thumbprint=certificate_thumbprint,
            authority=(authority or f"https://login.microsoftonline.com/{tenant_id}").rstrip("/"),
            base_url=base_url,
            ca_bundle=ca_bundle,
            max_parallel_calls=max_parallel_calls,
        )
        self.url = f"{base_url}/adminapi/beta/{tenant_id}/InvokeCommand"
        self.anchor = ANCHOR_MAILBOX.format(organization=organization)
        self.source_endpoint = source_endpoint
        self.target_delivery_domain = target_delivery_domain
        self.max_throttle_wait = max_throttle_wait
        self.backoff_seconds = backoff_seconds
        self.statistics_per_poll = statistics_per_poll

    # The interface the engine drives.

    def create_batch(
        self, *, name: str, addresses: list[str], start_after: datetime, complete_after: datetime
    ) -> str:
        csv = "EmailAddress\r\n" + "".join(f"{address}\r\n" for address in addresses)
        parameters = {
            "Name": name,
            # Byte[] travels as base64, as .NET serialises it (unverified for this endpoint).
            "CSVData": base64.b64encode(csv.encode("utf-8")).decode("ascii"),
            "SourceEndpoint": self.source_endpoint,
            "TargetDeliveryDomain": self.target_delivery_domain,
        }
        # Times already past are left out: the batch starts at once, and the engine completes it
        # itself at cutover. Future ones go in the portal's zone with their offset.
        now = datetime.now(UTC)
        if start_after > now:
            parameters["StartAfter"] = self._when(start_after)
        if complete_after > now:
            parameters["CompleteAfter"] = self._when(complete_after)
        try:
            self._invoke("New-MigrationBatch", parameters)
        except ExchangeError as error:
            if "maximum number of migration batches" in error.text.lower():
                raise BackendError(
                    f"{error} Exchange Online holds at most 100 migration batches per tenant: "
                    "remove finished batches, or lower PORTAL_WAVE_MAX_BATCHES."
                ) from None
            # "Already exists" may also mean a user is in another batch: only a batch of this
            # very name makes the call a success.
            if not (error.already_exists and self._batch_exists(name)):
                raise
            log.info("Migration batch %s already exists in Exchange Online: using it", name)
        return name

    def start_batch(self, batch_ref: str) -> None:
        self._invoke("Start-MigrationBatch", {"Identity": batch_ref})

    def stop_batch(self, batch_ref: str) -> None:
        self._invoke("Stop-MigrationBatch", {"Identity": batch_ref, "Confirm": False})

    def complete_batch(self, batch_ref: str) -> None:
        self._invoke("Complete-MigrationBatch", {"Identity": batch_ref, "Confirm": False})

    def remove_user(self, batch_ref: str, address: str) -> None:
        self._check_in_batch(batch_ref, address)
        self._invoke("Remove-MigrationUser", {"Identity": address, "Confirm": False})

    def remove_batch(self, batch_ref: str) -> None:
        try:
            self._invoke("Remove-MigrationBatch", {"Identity": batch_ref, "Confirm": False})
        except ExchangeError as error:
            if not error.not_found:
                raise
            log.info("Migration batch %s is no longer in Exchange Online", batch_ref)

    def _check_in_batch(self, batch_ref: str, address: str) -> None:
        rows = self._invoke("Get-MigrationUser", {"Identity": address})
        batches = {_batch_name(row.get("BatchId")) for row in rows}
        if batch_ref not in batches:
            where = f"in {', '.join(sorted(batches))}" if any(batches) else "in no batch"
            raise BackendError(f"{address} is {where}, not in the migration batch {batch_ref!r}.")

    def user_statuses(self, batch_ref: str) -> Iterable[UserProgress]:
        rows = [
            row
            for row in self._invoke("Get-MigrationUser", {"BatchId": batch_ref})
            if _address(row)
        ]
        stored = _stored_progress(batch_ref)
        statistics = self._statistics(rows, stored)
        for row in rows:
            address = _address(row)
            status = str(row.get("Status") or "")
            known = stored.get(address.lower(), _Known())
            extra = statistics.get(address.lower(), {})
            copied = _bytes(extra.get("BytesTransferred"))
            items = _count(row.get("SyncedItemCount"))
            if items is None:
                items = _count(extra.get("SyncedItemCount"))
            error = str(extra.get("Error") or row.get("ErrorSummary") or "")
            if status in FAILED_STATUSES and not error:
                error = f"Exchange Online reports {status} without a reason."
            consistency = _consistency(row.get("DataConsistencyScore"))
            if not consistency:
                consistency = _consistency(extra.get("DataConsistencyScore")) or known.consistency
            yield UserProgress(
                address=address,
                status=status,
                bytes_transferred=known.bytes if copied is None else copied,
                items_transferred=known.items if items is None else items,
                error=error,
                consistency=consistency,
            )

    def approve_skipped_items(self, batch_ref: str, address: str) -> None:
        self._check_in_batch(batch_ref, address)
        # Set-MigrationUser is documented for Exchange Online, but no public client is seen
        # calling it through this endpoint (unverified); a switch goes as true (guide).
        self._invoke("Set-MigrationUser", {"Identity": address, "ApproveSkippedItems": True})

    # Pre-flight.

    def check_sign_in(self) -> str:
        _connection(self.config).token()
        return (
            f"A token for {self.config.resource} came from {self.config.authority} for app "
            f"{self.config.client_id}."
        )

    def check_endpoint(self) -> str:
        name = self.source_endpoint
        try:
            rows = self._invoke("Get-MigrationEndpoint", {"Identity": name})
        except ExchangeError as error:
            if not error.not_found:
                raise
            rows = []
        if not rows:
            raise BackendError(
                f"Exchange Online has no migration endpoint called {name!r}: create it with "
                "New-MigrationEndpoint, or correct PORTAL_EXCHANGE_SOURCE_ENDPOINT."
            )
        row = rows[0]
        facts = [
            f"{row[key]} {label}"
            for key, label in [
                ("MaxConcurrentMigrations", "moves at once"),
                ("MaxConcurrentIncrementalSyncs", "incremental syncs at once"),
            ]
            if row.get(key) not in (None, "")
        ]
        kind = row.get("EndpointType") or "migration endpoint"
        server = f" for {row['RemoteServer']}" if row.get("RemoteServer") else ""
        more = f", at most {' and '.join(facts)}" if facts else ""
        return f"{name!r} answers: {kind}{server}{more}."

    def batch_names(self) -> list[str]:
        rows = self._invoke("Get-MigrationBatch", {})
        return [name for name in (_batch_name(row.get("Identity")) for row in rows) if name]

    def find_recipients(self, addresses: list[str]) -> dict[str, str]:
        """Get-Recipient over a filter of EmailAddresses, a few addresses per call, in parallel.

        A mailbox still on the old platform shows in Exchange Online as a MailUser (synced from
        the directory); a moved one as a UserMailbox. Get-Recipient through this endpoint, and
        the filter's syntax there, are unverified.
        """
        wanted = sorted({a.strip().lower() for a in addresses if a.strip()})
        chunks = [
            wanted[i : i + RECIPIENTS_PER_CALL] for i in range(0, len(wanted), RECIPIENTS_PER_CALL)
        ]

        def look_up(chunk: list[str]) -> dict[str, str]:
            clauses = " -or ".join(f"(EmailAddresses -eq 'smtp:{_opath(a)}')" for a in chunk)
            rows = self._invoke(
                "Get-Recipient", {"Filter": clauses, "ResultSize": len(chunk) * 2 + 10}
            )
            found = {}
            for row in rows:
                kind = str(row.get("RecipientTypeDetails") or row.get("RecipientType") or "")
                for address in _proxy_addresses(row):
                    if address in chunk:
                        found[address] = kind
            return found

        if not chunks:
            return {}
        workers = min(self.config.max_parallel_calls, len(chunks))
        found: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="exo-recipients") as pool:
            for part in pool.map(look_up, chunks):
                found |= part
        return found

    # Reading more than Get-MigrationUser gives, within a budget per poll.

    def _statistics(self, rows: list[dict], stored: dict) -> dict[str, dict]:
        """Get-MigrationUserStatistics for the users where it adds most, at most a budget a poll.

        Failures the portal has not recorded come first (for the full error text), then users
        copying now, then users whose final size the portal has not recorded; each group in
        random order, so that over a few polls every user is read. The rest keep the figures
        the portal already holds.
        """
        failing, copying, unrecorded = [], [], []
        for row in rows:
            address, status = _address(row), str(row.get("Status") or "")
            known = stored.get(address.lower(), _Known())
            if status in FAILED_STATUSES:
                if known.status != status or not known.error:
                    failing.append(address)
            elif status in COPYING_STATUSES:
                copying.append(address)
            elif status in COPIED_STATUSES and not known.bytes:
                unrecorded.append(address)
        chosen = []
        for group in (failing, copying, unrecorded):
            random.shuffle(group)
            chosen.extend(group)
        chosen = chosen[: self.statistics_per_poll]
        if not chosen:
            return {}

        def read(address: str) -> tuple[str, dict]:
            try:
                rows = self._invoke("Get-MigrationUserStatistics", {"Identity": address})
            except BackendError as error:  # figures are a nicety: the statuses still count
                log.info("No migration statistics for %s: %s", address, error)
                return address.lower(), {}
            return address.lower(), (rows[0] if rows else {})

        workers = min(self.config.max_parallel_calls, len(chosen))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="exo-stats") as pool:
            return dict(pool.map(read, chosen))

    def _batch_exists(self, name: str) -> bool:
        try:
            return bool(self._invoke("Get-MigrationBatch", {"Identity": name}))
        except ExchangeError as error:
            if error.not_found:
                return False
            raise

    def _when(self, moment: datetime) -> str:
        return moment.astimezone(self.zone).isoformat(timespec="seconds")

    # One cmdlet, every page of it.

    def _invoke(self, cmdlet: str, parameters: dict) -> list[dict]:
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}}
        request_id = str(uuid.uuid4())
        rows: list[dict] = []
        url: str | None = self.url
        while url:
            page = self._post(url, body, cmdlet, request_id)
            for warning in page.get("@adminapi.warnings") or []:
                log.warning("Exchange Online warns on %s: %s", cmdlet, warning)
            rows.extend(page.get("value") or [])
            url = page.get("@odata.nextLink")
            if url and urlsplit(url).netloc != urlsplit(self.url).netloc:
                raise BackendError(
                    f"Exchange Online sent {cmdlet}'s next page to another host ({url}): refused."
                )
        return rows

    def _post(self, url: str, body: dict, cmdlet: str, request_id: str) -> dict:
        connection = _connection(self.config)
        changes_something = not cmdlet.startswith("Get-")
        waited = 0.0
        throttled = transient = 0
        signed_in_again = False
        while True:
            token = connection.token()
            headers = {
                "Authorization": f"Bearer {token}",
                "X-AnchorMailbox": self.anchor,
                "Prefer": f"odata.maxpagesize={PAGE_SIZE}",
                "client-request-id": request_id,
                "Accept": "application/json",
            }
            try:
                with connection.slots:
                    response = connection.session.post(url, json=body, headers=headers)
            except requests.RequestException as error:
                if changes_something or transient >= MAX_TRANSIENT_RETRIES:
                    raise BackendError(
                        f"Exchange Online can't be reached for {cmdlet}: {error}"
                    ) from None
                transient += 1
                time.sleep(self.backoff_seconds * 2**transient)
                continue

            if response.status_code == 401 and not signed_in_again:
                log.info("Exchange Online refused the token for %s: signing in again", cmdlet)
                connection.drop_token(token)
                signed_in_again = True
                continue
            if response.ok:
                try:
                    return response.json()
                except ValueError:
                    raise BackendError(
                        f"Exchange Online answered {cmdlet} with something that is not JSON."
                    ) from None
            if response.status_code == 401:
                raise BackendError(
                    f"Exchange Online refused the portal's token for {cmdlet} (HTTP 401), twice. "
                    "Check the app has the Exchange.ManageAsApp permission with admin consent."
                )

            error = _error_from(response, cmdlet)
            if response.status_code == 429 or CONCURRENCY_MESSAGE in error.text.lower():
                delay = _retry_after(response)
                if delay is None:
                    delay = min(self.backoff_seconds * 2**throttled, 60.0)
                if throttled >= MAX_THROTTLE_RETRIES or waited + delay > self.max_throttle_wait:
                    raise BackendError(
                        f"Exchange Online is throttling the portal: gave up on {cmdlet} after "
                        f"{throttled + 1} tries over {waited:.0f} s. The next poll tries again."
                    )
                log.warning(
                    "Exchange Online throttled %s (request %s): waiting %.1f s",
                    cmdlet,
                    request_id,
                    delay,
                )
                time.sleep(delay)
                waited += delay
                throttled += 1
                continue
            if (
                response.status_code in TRANSIENT_STATUSES
                and not changes_something
                and transient < MAX_TRANSIENT_RETRIES
            ):
                transient += 1
                time.sleep(self.backoff_seconds * 2**transient)
                continue
            log.warning("%s (HTTP %s, request %s)", error, response.status_code, request_id)
            raise error


def _batch_name(value) -> str:
    """BatchId as a name; should it come as an object, its Name (unverified either way)."""
    if isinstance(value, dict):
        value = value.get("Name") or value.get("Identity")
    return str(value or "")


def _address(row: dict) -> str:
    return str(row.get("MailboxEmailAddress") or row.get("Identity") or "")


def _consistency(value) -> str:
    """DataConsistencyScore as one of our grades; "" for anything else.

    The property is documented on MigrationUser and its statistics; that it comes through this
    endpoint as the grade's name (not a number) is unverified.
    """
    text = str(value or "").strip()
    return next((grade for grade in DataConsistency.values if grade.lower() == text.lower()), "")


def _opath(address: str) -> str:
    """An address inside a single-quoted OPATH string: quotes doubled."""
    return address.replace("'", "''")


def _proxy_addresses(row: dict) -> set[str]:
    """A recipient's addresses in lower case: PrimarySmtpAddress and the SMTP EmailAddresses.

    EmailAddresses is a list of "SMTP:x" / "smtp:x" strings in PowerShell; over this endpoint
    it may be a list or one string (unverified): both are read.
    """
    values = row.get("EmailAddresses") or []
    if isinstance(values, str):
        values = re.split(r"[\s,;]+", values)
    found = {str(row.get("PrimarySmtpAddress") or "").lower()}
    for value in values:
        prefix, _, address = str(value).partition(":")
        if address and prefix.lower() == "smtp":
            found.add(address.lower())
    found.discard("")
    return found


@dataclass(frozen=True)
class _Known:
    status: str = ""
    bytes: int = 0
    items: int = 0
    error: str = ""
    consistency: str = ""


def _stored_progress(batch_ref: str) -> dict[str, _Known]:
    """What the portal last recorded of the batch's users: figures for users not re-read."""
    from waves.models import CohortMailbox

    rows = CohortMailbox.objects.filter(batch__backend_ref=batch_ref, active=True).values_list(
        "mailbox__address",
        "backend_status",
        "bytes_transferred",
        "items_transferred",
        "last_error",
        "consistency",
    )
    return {row[0].lower(): _Known(*row[1:]) for row in rows}
