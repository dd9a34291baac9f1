"""Bulk import of organisations and mailboxes from the CSV files the central team receives.

    organisations_import(stream, skip_bad_rows=...)   OrganisationCode, Name, Type, Region, ParentCode
    mailboxes_import(stream, skip_bad_rows=...)       PrimarySmtpAddress, UserPrincipalName,
        DisplayName, RecipientTypeDetails, TotalItemSizeBytes, ItemCount, OrganisationCode

Header names are matched case-insensitively, in any order; other columns are ignored; a UTF-8
byte order mark is allowed. The file is read as a stream, one row at a time, and every row is
checked. An import is atomic: if any row is bad, nothing is written and the report lists every
bad row (line, column, value, reason), unless `skip_bad_rows`, in which case the good rows are
imported and the report lists what was skipped. It is idempotent: a row whose mailbox (by
address) or organisation (by code) exists updates what changed and nothing else; an import
never deletes, and never changes a mailbox's migration status.

On PostgreSQL the checked mailbox rows are streamed with COPY into a staging table, checked
there for what needs the whole file or the database (duplicates in the file, a UPN that belongs
to another mailbox), and merged with one INSERT … ON CONFLICT statement; a bulk load (the first
national load) drops the table's indexes and builds them again after, and when the table is
empty writes the rows in (organisation, address) order. On SQLite, the embedded default, they go in batches
through `bulk_create(update_conflicts=True)`.

In the background: the pages and the API save an upload (`upload_save`), then
`import_run_start` records an `ImportRun` and queues `mailboxes.tasks.run_import`, which calls
`import_run_execute`.
"""

import csv
import fcntl
import io
import logging
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path, PurePath
from typing import IO, NamedTuple

from django.conf import settings
from django.core.files.move import file_move_safe
from django.db import (
    DEFAULT_DB_ALIAS,
    IntegrityError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.utils import timezone
from django.utils.text import get_valid_filename

from mailboxes.models import (
    ImportKind,
    ImportRun,
    ImportRunEvent,
    ImportStatus,
    Mailbox,
    MailboxStatus,
    Organisation,
    OrganisationType,
    RecipientType,
)
from mailboxes.services import import_run_transition
from portal.lib.transitions import actor_fields

logger = logging.getLogger(__name__)

PROBLEMS_KEPT = 10_000  # kept in memory, in line order; every problem is still counted
PROBLEMS_SHOWN = 1_000  # printed by the commands and stored on an ImportRun
PROGRESS_EVERY = 20_000  # rows between progress reports
SQLITE_CHUNK = 2_000  # rows per bulk_create: below SQLite's limit on query parameters
TASK_TIMEOUT = 3 * 60 * 60  # seconds; a full national file takes minutes, not hours
# The class of the advisory lock a worker holds on PostgreSQL while it runs an import, keyed
# (IMPORT_RUN_LOCK, run id); no other lock in the portal uses it.
IMPORT_RUN_LOCK = 7301
MAX_BIGINT = 2**63 - 1
VALUE_SHOWN = 100  # characters of a bad value repeated in the report

Progress = Callable[[int], None]


class Problem(NamedTuple):
    """One thing wrong with one row: where, what, and why."""

    line: int
    column: str
    value: str
    reason: str

    def as_dict(self) -> dict:
        return self._asdict()

    def __str__(self) -> str:
        shown = f'"{self.value}"' if self.value else "(empty)"
        return f"line {self.line}, {self.column} {shown}: {self.reason}"


@dataclass
class ImportReport:
    """What an import did, or why it refused the file."""

    kind: str
    skip_bad_rows: bool = False
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    bad_rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    error: str = ""  # why the whole file was refused (encoding, header, no rows)
    refused: bool = False
    seconds: float = 0.0

    @property
    def summary(self) -> str:
        return (
            f"Rows read {self.rows_read:,}: created {self.created:,}, updated {self.updated:,}, "
            f"unchanged {self.unchanged:,}, skipped {self.skipped:,}; {self.seconds:.1f} s."
        )

    def text(self, limit: int = PROBLEMS_SHOWN) -> str:
        """The report for a person: the verdict, each problem (up to `limit`), the counts."""
        lines = []
        if self.error:
            lines.append(f"Refused: {self.error}. Nothing was changed.")
        elif self.refused:
            lines.append(
                f"Refused: {_plural(self.bad_rows, 'bad row')}. Nothing was changed. "
                "Correct the rows below and import the file again."
            )
        elif self.skipped:
            lines.append(f"Skipped {_plural(self.skipped, 'bad row')}:")
        lines.extend(f"  {problem}" for problem in self.problems[:limit])
        hidden = self.problem_count - min(limit, len(self.problems))
        if hidden > 0:
            lines.append(f"  … and {_plural(hidden, 'more problem')} not listed.")
        lines.append(self.summary)
        return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


class FileRefused(Exception):
    """The file as a whole cannot be imported: not UTF-8, not CSV, a required column missing."""


class _Problems:
    """The problems found so far: all counted, the first PROBLEMS_KEPT kept, bad lines counted."""

    def __init__(self) -> None:
        self.kept: list[Problem] = []
        self.count = 0
        self.bad_lines = 0

    def add(self, line: int, column: str, value: str, reason: str) -> None:
        self.count += 1
        if len(self.kept) < PROBLEMS_KEPT:
            if len(value) > VALUE_SHOWN:
                value = value[:VALUE_SHOWN] + "…"
            self.kept.append(Problem(line, column, value, reason))

    def finish(self, report: ImportReport, more: Iterable[Problem] = (), more_count: int = 0):
        """Copy into the report, merged in line order with problems found later in SQL."""
        report.problems = sorted([*self.kept, *more], key=lambda p: p.line)[:PROBLEMS_KEPT]
        report.problem_count = self.count + more_count


# Reading ---------------------------------------------------------------------------------------


def _text_lines(stream: Iterable[bytes] | Iterable[str]) -> Iterator[str]:
    """The stream's lines as text, checking each is UTF-8 so a bad byte is reported by line."""
    for number, raw in enumerate(stream, 1):
        if isinstance(raw, str):
            line = raw
        else:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise FileRefused(_not_utf8(number, raw, error)) from None
        if number == 1:
            line = line.removeprefix("\ufeff")
        yield line


def _not_utf8(number: int, raw: bytes, error: UnicodeDecodeError) -> str:
    if number == 1 and raw[:2] in {b"\xff\xfe", b"\xfe\xff"}:
        found = "it looks like UTF-16"
    else:
        found = (
            f"line {number} has the byte 0x{raw[error.start]:02x} (byte {error.start + 1} of the"
            " line), which is not UTF-8"
        )
    return (
        f"the file is not UTF-8 text: {found}. Save it as UTF-8 "
        "(in Excel, 'CSV UTF-8') and import it again"
    )


def _seekable(stream) -> bool:
    try:
        return isinstance(stream, io.IOBase) and stream.seekable()
    except (OSError, ValueError):
        return False


class _Columns(NamedTuple):
    name: str  # as the report shows it
    key: str  # in the row dictionary
    required: bool
    aliases: tuple[str, ...] = ()


class _Rows:
    """The data rows of a CSV stream, each with the line it starts on.

    The header is read when the object is made; a missing required column, a repeated column or
    an empty file raises FileRefused, as does a byte that is not UTF-8 or broken quoting later.
    Rows shorter than the header are padded with empty values; blank lines are passed over.

    A binary file is decoded by an `io.TextIOWrapper` (in C, a block at a time); only when it
    meets a byte that is not UTF-8 is the file read again line by line, to say which line. Call
    `close()` when done: it lets go of the file without closing it.
    """

    def __init__(self, stream, columns: Iterable[_Columns]) -> None:
        self._text: io.TextIOWrapper | None = None
        try:
            self._read_header(stream, list(columns))
        except BaseException:
            self.close()
            raise

    def _read_header(self, stream, columns: list[_Columns]) -> None:
        self._stream = stream
        self._start = stream.tell() if _seekable(stream) else None
        if isinstance(stream, io.BufferedIOBase):
            # newline="\n": lines end at \n only, as when a binary file is read line by line.
            self._text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="\n")
            self.reader = csv.reader(self._text)
        else:
            self.reader = csv.reader(_text_lines(stream))
        try:
            header = next(self.reader, None)
        except csv.Error as error:
            raise FileRefused(f"the file is not CSV: line 1: {error}") from None
        except UnicodeDecodeError as error:
            raise self.not_utf8(error) from None
        if not header or not any(cell.strip() for cell in header):
            raise FileRefused("the file is empty: it has no header row")
        wanted = {}
        for column in columns:
            for name in (column.name, *column.aliases):
                wanted[_header_key(name)] = column
        self.index: dict[str, int] = {}
        self.present: set[str] = set()
        for position, cell in enumerate(header):
            column = wanted.get(_header_key(cell))
            if column is None:
                continue
            if column.key in self.index:
                raise FileRefused(f"the column {column.name} appears more than once in the header")
            self.index[column.key] = position
            self.present.add(column.key)
        missing = [c.name for c in columns if c.required and c.key not in self.index]
        if missing:
            found = ", ".join(cell.strip() for cell in header if cell.strip())
            raise FileRefused(
                f"required column{'s' if len(missing) > 1 else ''} missing: {', '.join(missing)} "
                f"(the header has: {found})"
            )
        self.width = max(self.index.values()) + 1
        self.rows_read = 0

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        reader, width = self.reader, self.width
        line = reader.line_num + 1
        try:
            for record in reader:
                start, line = line, reader.line_num + 1
                if len(record) < width:
                    if not record or (len(record) == 1 and not record[0].strip()):
                        continue
                    record.extend([""] * (width - len(record)))
                self.rows_read += 1
                yield start, record
        except csv.Error as error:
            raise FileRefused(f"the file is not CSV: line {reader.line_num}: {error}") from None
        except UnicodeDecodeError as error:
            raise self.not_utf8(error) from None

    def not_utf8(self, error: UnicodeDecodeError) -> FileRefused:
        """The refusal for a byte that is not UTF-8: the file is read again to find its line."""
        if self._start is not None:
            self.close()
            self._stream.seek(self._start)
            for number, raw in enumerate(self._stream, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as line_error:
                    return FileRefused(_not_utf8(number, raw, line_error))
        return FileRefused(
            f"the file is not UTF-8 text: {error.reason} at byte {error.start + 1} of a block."
            " Save it as UTF-8 (in Excel, 'CSV UTF-8') and import it again"
        )

    def close(self) -> None:
        """Let go of the stream, which stays open for its owner (a wrapper would close it)."""
        if self._text is not None:
            text, self._text = self._text, None
            text.detach()


def _header_key(name: str) -> str:
    return "".join(name.split()).lower()


# The shape of an address: local part, @, dot-separated domain labels and a top-level domain.
# Possessive quantifiers keep it fast: it runs twice on each of 2 million rows.
_EMAIL_LOCAL = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]"
_EMAIL = re.compile(
    rf"{_EMAIL_LOCAL}++(?:\.{_EMAIL_LOCAL}++)*+@(?:[a-z0-9-]++\.)++[a-z]{{2,63}}", re.ASCII
).fullmatch
_EXCHANGE_SIZE = re.compile(r"\(([\d,]+) bytes\)\s*$").search  # "1.2 GB (1,288,490,189 bytes)"


