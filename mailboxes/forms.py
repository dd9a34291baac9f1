from django import forms

from mailboxes.importing import upload_problem
from mailboxes.models import ImportKind, MailboxSize, MailboxStatus, RecipientType
from portal.lib.forms import NHSFormMixin


class MailboxFilterForm(NHSFormMixin, forms.Form):
    q = forms.CharField(label="Search by address or name", required=False, max_length=100)
    status = forms.ChoiceField(
        label="Status", required=False, choices=[("", "Any status"), *MailboxStatus.choices]
    )
    recipient_type = forms.ChoiceField(
        label="Type", required=False, choices=[("", "Any type"), *RecipientType.choices]
    )
    size = forms.ChoiceField(
        label="Size", required=False, choices=[("", "Any size"), *MailboxSize.choices]
    )


class ImportForm(NHSFormMixin, forms.Form):
    """An upload for the central team: what the file holds, the file, and whether to skip bad rows.

    The file is checked only as far as can be done at once (there, not empty, not too large,
    a CSV by its name and not a spreadsheet by its first bytes); its rows are checked by the
    import, in the background.
    """

    kind = forms.ChoiceField(
        label="What does the file hold?",
        choices=ImportKind.choices,
        widget=forms.RadioSelect,
        error_messages={"required": "Select what the file holds"},
    )
    file = forms.FileField(
        label="Upload a CSV file",
        help_text="UTF-8 CSV (in Excel, save as 'CSV UTF-8'), smaller than 1 GB.",
        error_messages={
            "required": "Select a CSV file",
            "empty": "The selected file is empty",
            "invalid": "Select a CSV file",
            "missing": "Select a CSV file",
        },
    )
    skip_bad_rows = forms.BooleanField(
        label="Skip bad rows",
        required=False,
        help_text=(
            "Import the good rows and list the bad ones. Without this, a file with any bad row"
            " is refused whole and nothing changes."
        ),
    )

    def clean_file(self):
        uploaded = self.cleaned_data["file"]
        problem = upload_problem(uploaded)
        if problem:
            raise forms.ValidationError(problem)
        return uploaded

    def refuse_file(self, message: str) -> None:
        """Show `message` against the file without reading the request's body (too large)."""
        self.cleaned_data = {}
        self.add_error("file", message)
