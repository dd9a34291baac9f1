from django import forms

from mailboxes.models import MailboxStatus, RecipientType
from portal.lib.forms import NHSFormMixin


class MailboxFilterForm(NHSFormMixin, forms.Form):
    q = forms.CharField(label="Search by address or name", required=False, max_length=100)
    status = forms.ChoiceField(
        label="Status", required=False, choices=[("", "Any status"), *MailboxStatus.choices]
    )
    recipient_type = forms.ChoiceField(
        label="Type", required=False, choices=[("", "Any type"), *RecipientType.choices]
    )