def _email_problem(value: str) -> str | None:
    if not value:
        return "is empty"
    if len(value) > 254:
        return "is longer than 254 characters"
    if not _EMAIL(value):
        return "is not a valid email address"
    return None


def _count(value: str) -> int:
    """A whole number of bytes or items, or ValueError saying why not."""
    value = value.strip()
    if not value:
        raise ValueError("is empty")
    if value.isascii() and value.isdigit():
        number = int(value)
    elif value[0] == "-" and value[1:].strip().replace(",", "").isdigit():
        raise ValueError("must not be negative")
    elif (exchange := _EXCHANGE_SIZE(value)) is not None:
        number = int(exchange.group(1).replace(",", ""))
    else:
        raise ValueError("is not a whole number")
    if number > MAX_BIGINT:
        raise ValueError("is too large")
    return number


# Mailboxes -------------------------------------------------------------------------------------

MAILBOX_COLUMNS = (
    _Columns("PrimarySmtpAddress", "address", True),
    _Columns("UserPrincipalName", "upn", True),
    _Columns("DisplayName", "display_name", True),
    _Columns("RecipientTypeDetails", "recipient_type", True),
    _Columns("TotalItemSizeBytes", "size_bytes", True, ("TotalItemSize",)),
    _Columns("ItemCount", "item_count", True),
    _Columns("OrganisationCode", "organisation", True, ("OrganizationCode",)),
)
_COLUMN_NAME = {c.key: c.name for c in MAILBOX_COLUMNS}
RECIPIENT_TYPES = {value.lower(): value for value in RecipientType.values}
_DISPLAY_NAME_LENGTH = Mailbox._meta.get_field("display_name").max_length

# The fields an import writes, in staging/row order after the line number.
_MAILBOX_FIELDS = (
    "address",
    "upn",
    "display_name",
    "recipient_type",
    "size_bytes",
    "item_count",
    "organisation_id",
)
_UPDATED_FIELDS = _MAILBOX_FIELDS[1:]
# The cells a row is read from, in the same order.
_CELL_KEYS = (*_MAILBOX_FIELDS[:-1], "organisation")

MailboxRow = tuple[int, str, str, str, str, int, int, int]  # line, then _MAILBOX_FIELDS


