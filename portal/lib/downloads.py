"""CSV downloads, streamed a row at a time: an organisation's 50,000 mailboxes never sit in
memory as one file."""

import csv
import itertools
from collections.abc import Iterable, Sequence

from django.http import HttpResponse, StreamingHttpResponse

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    """A file-like object whose write returns the line, for streaming csv.writer's output."""

    def write(self, value: str) -> str:
        return value


def csv_download(
    filename: str, header: Sequence[str], rows: Iterable[Sequence]
) -> StreamingHttpResponse:
    """The header and rows as a CSV attachment named `filename`, written as they are read."""
    writer = csv.writer(_Echo(), lineterminator="\r\n")
    response = StreamingHttpResponse(
        (writer.writerow(row) for row in itertools.chain([header], rows)),
        content_type="text/csv; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def spreadsheet_text(text: str) -> str:
    """Text a spreadsheet shows as it is: one starting like a formula gets a leading quote, so
    a name imported as "=HYPERLINK(…)" is not run when the CSV is opened (OWASP CSV injection)."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def download_refused(form) -> HttpResponse:
    """400 naming each filter of `form` a download cannot use. Refused, not ignored: a file of
    every row instead of the filtered ones is not a mistake to find out after a mail merge."""
    reasons = "; ".join(
        f"{form.fields[name].label}: {' '.join(errors)}" for name, errors in form.errors.items()
    )
    return HttpResponse(f"No CSV: {reasons}", status=400, content_type="text/plain; charset=utf-8")
