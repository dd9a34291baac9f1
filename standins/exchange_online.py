"""A STAND-IN for Exchange Online and its sign-in service (Microsoft Entra ID), on loopback.

This is not Microsoft's service. It is a small local imitation, built from what is publicly
known about the admin endpoint the ExchangeOnlineManagement module uses (see the project's guide,
exchange-online.md), so that the portal's Exchange Online backend and the real msal library can
be exercised end to end without a tenant. Where the real service's behaviour is unknown, the
choice made here is marked "made up"; passing against the stand-in proves the portal's side only.
Every log line starts with "[stand-in Exchange Online]".

    python -m standins.exchange_online --port 8765     (prints the PORTAL_EXCHANGE_* settings)
    url, server = start_standin(page_size=2)  ...  server.stop()      (from tests)

It serves HTTPS (msal only accepts https authorities) with a throwaway certificate authority it
makes at start-up: point PORTAL_EXCHANGE_CA_BUNDLE at `server.ca_file`.

  GET  /{tenant}/v2.0/.well-known/openid-configuration   discovery, as msal reads it
  POST /{tenant}/oauth2/v2.0/token                       client credentials with a secret or a
       certificate (private_key_jwt); refusals carry Entra's error body (AADSTS codes)
  POST /adminapi/beta/{tenant}/InvokeCommand             New-, Get-, Start-, Stop-, Complete-,
       Remove-MigrationBatch, Get-MigrationUser, Get-MigrationUserStatistics, Set-MigrationUser
       (-ApproveSkippedItems only), Remove-MigrationUser, Get-MigrationEndpoint, Get-Recipient
       (-Identity, or -Filter of -or'ed "EmailAddresses -eq 'smtp:…'" comparisons)

Batches and users live in memory. A started user is Queued for `queue_seconds`, Syncing for
`sync_seconds`, then Synced; once its batch is completed (Complete-MigrationBatch, or its
CompleteAfter passes) it is Completing for `completion_seconds`, then Completed. Those are
stand-in seconds: `time_scale` of them pass each real second. Users listed in `failures` fail
that many attempts half way; starting the batch again retries them. Stop freezes users as
Stopped; Start resumes them. `set_user_status` makes a user report any status. Remove
takes a batch that is not Syncing or Completing away, with its users.

Data consistency: each user's DataConsistencyScore is Perfect, or once synced the grade given
in `consistency` (address → Perfect, Good, Investigate or Poor). An Investigate or Poor user is
held as Synced when its batch completes (the status reported while held is made up), until
Set-MigrationUser -ApproveSkippedItems; then it completes. Recipients: every address is a
synced MailUser (a UserMailbox once its move completed), except those in `absent_recipients`.

Faults on demand: `page_size` (small pages with @odata.nextLink), `throttle_every` and
`throttle_next(n)` (429 with Retry-After: `retry_after`), `max_concurrent` (the per-tenant
concurrency refusal), `fail_next(n, status)`, `expire_tokens()` (401), `max_batches` (100).
"""

import argparse
import atexit
import base64
import binascii
import ipaddress
import json
import logging
import re
import secrets
import shlex
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)
PREFIX = "[stand-in Exchange Online]"

# Made-up identities of the stand-in's tenant and app registration.
TENANT_ID = "5e7a1c2b-0d1e-4c3a-9b8f-57a2d1e0c0de"
ORGANIZATION = "standin-nhs.onmicrosoft.com"
CLIENT_ID = "c1e2f3a4-5b6c-4d7e-8f90-57a2d1e0c0de"
CLIENT_SECRET = "stand-in-secret-not-for-production"  # noqa: S105 - a stand-in's fixed secret
SOURCE_ENDPOINT = "Hybrid Migration Endpoint - EWS (Default Web Site)"
TARGET_DELIVERY_DOMAIN = "standin-nhs.mail.onmicrosoft.com"
EXCHANGE_RESOURCE = "https://outlook.office365.com"
ANCHOR_GUID = "bb558c35-97f1-4cb9-8ff7-d53741dc928c"

SUMMARY = {  # StatusSummary folds the statuses into five words
    **dict.fromkeys(["Synced", "IncrementalSynced"], "Synced"),
    **dict.fromkeys(["Completed", "CompletedWithWarnings"], "Completed"),
    **dict.fromkeys(["Failed", "IncrementalFailed", "CompletionFailed", "Corrupted"], "Failed"),
    **dict.fromkeys(["Stopping", "Stopped", "IncrementalStopped"], "Stopped"),
}
CONSISTENCY_GRADES = ("Perfect", "Good", "Investigate", "Poor")
NEEDS_APPROVAL = {"Investigate", "Poor"}  # completion waits for approval of skipped items
FAILURE_TEXT = (
    "TransientException: The call to 'https://mail.nhs.net/EWS/mrsproxy.svc' timed out. "
    "Error details: The request channel timed out while waiting for a reply."
)