def mailboxes_import(
    stream: IO[bytes] | Iterable[bytes] | Iterable[str],
    *,
    skip_bad_rows: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import an Exchange mailbox export; see the module docstring. Never raises for bad input."""
    report = ImportReport(kind=ImportKind.MAILBOXES, skip_bad_rows=skip_bad_rows)
    started = time.monotonic()
    load = _mailboxes_load_postgres if connection.vendor == "postgresql" else _mailboxes_load_orm
    try:
        with transaction.atomic():
            org_ids = {
                code.upper(): pk for code, pk in Organisation.objects.values_list("code", "pk")
            }
            load(stream, org_ids, report, skip_bad_rows, progress)
            if report.rows_read == 0:
                raise FileRefused("the file has no data rows, only a header")
            if report.bad_rows and not skip_bad_rows:
                report.refused = True
                report.created = report.updated = report.unchanged = 0
                transaction.set_rollback(True)
            else:
                report.skipped = report.bad_rows
    except FileRefused as refusal:
        report.error = str(refusal)
        report.refused = True
        report.created = report.updated = report.unchanged = report.skipped = 0
    report.seconds = time.monotonic() - started
    if progress and not report.refused:
        progress(report.rows_read)
    return report


def _mailbox_rows(
    rows: _Rows,
    org_ids: dict[str, int],
    problems: _Problems,
    progress: Progress | None,
    *,
    line_offset: int = 0,
    stop_at_problem: bool = False,
) -> Iterator[tuple]:
    """Each row that passes the checks one row can make, ready to write; problems recorded.

    A row is (line, *_MAILBOX_FIELDS), the line plus `line_offset` if that is given (a direct
    load makes its ids from the lines: unique, increasing, and free to compute). With
    `stop_at_problem` reading stops at the first bad row (a direct load then starts again, through
    staging). `rows.rows_read` is kept.

    This runs once for each of millions of rows, so it does as little as it can: one C call
    takes the seven cells, spellings of a type or organisation code seen before are looked up
    as they are, and any doubt takes the careful path of `_mailbox_row_checked`.
    """
    reader, width, index = rows.reader, rows.width, rows.index
    cells = itemgetter(*(index[key] for key in _CELL_KEYS))
    types: dict[str, str] = {}  # each spelling seen in the file, to its recipient type
    orgs: dict[str, int] = {}  # each spelling seen in the file, to its organisation's id
    email, name_length = _EMAIL, _DISPLAY_NAME_LENGTH
    every = PROGRESS_EVERY if progress is not None else 0
    next_report = every or -1
    count = 0
    end = reader.line_num  # the line the last record ended on
    try:
        for record in reader:
            line, end = end + 1, reader.line_num
            if len(record) < width:
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue
                record.extend([""] * (width - len(record)))
            count += 1
            if count == next_report:
                progress(count)
                next_report += every
            address, upn, name, kind, size, items, code = cells(record)
            # An address with spaces around it fails the pattern and goes the careful way,
            # which strips them: so here lower() alone gives what strip().lower() would.
            address, upn, name = address.lower(), upn.lower(), name.strip()
            recipient_type = types.get(kind)
            if recipient_type is None:
                recipient_type = RECIPIENT_TYPES.get(kind.strip().lower())
                if recipient_type is not None:
                    types[kind] = recipient_type
            org_id = orgs.get(code)
            if org_id is None:
                org_id = org_ids.get(code.strip().upper())
                if org_id is not None:
                    orgs[code] = org_id
            if (
                recipient_type is not None
                and org_id is not None
                and size.isdigit()
                and items.isdigit()
                and size.isascii()
                and items.isascii()
                and len(size) < 19
                and len(items) < 19
                and 0 < len(name) <= name_length
                and "\x00" not in name
                and len(address) <= 254
                and len(upn) <= 254
                and email(address)
                and email(upn)
            ):
                line += line_offset
                yield line, address, upn, name, recipient_type, int(size), int(items), org_id
                continue
            row = _mailbox_row_checked(line, record, index, org_ids, problems)
            if row is not None:
                yield (row[0] + line_offset, *row[1:]) if line_offset else row
            elif stop_at_problem:
                return
    except csv.Error as error:
        raise FileRefused(f"the file is not CSV: line {reader.line_num}: {error}") from None
    except UnicodeDecodeError as error:
        raise rows.not_utf8(error) from None
    finally:
        rows.rows_read = count


def _mailbox_row_checked(
    line: int, record: list[str], index: dict[str, int], org_ids: dict[str, int], problems
) -> MailboxRow | None:
    """Every check on one row, each failure recorded; the row if it passes after all."""
    before = problems.count

    def bad(key: str, reason: str) -> None:
        problems.add(line, _COLUMN_NAME[key], record[index[key]], reason)

    address = record[index["address"]].strip().lower()
    if reason := _email_problem(address):
        bad("address", reason)
    upn = record[index["upn"]].strip().lower()
    if reason := _email_problem(upn):
        bad("upn", reason)
    name = record[index["display_name"]].strip()
    if not name:
        bad("display_name", "is empty")
    elif len(name) > _DISPLAY_NAME_LENGTH:
        bad("display_name", f"is longer than {_DISPLAY_NAME_LENGTH} characters")
    elif "\x00" in name:
        bad("display_name", "contains a NUL character")
    recipient_type = RECIPIENT_TYPES.get(record[index["recipient_type"]].strip().lower())
    if recipient_type is None:
        bad("recipient_type", f"is not one of {', '.join(RecipientType.values)}")
    numbers = []
    for key in ("size_bytes", "item_count"):
        try:
            numbers.append(_count(record[index[key]]))
        except ValueError as error:
            bad(key, str(error))
    code = record[index["organisation"]].strip().upper()
    org_id = org_ids.get(code)
    if org_id is None:
        bad("organisation", "is empty" if not code else "is not the code of an organisation")
    if problems.count > before:
        problems.bad_lines += 1
        return None
    return line, address, upn, name, recipient_type, numbers[0], numbers[1], org_id


# PostgreSQL: COPY, checks across the file in SQL, one set-based write ---------------------------

# Work tables: UNLOGGED, not TEMP (PostgreSQL 15 extends a temporary table a page at a time,
# which made COPY into one two to three times slower), named for the connection's backend so
# that imports in parallel do not meet, created inside the import's transaction so that a
# rollback or a crash takes them away, and dropped before it commits.
_WORK_TABLES = ("staging", "changes", "problems", "repeats", "suspects")
# A load adding at least this many new mailboxes, and at least as many as the table holds, is a
# bulk load: see _bulk_load_worth_it and _bulk_load_begin.
BULK_LOAD_MIN_ROWS = 100_000
BULK_LOAD_LOCK_TIMEOUT = "10s"
# Columns a direct load copies (the rest get their defaults), with their COPY types.
_COPY_TYPES = ("text", "text", "text", "text", "int8", "int8", "int8")


def _mailboxes_load_postgres(
    stream, org_ids: dict[str, int], report: ImportReport, skip_bad_rows: bool, progress
) -> None:
    """Load on PostgreSQL: straight into an empty table when possible, else staged.

    The first national load of a large file into an empty table (`_mailboxes_load_direct`)
    writes the checked rows with each organisation's mailboxes together, the table's indexes
    dropped and built again after; everything else (`_mailboxes_load_staged`) copies into a
    staging table, checks across the file there and merges in one statement.
    """
    table = connection.ops.quote_name(Mailbox._meta.db_table)
    phases = _Phases()
    with connection.cursor() as cursor:
        # Memory for sorting and hashing millions of rows, for this transaction only.
        cursor.execute("SET LOCAL work_mem = '512MB'")
        cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        busy = False
        if isinstance(stream, io.BufferedIOBase) and _seekable(stream):
            start = stream.tell()
            if _rows_estimate(stream) >= BULK_LOAD_MIN_ROWS:
                loaded, busy = _mailboxes_load_direct(
                    cursor, table, stream, org_ids, report, skip_bad_rows, progress, phases
                )
                if loaded:
                    phases.log(report)
                    return
                stream.seek(start)
        work = {
            name: f"import_mailbox_{name}_{cursor.connection.info.backend_pid}"
            for name in _WORK_TABLES
        }
        _mailboxes_load_staged(
            cursor,
            table,
            work,
            stream,
            org_ids,
            report,
            skip_bad_rows,
            progress,
            phases,
            bulk_allowed=not busy,
        )
        if not report.bad_rows or skip_bad_rows:
            cursor.execute(f"DROP TABLE IF EXISTS {', '.join(work.values())}")
    phases.log(report)


class _NoBulkLoad(Exception):
    """A bulk load cannot be done now: the table is in use, or it must be empty and is not."""

    def __init__(self, *, busy: bool) -> None:
        super().__init__()
        self.busy = busy


def _mailboxes_load_direct(
    cursor, table, stream, org_ids, report, skip_bad_rows, progress, phases
) -> tuple[bool, bool]:
    """The first load of a large file into an empty table, each organisation's mailboxes together.

    A file that lists each organisation's mailboxes together (an export made organisation by
    organisation, or sorted by it) is copied straight into the table, one organisation at a time
    sorted by address. Any other file is found out at its first row of an organisation already
    left behind (for most files, within the first rows), that copy is undone, and the file is
    read again into an unlogged work table, then written to the table sorted by organisation and
    address in one INSERT. Either way each organisation's mailboxes share a few pages, in the
    order an IT lead's page lists them, which is what a booking, a wave's poll and that page read
    and write; ids follow the rows.

    The table's indexes and constraints other than the primary key are dropped first (see
    _bulk_load_begin) and built again at the end, unique ones first: a unique index that cannot
    be built is an address or UPN twice in the file. Then, as when the file has a bad row and
    bad rows are not to be skipped, everything done here is rolled back and the file is read
    again through staging, which finds and reports every problem. Returns (loaded, busy): busy
    if the table could not be locked, so the staged load should not try again.
    """
    from psycopg.errors import UniqueViolation

    problems = _Problems()
    try:
        with transaction.atomic():
            bulk = _bulk_load_begin(cursor, table, only_if_empty=True)
            restore = _defaults_for_new_mailboxes(cursor, table)
            # Ids from the table's sequence, but made here from the line numbers: the table is
            # locked, so nothing else takes one meanwhile, and the server is spared a nextval
            # for each row. The sequence is moved past the last one afterwards.
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
            (sequence,) = cursor.fetchone()
            if sequence is None:
                raise _NoBulkLoad(busy=False)
            cursor.execute("SELECT nextval(%s)", [sequence])
            (first_id,) = cursor.fetchone()
            start = stream.tell()
            try:
                with transaction.atomic():
                    rows, written = _direct_copy(
                        cursor,
                        table,
                        stream,
                        org_ids,
                        problems,
                        progress,
                        skip_bad_rows,
                        first_id=first_id,
                        grouped=True,
                    )
                phases.done("read, check and copy into the table, organisation by organisation")
            except _NotGrouped:
                stream.seek(start)
                problems = _Problems()
                loading = f"import_mailbox_first_load_{cursor.connection.info.backend_pid}"
                cursor.execute(f"CREATE UNLOGGED TABLE {loading} (LIKE {table} INCLUDING DEFAULTS)")
                rows, written = _direct_copy(
                    cursor,
                    loading,
                    stream,
                    org_ids,
                    problems,
                    progress,
                    skip_bad_rows,
                    first_id=first_id,
                    grouped=False,
                )
                if problems.count and not skip_bad_rows:
                    raise _NoBulkLoad(busy=False) from None  # staging reports every problem
                phases.done("read, check and copy into a work table")
                columns = ", ".join(_MAILBOX_FIELDS)
                every = f"{columns}, status, status_changed_at"
                cursor.execute(
                    f"INSERT INTO {table} (id, {every})"  # noqa: S608 - quoted model names
                    f" SELECT %s - 1 + row_number() OVER (ORDER BY organisation_id, address),"
                    f" {every} FROM {loading} ORDER BY organisation_id, address",
                    [first_id],
                )
                cursor.execute(f"DROP TABLE {loading}")
                phases.done("write to the table in organisation order")
            if problems.count and not skip_bad_rows:
                raise _NoBulkLoad(busy=False)  # the staged load will report every problem
            for statement in restore:
                cursor.execute(statement)
            cursor.execute(
                f"SELECT setval(%s, greatest(max(id), %s)) FROM {table}",  # noqa: S608
                [sequence, first_id],
            )
            report.rows_read = rows.rows_read
            problems.finish(report)
            report.bad_rows = problems.bad_lines
            if not report.rows_read:
                return True, False  # refused by the caller
            _bulk_load_end(cursor, bulk)
            phases.done("rebuild indexes and foreign keys")
    except _NoBulkLoad as no_bulk_load:
        return False, no_bulk_load.busy
    except IntegrityError as error:
        if not isinstance(error.__cause__, UniqueViolation):
            raise
        logger.info("Bulk load found a value twice (%s): loading through staging", error)
        return False, False
    report.created = written
    cursor.execute(f"ANALYZE {table}")  # fresh statistics for the pages' queries
    phases.done("analyse")
    return True, False


class _NotGrouped(Exception):
    """The file lists an organisation's mailboxes in more than one place."""


