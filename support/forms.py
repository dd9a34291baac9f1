from django import forms

from portal.lib.forms import NHSFormMixin


class CallForm(NHSFormMixin, forms.Form):
    summary = forms.CharField(
        label="What the caller needed, and what you did",
        max_length=2000,
        error_messages={"required": "Enter what the caller needed and what you did"},
        widget=forms.Textarea(attrs={"rows": 4}),
    )
    resolved = forms.BooleanField(label="Resolved on this call", required=False)


class SearchForm(forms.Form):
    """The helpdesk's search box: an address, a UPN or words of a name."""

    q = forms.CharField(
        required=False,
        max_length=254,
        error_messages={"max_length": "Enter 254 characters or fewer: no address is longer"},
    )