class CmdletError(Exception):
    """A cmdlet's refusal, sent as Exchange's error body (shape from a real capture)."""

    def __init__(self, status: int, code: str, exception: str, text: str):
        super().__init__(text)
        self.status, self.code, self.exception, self.text = status, code, exception, text

    def body(self) -> dict:
        error_id = f"Ex{zlib.crc32(self.exception.encode()) & 0xFFFFFF:06X}"
        detail = f"{error_id}|{self.exception}|{self.text}"
        return {
            "error": {
                "code": self.code,
                "message": "Error executing cmdlet",
                "details": [{"code": "Client", "target": "", "message": detail}],
            }
        }


def not_found(identity: str) -> CmdletError:
    return CmdletError(
        404,
        "NotFound",
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        f"The operation couldn't be performed because object '{identity}' couldn't be found on "
        "'AM0PR01A001DC01.EURPR01A001.prod.outlook.com'.",
    )


def bad_request(exception: str, text: str) -> CmdletError:  # status and code: made up
    return CmdletError(400, "BadRequest", exception, text)


def entra_error(error: str, code: int, description: str) -> dict:
    """Entra's token error body, key for key (trace and correlation ids are fresh)."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {description}\r\nTrace ID: {trace}\r\n"
        f"Correlation ID: {correlation}\r\nTimestamp: {now}",
        "error_codes": [code],
        "timestamp": now,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


@dataclass
class User:
    address: str
    size: int
    items: int
    failures: int = 0  # this many attempts fail half way
    consistency: str = "Perfect"  # the grade once synced
    approved_at: float | None = None  # Set-MigrationUser -ApproveSkippedItems
    attempt: int = 1
    started: float | None = None  # wall-clock start of this attempt
    stopped_at: float | None = None
    forced: tuple[str, str] | None = None


@dataclass
class Batch:
    name: str
    users: dict[str, User]
    parameters: dict
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    start_after: float | None = None
    complete_after: float | None = None
    started: bool = False
    stopped: bool = False
    complete_requested: float | None = None


@dataclass
class Call:
    cmdlet: str
    parameters: dict
    headers: dict
    next_page: bool


class ExchangeOnlineStandin:
    """The stand-in's state and rules, apart from HTTP."""

    def __init__(
        self,
        *,
        tenant_id: str = TENANT_ID,
        organization: str = ORGANIZATION,
        client_id: str = CLIENT_ID,
        client_secret: str | None = CLIENT_SECRET,
        certificates: list[str] = (),
        source_endpoint: str = SOURCE_ENDPOINT,
        time_scale: float = 60.0,
        queue_seconds: float = 30.0,
        sync_seconds: float = 600.0,
        completion_seconds: float = 120.0,
        failures: dict[str, int] | None = None,
        consistency: dict[str, str] | None = None,
        absent_recipients: list[str] = (),
        page_size: int = 1000,
        throttle_every: int = 0,
        retry_after: float = 1,
        max_concurrent: int = 0,
        latency: float = 0.0,
        max_batches: int = 100,
        token_lifetime: int = 3599,
    ):
        self.tenant_id, self.organization = tenant_id, organization
        self.client_id, self.client_secret = client_id, client_secret
        self.certificates = [_load_certificate(pem) for pem in certificates]
        self.source_endpoint = source_endpoint
        self.time_scale = time_scale
        self.queue_seconds, self.sync_seconds = queue_seconds, sync_seconds
        self.completion_seconds = completion_seconds
        self.failures = {a.lower(): n for a, n in (failures or {}).items()}
        self.consistency = {a.lower(): grade for a, grade in (consistency or {}).items()}
        unknown = set(self.consistency.values()) - set(CONSISTENCY_GRADES)
        if unknown:
            raise ValueError(f"consistency grades are {', '.join(CONSISTENCY_GRADES)}: {unknown}")
        self.absent_recipients = {a.lower() for a in absent_recipients}
        self.page_size, self.throttle_every, self.retry_after = (
            page_size,
            throttle_every,
            retry_after,
        )
        self.max_concurrent, self.latency = max_concurrent, latency
        self.max_batches, self.token_lifetime = max_batches, token_lifetime
        self.base_url = ""  # set by the server once it knows its port
        self.lock = threading.RLock()
        self.batches: dict[str, Batch] = {}
        self.tokens: dict[str, float] = {}
        self.pages: dict[str, tuple[list[dict], float]] = {}
        self.calls: list[Call] = []
        self.tokens_issued = self.throttled = self.refused_concurrency = 0
        self.in_flight = self.max_in_flight = self.requests = 0
        self._throttle_next = 0
        self._fail_next: list[int] = []

    # Test hooks.

    def throttle_next(self, count: int) -> None:
        with self.lock:
            self._throttle_next += count

    def fail_next(self, count: int, status: int = 503) -> None:
        with self.lock:
            self._fail_next.extend([status] * count)

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def set_user_status(self, address: str, status: str, error: str = "") -> None:
        with self.lock:
            self._user(address)[1].forced = (status, error)

    def set_consistency(self, address: str, grade: str) -> None:
        """Give a user the grade it reports once synced (Investigate holds it at completion)."""
        assert grade in CONSISTENCY_GRADES, grade
        with self.lock:
            self._user(address)[1].consistency = grade

    def cmdlets_called(self, name: str | None = None) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if name is None or c.cmdlet == name]

    # Sign-in.

    def openid_configuration(self, tenant: str) -> tuple[int, dict]:
        if tenant.lower() not in {self.tenant_id.lower(), self.organization.lower()}:
            return 400, entra_error(
                "invalid_tenant",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            )
        root = f"{self.base_url}/{self.tenant_id}"
        return 200, {
            "issuer": f"{root}/v2.0",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{self.base_url}/{self.tenant_id}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "stand-in.invalid",
        }

    def issue_token(self, tenant: str, form: dict, basic: tuple[str, str] | None) -> tuple:
        status, config = self.openid_configuration(tenant)
        if status != 200:
            return status, config
        client_id = form.get("client_id") or (basic[0] if basic else "")
        if form.get("grant_type") != "client_credentials":
            return 400, entra_error(
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{form.get('grant_type')}'.",
            )
        if client_id != self.client_id:
            return 400, entra_error(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.organization}'. This can happen if the application has not been "
                "installed by the administrator of the tenant or consented to by any user in the "
                "tenant. You may have sent your authentication request to the wrong tenant.",
            )
        scope = form.get("scope", "")
        resource = scope.removesuffix("/.default")
        if not scope.endswith("/.default"):
            return 400, entra_error(
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        if resource not in {self.base_url, EXCHANGE_RESOURCE}:
            return 400, entra_error(
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named "
                f"{self.organization}. This can happen if the application has not been "
                "installed by the administrator of the tenant or consented to by any user in the "
                "tenant. You might have sent your authentication request to the wrong tenant.",
            )
        secret = form.get("client_secret") or (basic[1] if basic else "")
        if form.get("client_assertion"):
            problem = self._assertion_problem(form["client_assertion"], config["token_endpoint"])
            if problem:
                return 401, entra_error("invalid_client", 700027, problem)
        elif secret:
            if self.client_secret is None or not secrets.compare_digest(secret, self.client_secret):
                return 401, entra_error(
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request "
                    "is the client secret value, not the client secret ID, for a secret added to "
                    f"app '{self.client_id}'.",
                )
        else:
            return 400, entra_error(
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or "
                "'client_secret'.",
            )
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = time.time() + self.token_lifetime
            self.tokens_issued += 1
        log.info("%s issued a token to app %s", PREFIX, client_id)
        return 200, {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime,
            "access_token": token,
        }

    def _assertion_problem(self, assertion: str, audience: str) -> str:
        import jwt  # PyJWT, which msal depends on

        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return "The client assertion is not a valid JWT."
        wanted = {str(header.get(k)).rstrip("=") for k in ("x5t", "x5t#S256") if header.get(k)}
        for certificate, sha1, sha256 in self.certificates:
            if wanted & {sha1, sha256}:
                try:
                    jwt.decode(
                        assertion,
                        certificate.public_key(),
                        algorithms=["RS256", "PS256"],
                        audience=audience,
                        issuer=self.client_id,
                    )
                except jwt.PyJWTError as error:
                    return f"Client assertion failed signature validation. Reason: {error}."
                return ""
        return (
            "The certificate with identifier used to sign the client assertion is not registered "
            f"on application. [Reason - The key was not found., Thumbprint of key used by client: "
            f"'{header.get('x5t') or header.get('x5t#S256')}']"
        )

    # InvokeCommand.

    def invoke(self, token: str, headers: dict, body: dict, skiptoken: str | None) -> tuple:
        """(status, payload, extra headers) for one POST to InvokeCommand."""
        with self.lock:
            expires = self.tokens.get(token)
            if expires is None or expires < time.time():
                return 401, None, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            self.requests += 1
            cmdlet_input = (body or {}).get("CmdletInput") or {}
            cmdlet = str(cmdlet_input.get("CmdletName") or "")
            parameters = cmdlet_input.get("Parameters") or {}
            self.calls.append(Call(cmdlet, parameters, headers, skiptoken is not None))
            if self._throttle_next or (
                self.throttle_every and self.requests % self.throttle_every == 0
            ):
                self._throttle_next = max(0, self._throttle_next - 1)
                self.throttled += 1
                log.info("%s throttling %s (429, Retry-After %s)", PREFIX, cmdlet, self.retry_after)
                payload = {"error": {"code": "TooManyRequests", "message": "Too many requests."}}
                return 429, payload, {"Retry-After": f"{self.retry_after:g}"}  # body: made up
            if self._fail_next:
                status = self._fail_next.pop(0)
                payload = {"error": {"code": "ServiceUnavailable", "message": "Try again later."}}
                return status, payload, {}
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            crowded = self.max_concurrent and self.in_flight > self.max_concurrent
            if crowded:
                self.refused_concurrency += 1
        try:
            time.sleep(self.latency)
            if crowded:  # status and exception type: made up; the sentence is the guide's
                raise bad_request(
                    "Microsoft.Exchange.Management.Tasks.ThrottlingException",
                    "You have reached the maximum number of concurrent requests per tenant. "
                    "Please wait and try again.",
                )
            with self.lock:
                if skiptoken is not None:
                    rows, expires = self.pages.pop(skiptoken, (None, 0.0))
                    if rows is None or expires < time.time():
                        raise bad_request(  # made up
                            "System.ArgumentException", "The skip token is not valid or expired."
                        )
                else:
                    rows = self._run(cmdlet, parameters)
                size = min(self.page_size, _max_page_size(headers.get("prefer", "")))
                payload = {
                    "@odata.context": f"{self.base_url}/adminapi/beta/{self.tenant_id}/$metadata"
                    "#Collection(Exchange.GenericHashTable)",
                    "@adminapi.warnings": [],
                    "value": rows[:size],
                }
                if len(rows) > size:
                    key = secrets.token_urlsafe(16)
                    self.pages[key] = (rows[size:], time.time() + 300)
                    payload["@odata.nextLink"] = (
                        f"{self.base_url}/adminapi/beta/{self.tenant_id}/InvokeCommand"
                        f"?%24skiptoken={key}"
                    )
                return 200, payload, {}
        except CmdletError as error:
            log.info("%s %s refused: %s", PREFIX, cmdlet, error.text)
            return error.status, error.body(), {}
        finally:
            with self.lock:
                self.in_flight -= 1

    def _run(self, cmdlet: str, p: dict) -> list[dict]:
        now = time.time()
        if cmdlet == "New-MigrationBatch":
            return self._new_batch(p)
        if cmdlet == "Get-MigrationBatch":
            names = [p["Identity"]] if p.get("Identity") else list(self.batches)
            return [self._batch_row(self._batch(n), now) for n in names]
        if cmdlet == "Start-MigrationBatch":
            self._start(self._batch(p.get("Identity")), now)
            return []
        if cmdlet == "Stop-MigrationBatch":
            batch = self._batch(p.get("Identity"))
            for user in batch.users.values():
                if self._state(batch, user, now)[0] not in {"Completed", "Failed", "Completing"}:
                    user.stopped_at = user.stopped_at or now
            batch.stopped = True
            log.info("%s stopped migration batch %s", PREFIX, batch.name)
            return []
        if cmdlet == "Complete-MigrationBatch":
            batch = self._batch(p.get("Identity"))
            batch.complete_requested = batch.complete_requested or now
            log.info("%s completing migration batch %s", PREFIX, batch.name)
            return []
        if cmdlet == "Remove-MigrationBatch":
            # Microsoft: it removes a batch "that either isn't running or has been completed",
            # and with it every object of the batch (its users). The refusal's wording: made up.
            batch = self._batch(p.get("Identity"))
            status = self._batch_row(batch, now)["Status"]
            if status in {"Syncing", "Completing"}:
                raise bad_request(
                    "Microsoft.Exchange.Migration.MigrationBatchCannotBeRemovedException",
                    f"The migration batch '{batch.name}' can't be removed while it is {status}.",
                )
            del self.batches[batch.name]
            log.info("%s removed migration batch %s", PREFIX, batch.name)
            return []
        if cmdlet == "Get-MigrationUser":
            if p.get("Identity"):
                batch, user = self._user(p["Identity"])
                return [self._user_row(batch, user, now)]
            batches = [self._batch(p["BatchId"])] if p.get("BatchId") else self.batches.values()
            return [self._user_row(b, u, now) for b in batches for u in b.users.values()]
        if cmdlet == "Get-MigrationUserStatistics":
            batch, user = self._user(p.get("Identity") or "")
            return [self._statistics_row(batch, user, now)]
        if cmdlet == "Set-MigrationUser":
            batch, user = self._user(p.get("Identity") or "")
            unknown = set(p) - {"Identity", "ApproveSkippedItems", "Confirm"}
            if unknown:  # PowerShell's wording; that the stand-in takes no more: its own limit
                raise bad_request(
                    "System.Management.Automation.ParameterBindingException",
                    f"A parameter cannot be found that matches parameter name '{min(unknown)}'.",
                )
            if p.get("ApproveSkippedItems") is True:
                user.approved_at = user.approved_at or now
                log.info("%s approved the skipped items of %s", PREFIX, user.address)
            return []
        if cmdlet == "Get-MigrationEndpoint":
            if p.get("Identity") not in (None, self.source_endpoint):
                raise not_found(str(p["Identity"]))
            return [
                {  # property names from PowerShell's output; the values: made up
                    "Identity": self.source_endpoint,
                    "EndpointType": "ExchangeRemoteMove",
                    "RemoteServer": "mail.nhs.net",
                    "MaxConcurrentMigrations": 100,
                    "MaxConcurrentIncrementalSyncs": 20,
                }
            ]
        if cmdlet == "Get-Recipient":
            if p.get("Identity"):
                row = self._recipient_row(str(p["Identity"]), now)
                if row is None:
                    raise not_found(str(p["Identity"]))
                return [row]
            rows = [self._recipient_row(a, now) for a in _filter_addresses(p.get("Filter"))]
            return [row for row in rows if row][: int(p.get("ResultSize") or 1000)]
        if cmdlet == "Remove-MigrationUser":
            batch, user = self._user(p.get("Identity") or "")
            del batch.users[user.address.lower()]
            log.info("%s removed %s from migration batch %s", PREFIX, user.address, batch.name)
            return []
        raise _Forbidden(cmdlet)

    def _new_batch(self, p: dict) -> list[dict]:
        name = str(p.get("Name") or "")
        if not name:
            raise bad_request(
                "System.Management.Automation.ParameterBindingException",
                "Cannot process command because of one or more missing mandatory parameters: Name.",
            )
        if name in self.batches:  # exception type and wording: made up
            raise bad_request(
                "Microsoft.Exchange.Migration.MigrationBatchAlreadyExistsException",
                f"A migration batch with the name '{name}' already exists.",
            )
        if len(self.batches) >= self.max_batches:  # wording from Microsoft's blog post
            raise bad_request(
                "Microsoft.Exchange.Migration.MaximumNumberOfBatchesReachedException",
                "The maximum number of migration batches is already running. Please remove a "
                "batch before you add another one.",
            )
        if p.get("SourceEndpoint") != self.source_endpoint:
            raise not_found(str(p.get("SourceEndpoint")))
        if not p.get("TargetDeliveryDomain"):
            raise bad_request(
                "Microsoft.Exchange.Migration.MigrationPermanentException",
                "The TargetDeliveryDomain parameter is required for this migration type.",
            )
        try:
            lines = base64.b64decode(str(p.get("CSVData") or ""), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise bad_request("System.FormatException", "CSVData is not valid base64.") from None
        rows = [line.split(",")[0].strip() for line in lines.splitlines() if line.strip()]
        if not rows or rows[0] != "EmailAddress":
            raise bad_request(
                "Microsoft.Exchange.Migration.MigrationCSVParsingException",
                "The CSV file must have a header row whose first column is EmailAddress.",
            )
        for address in rows[1:]:
            taken = next((b for b in self.batches.values() if address.lower() in b.users), None)
            if taken:  # made up: the "already exists" that is not about the batch itself
                raise bad_request(
                    "Microsoft.Exchange.Migration.MigrationUserAlreadyExistsException",
                    f"User '{address}' already exists in migration batch '{taken.name}'.",
                )
        users = {}
        for address in rows[1:]:
            size = (zlib.crc32(address.lower().encode()) % 400 + 50) * 1024**2
            users[address.lower()] = User(
                address,
                size,
                size // (75 * 1024),
                self.failures.get(address.lower(), 0),
                self.consistency.get(address.lower(), "Perfect"),
            )
        self.batches[name] = Batch(
            name,
            users,
            dict(p),
            start_after=_when(p.get("StartAfter")),
            complete_after=_when(p.get("CompleteAfter")),
        )
        log.info("%s created migration batch %s with %d users", PREFIX, name, len(users))
        return [self._batch_row(self.batches[name], time.time())]

    def _start(self, batch: Batch, now: float) -> None:
        for user in batch.users.values():
            status = self._state(batch, user, now)[0]
            if user.started is None:
                user.started = now
            elif status == "Failed":
                user.attempt, user.started = user.attempt + 1, now
            elif user.stopped_at is not None:
                user.started += now - user.stopped_at
            user.stopped_at = None
        batch.started, batch.stopped = True, False
        log.info("%s started migration batch %s", PREFIX, batch.name)

    def _state(self, batch: Batch, user: User, now: float) -> tuple[str, float, str]:
        """(status, fraction copied, error) of a user at wall-clock `now`."""
        if user.forced:
            return user.forced[0], 0.5, user.forced[1]
        if user.started is None:
            return "Queued", 0.0, ""
        begin = max(user.started, batch.start_after or 0.0)
        elapsed = max(0.0, (user.stopped_at or now) - begin) * self.time_scale
        if elapsed < self.queue_seconds:
            return ("Stopped" if user.stopped_at else "Queued"), 0.0, ""
        copied = min(1.0, (elapsed - self.queue_seconds) / self.sync_seconds)
        if user.attempt <= user.failures and copied >= 0.5:
            return "Failed", 0.5, FAILURE_TEXT
        if user.stopped_at:
            return "Stopped", copied, ""
        if copied < 1.0:
            return "Syncing", copied, ""
        complete = batch.complete_requested
        if complete is None and batch.complete_after is not None and now >= batch.complete_after:
            complete = batch.complete_after
        if complete is None:
            return "Synced", 1.0, ""
        synced_at = begin + (self.queue_seconds + self.sync_seconds) / self.time_scale
        completion_starts = max(complete, synced_at)
        if user.consistency in NEEDS_APPROVAL:
            if user.approved_at is None:
                return "Synced", 1.0, ""  # held for approval; the status reported: made up
            completion_starts = max(completion_starts, user.approved_at)
        if now < completion_starts + self.completion_seconds / self.time_scale:
            return "Completing", 1.0, ""
        return "Completed", 1.0, ""

    def _grade(self, user: User, copied: float) -> str:
        """Perfect until synced, then the user's own grade (when Exchange grades: made up); a
        user made to report a status (`set_user_status`) reports its own grade with it."""
        return user.consistency if copied >= 1.0 or user.forced else "Perfect"

    def _batch(self, name) -> Batch:
        if name not in self.batches:
            raise not_found(str(name))
        return self.batches[name]

    def _user(self, address: str) -> tuple[Batch, User]:
        for batch in self.batches.values():
            if address.lower() in batch.users:
                return batch, batch.users[address.lower()]
        raise not_found(address)

    def _batch_row(self, batch: Batch, now: float) -> dict:
        states = [self._state(batch, u, now)[0] for u in batch.users.values()]
        failed = sum(SUMMARY.get(s) == "Failed" for s in states)
        if not batch.started:
            status = "Created"
        elif batch.stopped:
            status = "Stopped"
        elif states and all(SUMMARY.get(s) in {"Completed", "Failed"} for s in states):
            status = "CompletedWithErrors" if failed else "Completed"
        elif "Completing" in states:
            status = "Completing"
        elif states and all(SUMMARY.get(s) in {"Synced", "Failed"} for s in states):
            status = "SyncedWithErrors" if failed else "Synced"
        else:
            status = "Syncing"
        return {
            "Identity": batch.name,
            "Status": status,
            "TotalCount": len(states),
            "SyncedCount": sum(SUMMARY.get(s) == "Synced" for s in states),
            "FinalizedCount": sum(SUMMARY.get(s) == "Completed" for s in states),
            "FailedCount": failed,
            "SourceEndpoint": batch.parameters.get("SourceEndpoint"),
            "TargetDeliveryDomain": batch.parameters.get("TargetDeliveryDomain"),
            "StartAfter": batch.parameters.get("StartAfter"),
            "CompleteAfter": batch.parameters.get("CompleteAfter"),
            "CreationDateTime": batch.created.isoformat(),
        }

    def _user_row(self, batch: Batch, user: User, now: float) -> dict:
        status, copied, error = self._state(batch, user, now)
        return {
            "Identity": user.address,
            "MailboxEmailAddress": user.address,
            "BatchId": batch.name,
            "Status": status,
            "StatusSummary": SUMMARY.get(status, "Active"),
            "SyncedItemCount": int(user.items * copied),
            "SkippedItemCount": self._skipped(user, copied),
            "DataConsistencyScore": self._grade(user, copied),
            "ErrorSummary": error.split(". ")[0].rstrip(".") + "." if error else "",  # made up
        }

    def _skipped(self, user: User, copied: float) -> int:
        """A few skipped items for a user graded below Good (numbers made up)."""
        grade = self._grade(user, copied)
        return {"Good": 1, "Investigate": 12, "Poor": 480}.get(grade, 0)

    def _statistics_row(self, batch: Batch, user: User, now: float) -> dict:
        status, copied, error = self._state(batch, user, now)
        done = int(user.size * copied)
        return {
            "Identity": user.address,
            "Status": status,
            "BytesTransferred": f"{done / 1024**2:.1f} MB ({done:,} bytes)",
            "EstimatedTotalTransferSize": f"{user.size / 1024**2:.1f} MB ({user.size:,} bytes)",
            "SyncedItemCount": int(user.items * copied),
            "TotalItemsInSourceMailboxCount": user.items,
            "PercentageComplete": int(copied * 100),
            "SkippedItemCount": self._skipped(user, copied),
            "DataConsistencyScore": self._grade(user, copied),
            "Error": error,
        }

    def _recipient_row(self, address: str, now: float) -> dict | None:
        """Get-Recipient's row for an address (property names from PowerShell's output)."""
        if address.lower() in self.absent_recipients:
            return None
        kind = "MailUser"
        for batch in self.batches.values():
            user = batch.users.get(address.lower())
            if user and self._state(batch, user, now)[0] in {"Completed", "CompletedWithWarnings"}:
                kind = "UserMailbox"
        return {
            "Identity": address.split("@")[0],
            "Name": address.split("@")[0],
            "PrimarySmtpAddress": address,
            "RecipientType": kind,
            "RecipientTypeDetails": kind,
            "EmailAddresses": [f"SMTP:{address}"],
        }


class _Forbidden(Exception):
    """An unknown cmdlet: Exchange answers 403 with an empty body (guide)."""


def _filter_addresses(opath) -> list[str]:
    """The addresses of a filter such as "(EmailAddresses -eq 'smtp:a') -or (...)"; nothing else
    is understood (the error for anything else: made up)."""
    text = str(opath or "")
    clause = r"\(?\s*EmailAddresses\s+-eq\s+'((?:[^']|'')*)'\s*\)?"
    if not re.fullmatch(rf"\s*{clause}(\s+-or\s+{clause})*\s*", text, re.IGNORECASE):
        raise bad_request(
            "Microsoft.Exchange.Management.Tasks.ThrowTerminatingErrorException",
            f"The stand-in can't read the filter {text!r}: it reads only EmailAddresses -eq "
            "comparisons joined by -or.",
        )
    values = [v.replace("''", "'") for v in re.findall(clause, text, re.IGNORECASE)]
    return [v.split(":", 1)[1] if v.lower().startswith("smtp:") else v for v in values]


def _when(value) -> float | None:
    if not value:
        return None
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:  # "CompleteAfter is in UTC unless a zone is given"
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _max_page_size(prefer: str) -> int:
    found = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer)
    return max(1, int(found.group(1))) if found else 1000


def _load_certificate(pem: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    certificate = x509.load_pem_x509_certificate(pem.encode())

    def b64(digest: bytes) -> str:
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    sha1 = b64(certificate.fingerprint(hashes.SHA1()))  # noqa: S303 - the x5t header is SHA-1
    return certificate, sha1, b64(certificate.fingerprint(hashes.SHA256()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections close
    server: "StandinServer"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", PREFIX, format % args)

    def _send(self, status: int, payload=None, headers: dict | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        found = re.fullmatch(r"/([^/]+)/v2\.0/\.well-known/openid-configuration", self.path)
        if not found:
            return self._send(404, {"error": "not_found"})
        self._send(*self.server.standin.openid_configuration(found.group(1)))

    def do_POST(self) -> None:  # noqa: N802
        standin = self.server.standin
        parts = urlsplit(self.path)
        body = self._body()
        token_path = re.fullmatch(r"/([^/]+)/oauth2/v2\.0/token", parts.path)
        if token_path:
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            basic = None
            authorization = self.headers.get("Authorization", "")
            if authorization.startswith("Basic "):
                user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
                basic = (user, password)
            return self._send(*standin.issue_token(token_path.group(1), form, basic))
        invoke_path = re.fullmatch(r"/adminapi/beta/([^/]+)/InvokeCommand", parts.path)
        if not invoke_path or invoke_path.group(1) not in {standin.tenant_id, standin.organization}:
            return self._send(404, {"error": {"code": "NotFound", "message": "No such endpoint"}})
        authorization = self.headers.get("Authorization", "")
        token = authorization[7:] if authorization.startswith("Bearer ") else ""
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return self._send(400, {"error": {"code": "BadRequest", "message": "Invalid JSON"}})
        headers = {
            name.lower(): self.headers.get(name, "")
            for name in ("X-AnchorMailbox", "Prefer", "client-request-id", "Content-Type")
        }
        skiptoken = parse_qs(parts.query).get("$skiptoken", [None])[0]
        try:
            status, payload, extra = standin.invoke(token, headers, payload, skiptoken)
        except _Forbidden as cmdlet:
            log.info("%s unknown cmdlet %s: 403", PREFIX, cmdlet)
            return self._send(403)
        self._send(status, payload, extra)


class StandinServer(ThreadingHTTPServer):
    """The stand-in on a loopback port, serving HTTPS from its own throwaway CA."""

    daemon_threads = True

    def __init__(self, port: int, standin: ExchangeOnlineStandin):
        super().__init__(("127.0.0.1", port), _Handler)
        self.standin = standin
        self.ca_file, cert_file, key_file = _tls_files()
        self.ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl_context.load_cert_chain(cert_file, key_file)
        self.url = f"https://127.0.0.1:{self.server_address[1]}"
        standin.base_url = self.url

    def finish_request(self, request, client_address) -> None:
        try:  # the TLS handshake happens here, in the connection's own thread
            connection = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(connection, client_address, self)
        finally:
            connection.close()

    def portal_settings(self, **overrides) -> dict:
        """settings.EXCHANGE_ONLINE for a portal that talks to this stand-in."""
        return {
            "tenant_id": self.standin.tenant_id,
            "client_id": self.standin.client_id,
            "client_secret": self.standin.client_secret or "",
            "certificate_file": "",
            "certificate_thumbprint": "",
            "authority": f"{self.url}/{self.standin.tenant_id}",
            "base_url": self.url,
            "organization": self.standin.organization,
            "source_endpoint": self.standin.source_endpoint,
            "target_delivery_domain": TARGET_DELIVERY_DOMAIN,
            "max_parallel_calls": 4,
            "time_zone": "Europe/London",
            "ca_bundle": self.ca_file,
            **overrides,
        }

    def portal_environment(self) -> dict[str, str]:
        """The environment variables that point a portal (web server or worker) at the stand-in.

        Exactly those the portal needs: the backend, the tenant's identity as the stand-in makes
        it up, and the three that lead to the stand-in rather than to Microsoft (authority, base
        URL, CA bundle).
        """
        settings = self.portal_settings()
        names = [
            "tenant_id",
            "client_id",
            "client_secret",
            "organization",
            "source_endpoint",
            "target_delivery_domain",
            "authority",
            "base_url",
            "ca_bundle",
        ]
        return {"PORTAL_MIGRATION_BACKEND": "exchange_online"} | {
            f"PORTAL_EXCHANGE_{name.upper()}": str(settings[name]) for name in names
        }

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        log.info("%s stopped at %s", PREFIX, self.url)


def start_standin(port: int = 0, **options) -> tuple[str, StandinServer]:
    """Start the stand-in in a background thread; returns its URL and the server."""
    server = StandinServer(port, ExchangeOnlineStandin(**options))
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="standin-exo", daemon=True
    ).start()
    log.info("%s listening at %s (tenant %s)", PREFIX, server.url, server.standin.tenant_id)
    return server.url, server


_TLS: tuple[str, str, str] | None = None
_TLS_LOCK = threading.Lock()


def _tls_files() -> tuple[str, str, str]:
    """(CA file, certificate file, key file) for 127.0.0.1, made once per process."""
    global _TLS
    with _TLS_LOCK:
        if _TLS is None:
            _TLS = _make_tls_files()
        return _TLS


def _make_tls_files() -> tuple[str, str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(
                NameOID.COMMON_NAME, "Stand-in Exchange Online test CA (not Microsoft)"
            )
        ]
    )
    usage = dict.fromkeys(
        [
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "encipher_only",
            "decipher_only",
        ],
        False,
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder = tempfile.mkdtemp(prefix="standin-exchange-online-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    files = {
        "ca.pem": ca.public_bytes(serialization.Encoding.PEM),
        "server.pem": leaf.public_bytes(serialization.Encoding.PEM),
        "server.key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    }
    for name, data in files.items():
        with open(f"{folder}/{name}", "wb") as out:
            out.write(data)
    return f"{folder}/ca.pem", f"{folder}/server.pem", f"{folder}/server.key"


def _anchor(organization: str) -> str:
    return f"APP:SystemMailbox{{{ANCHOR_GUID}}}@{organization}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m standins.exchange_online",
        description="A local STAND-IN for Exchange Online and its sign-in service (not Microsoft's).",
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--time-scale", type=float, default=60.0)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--throttle-every", type=int, default=0, help="429 every Nth call")
    parser.add_argument("--retry-after", type=float, default=1)
    parser.add_argument("--max-concurrent", type=int, default=0)
    parser.add_argument("--max-batches", type=int, default=100)
    parser.add_argument("--client-secret", default=CLIENT_SECRET)
    parser.add_argument(
        "--investigate",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="grade this user's move Investigate, so it waits for approval (repeatable)",
    )
    parser.add_argument(
        "--env-file", help="also write the portal's settings to this file, for `set -a; . FILE`"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    url, server = start_standin(
        args.port,
        time_scale=args.time_scale,
        page_size=args.page_size,
        throttle_every=args.throttle_every,
        retry_after=args.retry_after,
        max_concurrent=args.max_concurrent,
        max_batches=args.max_batches,
        client_secret=args.client_secret,
        consistency=dict.fromkeys(args.investigate, "Investigate"),
    )
    lines = [f"{name}={shlex.quote(value)}" for name, value in server.portal_environment().items()]
    print(f"{PREFIX} running at {url}. Point the portal at it with:\n")
    print("\n".join(lines))
    if args.env_file:
        path = Path(args.env_file)
        path.touch(mode=0o600)  # it holds the stand-in's client secret
        path.write_text("\n".join(lines) + "\n")
        print(f"\n{PREFIX} the same settings are in {path}: set -a; . {shlex.quote(str(path))}")
    print(f"\n{PREFIX} the portal will anchor calls to {_anchor(server.standin.organization)}")
    sys.stdout.flush()
    # SIGTERM as Ctrl-C: stop cleanly, so that the throwaway CA's folder is removed at exit.
    # Python runs signal handlers in the main thread only, and the kernel may hand the signal to
    # the server's thread: a main thread blocked for good (waiting on an event) would then never
    # run the handler. Short sleeps let it run within a fraction of a second either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            time.sleep(0.2)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