def _direct_copy(
    cursor, table, stream, org_ids, problems, progress, skip_bad_rows, *, first_id, grouped
) -> tuple[_Rows, int]:
    """COPY the file's checked rows into `table`; returns the reader and how many were written.

    Unless `grouped`, the rows keep their order, with ids from their lines. With `grouped`, one
    organisation's rows at a time are held, sorted by address and written with ids in that
    order, as the sorted INSERT would have put them; _NotGrouped is raised at the first row of
    an organisation whose rows ended earlier in the file.
    """
    rows = _Rows(stream, MAILBOX_COLUMNS)
    checked = _mailbox_rows(
        rows,
        org_ids,
        problems,
        progress,
        line_offset=first_id - rows.reader.line_num - 1,
        stop_at_problem=not skip_bad_rows,
    )
    written = 0
    try:
        with _copy_into(cursor, table, "id") as write_row:
            if not grouped:
                for row in checked:
                    write_row(row)
                    written += 1
                return rows, written

            def write_organisation() -> None:
                nonlocal written
                held.sort(key=itemgetter(1))  # by address: the pages' order
                for row in held:
                    write_row((first_id + written, *row[1:]))
                    written += 1
                held.clear()

            current, done, held = None, set(), []
            for row in checked:
                if row[-1] != current:
                    if row[-1] in done:
                        raise _NotGrouped
                    write_organisation()
                    done.add(current)
                    current = row[-1]
                held.append(row)
            write_organisation()
    finally:
        rows.close()
    return rows, written


