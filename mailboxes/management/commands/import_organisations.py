"""Import organisations from a CSV file.

    python manage.py import_organisations FILE [--skip-bad-rows]

Columns (any order, names in any case, others ignored): OrganisationCode, Name, Type, and
optionally Region and ParentCode. Type is Trust, GP practice, ICB (or Integrated care board),
Social care or Other. A ParentCode names an organisation in the same file or already in the
portal. A file with bad rows is refused whole, listing each one, unless --skip-bad-rows.
"""

import sys
from collections.abc import Callable

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mailboxes.importing import ImportReport, organisations_import


class Command(BaseCommand):
    help = __doc__.strip().splitlines()[0]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the CSV file, UTF-8")
        parser.add_argument(
            "--skip-bad-rows",
            action="store_true",
            help="import the good rows and list the bad ones, instead of refusing the file",
        )

    def handle(self, *args, file: str, skip_bad_rows: bool, **options) -> None:
        run_import_command(self, organisations_import, file, skip_bad_rows, options["verbosity"])


def run_import_command(
    command: BaseCommand,
    importer: Callable[..., ImportReport],
    path: str,
    skip_bad_rows: bool,
    verbosity: int,
) -> None:
    """Both import commands: open the file, import it, print the report; refused is an error."""

    def progress(rows: int) -> None:
        command.stderr.write(f"… {rows:,} rows read")

    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below, after the import
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}") from None
    with stream:
        report = importer(
            stream,
            skip_bad_rows=skip_bad_rows,
            progress=progress if verbosity >= 2 and sys.stderr.isatty() else None,
        )
    command.stdout.write(report.text())
    if report.refused:
        hint = "" if report.error or skip_bad_rows else " (or use --skip-bad-rows)"
        raise CommandError(f"{path}: refused, nothing was changed{hint}")
