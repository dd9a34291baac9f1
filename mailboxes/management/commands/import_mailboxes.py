"""Import mailboxes from an Exchange export (Get-Mailbox joined with Get-MailboxStatistics).

    python manage.py import_mailboxes FILE [--skip-bad-rows]

Columns (any order, names in any case, others ignored): PrimarySmtpAddress, UserPrincipalName,
DisplayName, RecipientTypeDetails, TotalItemSizeBytes, ItemCount, OrganisationCode.
A file with bad rows is refused whole, listing each one, unless --skip-bad-rows.
"""

from django.core.management.base import BaseCommand, CommandParser

from mailboxes.importing import mailboxes_import
from mailboxes.management.commands.import_organisations import run_import_command


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
        run_import_command(self, mailboxes_import, file, skip_bad_rows, options["verbosity"])