@contextmanager
def _copy_into(cursor, table: str, first_column: str) -> Iterator[Callable]:
    """A binary COPY into `table` of `first_column` (a bigint) and the mailbox fields: yields
    the function that writes one row."""
    columns = ", ".join(_MAILBOX_FIELDS)
    with (
        cursor.connection.cursor() as raw,
        raw.copy(f"COPY {table} ({first_column}, {columns}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(("int8", *_COPY_TYPES))
        yield copy.write_row


def _defaults_for_new_mailboxes(cursor, table: str) -> list[str]:
    """Let the table fill in what a new mailbox gets, so COPY need not send it for every row.

    For this transaction only: the statements returned put the columns' defaults back.
    """
    from psycopg.sql import Literal

    cursor.execute(
        "SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a"
        " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE a.attrelid = %s::regclass AND a.attname IN ('status', 'status_changed_at')",
        [table],
    )
    before = dict(cursor.fetchall())
    status = Literal(MailboxStatus.NOT_SCHEDULED.value).as_string(cursor.connection)
    cursor.execute(
        f"ALTER TABLE {table} ALTER COLUMN status SET DEFAULT {status},"
        " ALTER COLUMN status_changed_at SET DEFAULT now()"
    )
    undo = ", ".join(
        f"ALTER COLUMN {name} " + (f"SET DEFAULT {default}" if default else "DROP DEFAULT")
        for name, default in sorted(before.items())
    )
    return [f"ALTER TABLE {table} {undo}"]


def _mailboxes_load_staged(
    cursor, table, work, stream, org_ids, report, skip_bad_rows, progress, phases, *, bulk_allowed
) -> None:
    """COPY the checked rows into staging, check across the file in SQL, then merge.

    Only new and changed rows reach the merge: a re-import of the same file writes nothing.
    """
    columns = ", ".join(_MAILBOX_FIELDS)
    staging, changes, problem_table = work["staging"], work["changes"], work["problems"]
    problems = _Problems()
    cursor.execute(f"DROP TABLE IF EXISTS {', '.join(work.values())}")
    cursor.execute(
        f"CREATE UNLOGGED TABLE {staging} (line bigint NOT NULL, address text NOT NULL,"
        " upn text NOT NULL, display_name text NOT NULL, recipient_type text NOT NULL,"
        " size_bytes bigint NOT NULL, item_count bigint NOT NULL,"
        " organisation_id bigint NOT NULL)"
    )
    cursor.execute(
        f"CREATE UNLOGGED TABLE {problem_table} (line bigint NOT NULL,"
        " column_name text NOT NULL, value text NOT NULL, reason text NOT NULL)"
    )
    staged = 0
    rows = _Rows(stream, MAILBOX_COLUMNS)
    try:
        # The file is read, checked and sent in one pass; the server stores while Python parses.
        with _copy_into(cursor, staging, "line") as write_row:
            for row in _mailbox_rows(rows, org_ids, problems, progress):
                write_row(row)
                staged += 1
    finally:
        rows.close()
    report.rows_read = rows.rows_read
    cursor.execute(f"ANALYZE {staging}")
    phases.done("read, check and copy to staging")

    # Rows after the first with the same address or UPN are bad rows. 64-bit hashes of both,
    # sorted (quicker than hashing again), find the values that repeat; only rows with one of
    # those hashes are compared as text, so a hash collision is never taken for a duplicate.
    cursor.execute("SELECT set_config('enable_hashagg', 'off', true)")
    cursor.execute(
        f"CREATE UNLOGGED TABLE {work['repeats']} AS"  # noqa: S608
        f" SELECT 'address' AS key, h FROM (SELECT hashtextextended(address, 0) AS h"
        f" FROM {staging}) a GROUP BY h HAVING count(*) > 1"
        f" UNION ALL SELECT 'upn', h FROM (SELECT hashtextextended(upn, 0) AS h"
        f" FROM {staging}) u GROUP BY h HAVING count(*) > 1"
    )
    repeats = cursor.rowcount
    cursor.execute("SELECT set_config('enable_hashagg', 'on', true)")
    if repeats:
        suspects = work["suspects"]
        cursor.execute(
            f"CREATE UNLOGGED TABLE {suspects} AS SELECT line, address, upn"  # noqa: S608
            f" FROM {staging} WHERE hashtextextended(address, 0) IN"
            f" (SELECT h FROM {work['repeats']} WHERE key = 'address')"
            " OR hashtextextended(upn, 0) IN"
            f" (SELECT h FROM {work['repeats']} WHERE key = 'upn')"
        )
        for key in ("address", "upn"):
            cursor.execute(
                f"INSERT INTO {problem_table} SELECT line, %s, {key},"  # noqa: S608
                " 'appears more than once in the file (first on line ' || first || ')'"
                f" FROM (SELECT line, {key}, min(line) OVER (PARTITION BY {key}) AS first"
                f" FROM {suspects}) s WHERE line > first",
                [_COLUMN_NAME[key]],
            )
        staged -= _work_drop_bad_rows(cursor, staging, problem_table, problems)
    # New and changed rows go on; a row the same as its mailbox is only counted.
    same = " AND ".join(f"m.{name} = s.{name}" for name in _UPDATED_FIELDS)
    cursor.execute(
        f"CREATE UNLOGGED TABLE {changes} AS SELECT s.* FROM {staging} s"  # noqa: S608
        f" WHERE NOT EXISTS (SELECT FROM {table} m WHERE m.address = s.address AND {same})"
    )
    pending = cursor.rowcount
    report.unchanged = staged - pending
    cursor.execute(f"ANALYZE {changes}")
    # A UPN that belongs to another mailbox would break the UPN's unique constraint in the
    # merge, which matches on address: a bad row too.
    cursor.execute(
        f"INSERT INTO {problem_table} SELECT s.line, %s, s.upn,"  # noqa: S608
        " 'belongs to another mailbox already in the portal, ' || m.address"
        f" FROM {changes} s JOIN {table} m ON m.upn = s.upn WHERE m.address <> s.address",
        [_COLUMN_NAME["upn"]],
    )
    if cursor.rowcount:
        pending -= _work_drop_bad_rows(cursor, changes, problem_table, problems)
    cursor.execute(f"SELECT count(*) FROM {problem_table}")  # noqa: S608
    (more_count,) = cursor.fetchone()
    cursor.execute(
        f"SELECT line, column_name, value, reason FROM {problem_table}"  # noqa: S608
        " ORDER BY line LIMIT %s",
        [PROBLEMS_KEPT],
    )
    problems.finish(report, [Problem(*row) for row in cursor.fetchall()], more_count)
    report.bad_rows = problems.bad_lines
    phases.done("check duplicates, changes and UPNs")
    if problems.bad_lines and not skip_bad_rows:
        return

    bulk = None
    if pending and bulk_allowed and _bulk_load_worth_it(cursor, table, changes, pending):
        try:
            bulk = _bulk_load_begin(cursor, table)
        except _NoBulkLoad:
            bulk = None
    if bulk is not None:
        # The table is locked: plain statements, no conflicts to arbitrate. Both match on
        # address as the table is now, under the lock.
        assignments = ", ".join(f"{name} = s.{name}" for name in _UPDATED_FIELDS)
        current = ", ".join(f"m.{name}" for name in _UPDATED_FIELDS)
        incoming = ", ".join(f"s.{name}" for name in _UPDATED_FIELDS)
        cursor.execute(
            f"UPDATE {table} m SET {assignments} FROM {changes} s"  # noqa: S608
            f" WHERE m.address = s.address AND ({current}) IS DISTINCT FROM ({incoming})"
        )
        report.updated = cursor.rowcount
        cursor.execute(
            f"INSERT INTO {table} ({columns}, status, status_changed_at)"  # noqa: S608
            f" SELECT {columns}, %s, now() FROM {changes} s"
            f" WHERE NOT EXISTS (SELECT FROM {table} m WHERE m.address = s.address)",
            [MailboxStatus.NOT_SCHEDULED.value],
        )
        report.created = cursor.rowcount
        phases.done("insert and update")
        _bulk_load_end(cursor, bulk)
        phases.done("rebuild indexes and foreign keys")
    elif pending:
        assignments = ", ".join(f"{name} = EXCLUDED.{name}" for name in _UPDATED_FIELDS)
        current = ", ".join(f"m.{name}" for name in _UPDATED_FIELDS)
        incoming = ", ".join(f"EXCLUDED.{name}" for name in _UPDATED_FIELDS)
        # One statement: new mailboxes get their first status, as the ORM would give it;
        # existing ones keep theirs and take the new values only where something differs. In
        # address order, so the address index grows at its end.
        cursor.execute(
            f"WITH merged AS (INSERT INTO {table} AS m ({columns}, status, status_changed_at)"  # noqa: S608
            f" SELECT {columns}, %s, now() FROM {changes} ORDER BY address"
            f" ON CONFLICT (address) DO UPDATE SET {assignments}"
            f" WHERE ({current}) IS DISTINCT FROM ({incoming})"
            " RETURNING (xmax = 0) AS created)"
            " SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created)"
            " FROM merged",
            [MailboxStatus.NOT_SCHEDULED.value],
        )
        report.created, report.updated = cursor.fetchone()
        phases.done("merge")
    # A row changed by someone else since the check above is merged as it is now.
    report.unchanged += pending - report.created - report.updated
    if report.created + report.updated >= BULK_LOAD_MIN_ROWS:
        cursor.execute(f"ANALYZE {table}")  # fresh statistics for the pages' queries
        phases.done("analyse")


def _work_drop_bad_rows(cursor, work_table: str, problem_table: str, problems: _Problems) -> int:
    """Take the rows with a problem out of a work table; returns how many went."""
    cursor.execute(
        f"DELETE FROM {work_table} s USING (SELECT DISTINCT line FROM {problem_table}) p"  # noqa: S608
        " WHERE s.line = p.line"
    )
    problems.bad_lines += cursor.rowcount
    return cursor.rowcount


def _rows_estimate(stream: IO[bytes]) -> int:
    """Data rows in a seekable binary stream, counted as lines less the header; it is rewound."""
    start = stream.tell()
    lines, last = 0, b"\n"
    while block := stream.read(1 << 20):
        lines += block.count(b"\n")
        last = block[-1:]
    stream.seek(start)
    if last != b"\n":
        lines += 1
    return max(0, lines - 1)


def _bulk_load_worth_it(cursor, table: str, changes: str, pending: int) -> bool:
    """Whether to drop the indexes for this load: only when it adds at least BULK_LOAD_MIN_ROWS
    new mailboxes, and at least as many as the table holds.

    Changed mailboxes do not count. A weekly refresh changes every mailbox's size: updating
    2.1 million rows in place took 23 s, against 20 s dropping and rebuilding the indexes, and
    the rebuild would lock every page and the waves' polls out of the table for those 20 s.
    """
    if pending < BULK_LOAD_MIN_ROWS:
        return False
    cursor.execute(
        "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass", [table]
    )
    (present,) = cursor.fetchone()
    if pending < present:
        return False
    cursor.execute(
        f"SELECT count(*) FROM {changes} s"  # noqa: S608 - quoted names
        f" WHERE NOT EXISTS (SELECT FROM {table} m WHERE m.address = s.address)"
    )
    (new,) = cursor.fetchone()
    return new >= BULK_LOAD_MIN_ROWS and new >= present


class _BulkLoad(NamedTuple):
    """Statements that add back what a bulk load dropped, in the order they run."""

    unique: list[str]  # ALTER TABLE … ADD CONSTRAINT … UNIQUE: a duplicate stops it first
    indexes: list[str]  # CREATE INDEX
    foreign_keys: list[str]  # ALTER TABLE … ADD CONSTRAINT … FOREIGN KEY


def _bulk_load_begin(cursor, table: str, *, only_if_empty: bool = False) -> _BulkLoad:
    """Before a load that fills most of the table: drop what can be rebuilt faster than kept.

    As PostgreSQL's "Populating a Database" advises: building an index over all rows at once
    is much quicker than updating it row by row, and adding a foreign key checks every row in
    one query where inserting checks each row alone. Every index and unique or foreign key
    constraint goes, except the primary key (other tables point at it); unique constraints are
    checked again when they are added back. All in the import's transaction: a failure restores
    everything. The table is locked against readers and writers until the import commits, so
    this is only done when the lock comes within BULK_LOAD_LOCK_TIMEOUT; otherwise, or when
    `only_if_empty` and the table has rows, it raises _NoBulkLoad.
    """
    quote_name = connection.ops.quote_name
    cursor.execute("SHOW lock_timeout")
    (lock_timeout,) = cursor.fetchone()
    try:
        with transaction.atomic():
            cursor.execute("SET LOCAL lock_timeout = %s", [BULK_LOAD_LOCK_TIMEOUT])
            cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [lock_timeout])
            if only_if_empty:
                cursor.execute(f"SELECT EXISTS (SELECT FROM {table})")  # noqa: S608
                if cursor.fetchone()[0]:
                    raise _NoBulkLoad(busy=False)
            # Unique constraints that a foreign key relies on stay.
            cursor.execute(
                "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint c"
                " WHERE conrelid = %s::regclass AND (contype = 'f' OR (contype = 'u'"
                " AND NOT EXISTS (SELECT FROM pg_constraint r WHERE r.contype = 'f'"
                " AND r.confrelid = c.conrelid AND r.conindid = c.conindid)))"
                " ORDER BY conname",
                [table],
            )
            constraints = cursor.fetchall()
            cursor.execute(
                "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)"
                " FROM pg_index i WHERE i.indrelid = %s::regclass AND NOT i.indisprimary"
                " AND NOT EXISTS (SELECT FROM pg_constraint c"
                " WHERE c.conrelid = i.indrelid AND c.conindid = i.indexrelid)",
                [table],
            )
            indexes = cursor.fetchall()
            for name, _, _ in constraints:
                cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {quote_name(name)}")
            for name, _ in indexes:
                cursor.execute(f"DROP INDEX {name}")
    except OperationalError as error:
        # Busy (others are reading or writing the table) or not possible in this transaction
        # (deferred checks pending): the ordinary merge does the same work, only slower.
        logger.info("Bulk load not possible (%s): merging with indexes in place", error)
        raise _NoBulkLoad(busy=True) from error
    add = {
        kind: [
            f"ALTER TABLE {table} ADD CONSTRAINT {quote_name(name)} {definition}"
            for name, contype, definition in constraints
            if contype == kind
        ]
        for kind in ("u", "f")
    }
    return _BulkLoad(
        unique=add["u"],
        indexes=[definition for _, definition in indexes],
        foreign_keys=add["f"],
    )


def _bulk_load_end(cursor, bulk: _BulkLoad) -> None:
    """Add back what _bulk_load_begin dropped: unique constraints, indexes, foreign keys."""
    for statement in (*bulk.unique, *bulk.indexes, *bulk.foreign_keys):
        cursor.execute(statement)


class _Phases:
    """Seconds spent in each phase of an import, logged at the end: where the time goes."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.seconds: dict[str, float] = {}

    def done(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = now - self.last
        self.last = now

    def log(self, report: ImportReport) -> None:
        logger.info(
            "Import of %s: %s",
            report.kind,
            "; ".join(f"{phase} {seconds:.1f} s" for phase, seconds in self.seconds.items()),
        )


# SQLite and other databases: batched bulk_create ----------------------------------------------


def _mailboxes_load_orm(
    stream, org_ids: dict[str, int], report: ImportReport, skip_bad_rows: bool, progress
) -> None:
    problems = _Problems()
    first_line: dict[str, dict[str, int]] = {"address": {}, "upn": {}}
    chunk: list[MailboxRow] = []
    rows = _Rows(stream, MAILBOX_COLUMNS)
    try:
        for row in _mailbox_rows(rows, org_ids, problems, progress):
            line, address, upn = row[0], row[1], row[2]
            duplicate = False
            for key, value in (("address", address), ("upn", upn)):
                first = first_line[key].setdefault(value, line)
                if first != line:
                    problems.add(
                        line,
                        _COLUMN_NAME[key],
                        value,
                        f"appears more than once in the file (first on line {first})",
                    )
                    duplicate = True
            if duplicate:
                problems.bad_lines += 1
                continue
            chunk.append(row)
            if len(chunk) >= SQLITE_CHUNK:
                _orm_merge_chunk(chunk, report, problems, skip_bad_rows)
                chunk = []
    finally:
        rows.close()
    if chunk:
        _orm_merge_chunk(chunk, report, problems, skip_bad_rows)
    report.rows_read = rows.rows_read
    problems.finish(report)
    report.bad_rows = problems.bad_lines


def _orm_merge_chunk(
    chunk: list[MailboxRow], report: ImportReport, problems: _Problems, skip_bad_rows: bool
) -> None:
    existing = {
        values[0]: values[1:]
        for values in Mailbox.objects.filter(address__in=[row[1] for row in chunk]).values_list(
            *_MAILBOX_FIELDS
        )
    }
    upn_owner = dict(
        Mailbox.objects.filter(upn__in=[row[2] for row in chunk]).values_list("upn", "address")
    )
    writes = []
    created = updated = unchanged = 0
    for line, address, *values in chunk:
        owner = upn_owner.get(values[0])
        if owner is not None and owner != address:
            problems.add(
                line,
                _COLUMN_NAME["upn"],
                values[0],
                f"belongs to another mailbox already in the portal, {owner}",
            )
            problems.bad_lines += 1
            continue
        before = existing.get(address)
        if before is None:
            created += 1
        elif tuple(before) != tuple(values):
            updated += 1
        else:
            unchanged += 1
            continue
        writes.append(Mailbox(address=address, **dict(zip(_UPDATED_FIELDS, values, strict=True))))
    report.created += created
    report.updated += updated
    report.unchanged += unchanged
    if writes and (skip_bad_rows or not problems.bad_lines):
        # status and status_changed_at are not in update_fields: an existing mailbox keeps them.
        Mailbox.objects.bulk_create(
            writes,
            update_conflicts=True,
            unique_fields=["address"],
            update_fields=list(_UPDATED_FIELDS),
        )


# Organisations ---------------------------------------------------------------------------------

ORGANISATION_COLUMNS = (
    _Columns("OrganisationCode", "code", True, ("OrganizationCode", "ODSCode")),
    _Columns("Name", "name", True),
    _Columns("Type", "type", True),
    _Columns("Region", "region", False),
    _Columns("ParentCode", "parent", False),
)
_ORG_COLUMN_NAME = {c.key: c.name for c in ORGANISATION_COLUMNS}
_ODS_CODE = re.compile(r"[A-Z0-9]+", re.ASCII).fullmatch


def _type_key(text: str) -> str:
    return " ".join(text.replace("_", " ").replace("-", " ").split()).lower()


ORGANISATION_TYPES = {
    **{_type_key(value): value for value in OrganisationType.values},
    **{_type_key(label): value for value, label in OrganisationType.choices},
    "icb": OrganisationType.ICB,
    "nhs trust": OrganisationType.TRUST,
    "nhs foundation trust": OrganisationType.TRUST,
}
_ORG_LENGTHS = {
    key: Organisation._meta.get_field(key).max_length for key in ("code", "name", "region")
}


@dataclass
class _OrgRow:
    line: int
    code: str
    name: str
    type: str
    region: str
    parent: str  # a code, or ""
    record: list[str]
    index: dict[str, int]

    def bad(self, problems: _Problems, key: str, reason: str) -> None:
        problems.add(self.line, _ORG_COLUMN_NAME[key], self.record[self.index[key]], reason)


def organisations_import(
    stream: IO[bytes] | Iterable[bytes] | Iterable[str],
    *,
    skip_bad_rows: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import organisations; see the module docstring.

    A ParentCode may name an organisation earlier or later in the same file, or one already in
    the portal; an empty one means no parent. Without a Region or ParentCode column, existing
    organisations keep theirs. The file is small (about 12,000 rows), so it is held in memory.
    """
    report = ImportReport(kind=ImportKind.ORGANISATIONS, skip_bad_rows=skip_bad_rows)
    started = time.monotonic()
    problems = _Problems()
    try:
        with transaction.atomic():
            rows = _Rows(stream, ORGANISATION_COLUMNS)
            existing = {
                code.upper(): (pk, code, name, type_, region, (parent or "").upper())
                for pk, code, name, type_, region, parent in Organisation.objects.values_list(
                    "pk", "code", "name", "type", "region", "parent__code"
                )
            }
            try:
                good = _organisation_rows(rows, existing, problems, progress)
            finally:
                rows.close()
            report.rows_read = rows.rows_read
            if report.rows_read == 0:
                raise FileRefused("the file has no data rows, only a header")
            problems.finish(report)
            report.bad_rows = problems.bad_lines
            if report.bad_rows and not skip_bad_rows:
                report.refused = True
                transaction.set_rollback(True)
            else:
                report.skipped = report.bad_rows
                _organisations_write(good, existing, rows.present, report)
    except FileRefused as refusal:
        report.error = str(refusal)
        report.refused = True
    report.seconds = time.monotonic() - started
    return report


def _organisation_rows(
    rows: _Rows, existing: dict, problems: _Problems, progress: Progress | None
) -> list[_OrgRow]:
    """The rows that pass every check, with parents that resolve and no loops; the rest recorded."""
    index = rows.index
    first_line: dict[str, int] = {}
    good: dict[str, _OrgRow] = {}
    for line, record in rows:
        if progress is not None and rows.rows_read % PROGRESS_EVERY == 0:
            progress(rows.rows_read)
        row = _OrgRow(
            line=line,
            code=record[index["code"]].strip().upper(),
            name=record[index["name"]].strip(),
            type=ORGANISATION_TYPES.get(_type_key(record[index["type"]]), ""),
            region=record[index["region"]].strip() if "region" in index else "",
            parent=record[index["parent"]].strip().upper() if "parent" in index else "",
            record=record,
            index=index,
        )
        before = problems.count
        if not row.code:
            row.bad(problems, "code", "is empty")
        elif len(row.code) > _ORG_LENGTHS["code"]:
            row.bad(problems, "code", f"is longer than {_ORG_LENGTHS['code']} characters")
        elif not _ODS_CODE(row.code):
            row.bad(problems, "code", "is not an ODS code (letters and digits only)")
        elif (first := first_line.setdefault(row.code, line)) != line:
            row.bad(problems, "code", f"appears more than once in the file (first on line {first})")
        if not row.name:
            row.bad(problems, "name", "is empty")
        elif len(row.name) > _ORG_LENGTHS["name"]:
            row.bad(problems, "name", f"is longer than {_ORG_LENGTHS['name']} characters")
        if not row.type:
            row.bad(problems, "type", "is not one of Trust, GP practice, ICB, Social care, Other")
        if len(row.region) > _ORG_LENGTHS["region"]:
            row.bad(problems, "region", f"is longer than {_ORG_LENGTHS['region']} characters")
        if row.parent and row.parent == row.code:
            row.bad(problems, "parent", "is the organisation's own code")
        if problems.count > before:
            problems.bad_lines += 1
        else:
            good[row.code] = row

    # A parent must be a good row of the file or already in the portal, and no chain of parents
    # may loop. Dropping a bad row can strand rows naming it, so repeat until nothing changes.
    while True:
        dropped = []
        for row in good.values():
            if row.parent and row.parent not in good and row.parent not in existing:
                reason = (
                    "names an organisation whose row is bad"
                    if row.parent in first_line
                    else "is not the code of an organisation in the file or the portal"
                )
                row.bad(problems, "parent", reason)
                dropped.append(row)
        if not dropped:
            for row in _organisations_in_loops(good, existing):
                row.bad(
                    problems, "parent", "makes a loop: the organisation would be its own ancestor"
                )
                dropped.append(row)
        if not dropped:
            break
        for row in dropped:
            problems.bad_lines += 1
            del good[row.code]
    return sorted(good.values(), key=lambda row: row.line)


def _organisations_in_loops(good: dict[str, _OrgRow], existing: dict) -> list[_OrgRow]:
    def parent_of(code: str) -> str:
        if code in good:
            return good[code].parent
        return existing[code][5] if code in existing else ""

    looped = []
    for code, row in good.items():
        seen = {code}
        ancestor = parent_of(code)
        while ancestor and ancestor not in seen:
            seen.add(ancestor)
            ancestor = parent_of(ancestor)
        if ancestor == code:
            looped.append(row)
    return looped


def _organisations_write(
    rows: list[_OrgRow], existing: dict, present: set[str], report: ImportReport
) -> None:
    has_region, has_parent = "region" in present, "parent" in present
    writes = []
    for row in rows:
        before = existing.get(row.code)
        if before is None:
            report.created += 1
            writes.append(
                Organisation(code=row.code, name=row.name, type=row.type, region=row.region)
            )
            continue
        pk, code, name, type_, region, parent = before
        fields_changed = (name, type_) != (row.name, row.type) or (
            has_region and region != row.region
        )
        if fields_changed:
            region = row.region if has_region else region
            writes.append(Organisation(code=code, name=row.name, type=row.type, region=region))
        if fields_changed or (has_parent and parent != row.parent):
            report.updated += 1
        else:
            report.unchanged += 1
    Organisation.objects.bulk_create(
        writes,
        update_conflicts=True,
        unique_fields=["code"],
        update_fields=["name", "type", *(["region"] if has_region else [])],
        batch_size=SQLITE_CHUNK // 4,
    )
    if not has_parent:
        return
    # Parents last, when every organisation of the file has an id to point at.
    ids = {code.upper(): pk for code, pk in Organisation.objects.values_list("code", "pk")}
    # Grouped by new parent: a few UPDATEs (one per parent), where bulk_update would build a
    # CASE expression per row.
    by_parent: dict[int | None, list[int]] = defaultdict(list)
    for row in rows:
        if row.parent != (existing[row.code][5] if row.code in existing else ""):
            by_parent[ids[row.parent] if row.parent else None].append(ids[row.code])
    for parent_id, pks in by_parent.items():
        for start in range(0, len(pks), SQLITE_CHUNK):
            Organisation.objects.filter(pk__in=pks[start : start + SQLITE_CHUNK]).update(
                parent_id=parent_id
            )


# Uploads ----------------------------------------------------------------------------------------

MAX_UPLOAD_BYTES = 1024**3  # 1 GB: the national mailbox file is about a quarter of that
UPLOAD_TOO_LARGE = "The selected file must be smaller than 1 GB"
# A multipart body carries a little more than the file: boundaries, headers, the other fields.
UPLOAD_OVERHEAD_BYTES = 64 * 1024
_SPREADSHEET_SIGNATURES = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")  # .xlsx (a zip), .xls


def upload_dir() -> Path:
    """Where uploaded files wait for their import: the PORTAL_IMPORT_DIR setting if there is one.

    Workers must be able to read it: on more than one machine, shared storage.
    """
    configured = getattr(settings, "PORTAL_IMPORT_DIR", None)
    return Path(configured) if configured else Path(settings.BASE_DIR) / "var" / "imports"


def upload_declared_too_large(meta) -> bool:
    """Whether a request's declared length is more than an upload may be, checked before its
    body is read (Django would otherwise spool all of it to disk first)."""
    declared = meta.get("CONTENT_LENGTH") or "0"
    return declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + UPLOAD_OVERHEAD_BYTES


def upload_problem(uploaded) -> str | None:
    """Why an uploaded file cannot be queued for import, in the words to show; None if it can.

    Only what can be told at once: the import checks every row in the background.
    """
    if not uploaded.size:
        return "The selected file is empty"
    if uploaded.size > MAX_UPLOAD_BYTES:
        return UPLOAD_TOO_LARGE
    uploaded.seek(0)
    head = uploaded.read(4096)
    uploaded.seek(0)
    if head.startswith(_SPREADSHEET_SIGNATURES):
        return "The selected file is an Excel workbook: save it as 'CSV UTF-8' and upload that"
    if not uploaded.name.lower().endswith(".csv"):
        return "The selected file must be a CSV"
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "The selected file must be a CSV: it is not text"
    return None


def upload_save(uploaded) -> Path:
    """Put an uploaded file where the worker will read it, streamed: never whole in memory.

    Each upload gets a folder of its own, so its name is kept (the pages show it). A file that
    Django spooled to disk is moved there rather than copied.
    """
    folder = upload_dir() / uuid.uuid4().hex
    folder.mkdir(parents=True)
    path = folder / (get_valid_filename(Path(uploaded.name).name) or "upload.csv")
    if hasattr(uploaded, "temporary_file_path"):
        file_move_safe(uploaded.temporary_file_path(), str(path))
    else:
        with path.open("wb") as out:
            for chunk in uploaded.chunks():
                out.write(chunk)
    return path


def upload_forget(path: str) -> None:
    """Delete an uploaded file once its import has finished: it holds people's names.

    Only files in the upload folder are touched: a path given to a command is the user's own.
    """
    file = Path(path)
    root = upload_dir().resolve()
    try:
        if file.resolve().parent.parent != root:
            return
        file.unlink(missing_ok=True)
        file.parent.rmdir()
    except OSError:
        logger.warning("Could not delete the uploaded file %s", path, exc_info=True)


# In the background ------------------------------------------------------------------------------

IMPORTERS: dict[str, Callable[..., ImportReport]] = {
    ImportKind.ORGANISATIONS: organisations_import,
    ImportKind.MAILBOXES: mailboxes_import,
}


def import_run_start(*, kind: str, path: str, skip_bad_rows: bool, created_by) -> ImportRun:
    """Record an import of the file at `path` and queue it for a worker once this commits.

    The file must stay at `path`, readable by the worker, until the run has finished.
    """
    from django_q.tasks import async_task

    if kind not in IMPORTERS:
        raise ValueError(f"unknown import kind: {kind!r}")
    with transaction.atomic():
        run = ImportRun.objects.create(
            kind=kind, path=str(path), skip_bad_rows=skip_bad_rows, created_by=created_by
        )
        ImportRunEvent.objects.create(
            run=run,
            at=run.status_changed_at,
            to_status=ImportStatus.QUEUED,
            reason=f"{PurePath(path).name} queued for a worker",
            **actor_fields(created_by or "central team"),
        )
    transaction.on_commit(
        lambda: async_task(
            "mailboxes.tasks.run_import",
            run.pk,
            task_name=f"import-{run.pk}",
            timeout=TASK_TIMEOUT,
        )
    )
    return run


def import_run_execute(import_run_id: int) -> str:
    """Run a queued import once: claim it, import the file, record the report.

    A run that another worker is running, or that has finished, is left alone, so a task that
    is delivered twice imports once; one whose worker stopped mid-import is run again when the
    task queue delivers it again. An uploaded file is deleted when its run has finished.
    Returns the run's status.
    """
    claimed = import_run_transition(
        run_id=import_run_id,
        to=ImportStatus.RUNNING,
        expected_from={ImportStatus.QUEUED},
        reason="Started by a worker",
        started_at=timezone.now(),
    )
    run = ImportRun.objects.get(pk=import_run_id)
    # A running run whose worker holds no lock on it was left by a worker that stopped: its
    # import rolled back, so it is run again.
    if not claimed and run.status != ImportStatus.RUNNING:
        logger.info("Import run %s is %s: not run again", run.pk, run.status)
        return run.status
    if not _run_lock(run.pk):
        logger.info("Import run %s is running on another worker: not run again", run.pk)
        return run.status
    try:
        if not claimed:
            resumed = import_run_transition(
                run_id=run.pk,
                to=ImportStatus.RUNNING,
                expected_from={ImportStatus.RUNNING},
                reason="Started again: the worker running it stopped, and its import was undone",
                started_at=timezone.now(),
                rows_read=0,
            )
            if not resumed:  # its worker finished it between the look above and the lock
                return ImportRun.objects.get(pk=run.pk).status
            logger.warning(
                "Import run %s was left by a worker that stopped: running it again", run.pk
            )
        return _import_run_import(run)
    finally:
        _run_unlock(run.pk)


_RUN_LOCK_FILES: dict[int, IO] = {}  # SQLite: the open lock file of each run this process runs


def run_lock_path(run_id: int) -> Path:
    return upload_dir() / f".import-run-{run_id}.lock"


def _run_lock(run_id: int) -> bool:
    """Hold the run's lock until `_run_unlock` or until this worker stops; False if another
    worker holds it.

    On PostgreSQL, an advisory lock of the worker's session. On SQLite, whose portal runs on
    one machine, an exclusive `flock` on a file in the upload folder: the operating system lets
    go of it when the worker's process ends, however it ends.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [IMPORT_RUN_LOCK, run_id])
            return cursor.fetchone()[0]
    path = run_lock_path(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path, "a")  # noqa: SIM115 - held open until _run_unlock
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return False
    _RUN_LOCK_FILES[run_id] = lock
    return True


def _run_unlock(run_id: int) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [IMPORT_RUN_LOCK, run_id])
        return
    lock = _RUN_LOCK_FILES.pop(run_id)
    # Removed while still held: a worker that opened it meanwhile locks a file no one else will
    # see, and then finds the run finished (import_run_execute looks again once it has the lock).
    run_lock_path(run_id).unlink(missing_ok=True)
    lock.close()


def _import_run_import(run: ImportRun) -> str:
    progress = _ProgressWriter(run.pk)
    try:
        ImportRun.objects.filter(pk=run.pk).update(rows_total=estimate_rows(run.path))
        with open(run.path, "rb") as stream:
            report = IMPORTERS[run.kind](stream, skip_bad_rows=run.skip_bad_rows, progress=progress)
    except Exception as error:
        logger.exception("Import run %s failed", run.pk)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        failure = f"{type(error).__name__}: {reason}"
        import_run_transition(
            run_id=run.pk,
            to=ImportStatus.FAILED,
            reason=failure,
            error=failure[:2000],
            finished_at=timezone.now(),
        )
        upload_forget(run.path)
        return ImportStatus.FAILED
    finally:
        progress.close()
    status = ImportStatus.REFUSED if report.refused else ImportStatus.DONE
    import_run_transition(
        run_id=run.pk,
        to=status,
        reason=_verdict(report),
        rows_read=report.rows_read,
        created=report.created,
        updated=report.updated,
        unchanged=report.unchanged,
        skipped=report.skipped,
        bad_rows=report.bad_rows,
        problem_count=report.problem_count,
        problems=[problem.as_dict() for problem in report.problems[:PROBLEMS_SHOWN]],
        error=report.error,
        finished_at=timezone.now(),
    )
    upload_forget(run.path)
    return status


def _verdict(report: ImportReport) -> str:
    if report.error:
        return f"Refused: {report.error}"
    if report.refused:
        return f"Refused: {_plural(report.bad_rows, 'bad row')}"
    return report.summary


def estimate_rows(path: str) -> int:
    """The number of data rows, counted as lines less the header: quick, and close enough."""
    with open(path, "rb") as stream:
        return _rows_estimate(stream)


class _ProgressWriter:
    """Writes rows_read to the run as the import goes, on a connection of its own.

    The import holds its rows in one transaction until the end; progress written inside it would
    be invisible to the page polling it. PostgreSQL takes a second connection; on SQLite the
    import holds the only write lock, so progress is written when the run ends.
    """

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.connection = None
        if connection.vendor == "postgresql":
            self.connection = connections.create_connection(DEFAULT_DB_ALIAS)

    def __call__(self, rows_read: int) -> None:
        if self.connection is None:
            return
        table = self.connection.ops.quote_name(ImportRun._meta.db_table)
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET rows_read = %s WHERE id = %s",  # noqa: S608
                [rows_read, self.run_id],
            )

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
