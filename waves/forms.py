import re

from django import forms
from django.utils import timezone

from mailboxes.models import Organisation, OrganisationType
from portal.lib.forms import NHSFormMixin
from waves.models import Wave, WaveKind

UK_TIME = "UK time (Europe/London): GMT in winter, BST in summer."


class UKDateTimeField(forms.DateTimeField):
    widget = forms.DateTimeInput(attrs={"type": "datetime-local", "class": "nhsuk-input--width-20"})

    def __init__(self, **kwargs):
        super().__init__(
            input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"], help_text=UK_TIME, **kwargs
        )


class NotBookedFilterForm(NHSFormMixin, forms.Form):
    """Which organisations yet to book to list: by region and type."""

    region = forms.ChoiceField(label="Region", required=False)
    type = forms.ChoiceField(
        label="Type", required=False, choices=[("", "Any type"), *OrganisationType.choices]
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        regions = Organisation.objects.exclude(region="").values_list("region", flat=True)
        self.fields["region"].choices = [
            ("", "Any region"),
            *((region, region) for region in regions.distinct().order_by("region")),
        ]


class MailboxFindForm(forms.Form):
    """The booking page's filter box: which of the organisation's mailboxes to list."""

    q = forms.CharField(
        required=False,
        max_length=100,
        error_messages={"max_length": "Enter 100 characters or fewer to find mailboxes"},
    )


class WaveForm(NHSFormMixin, forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(label="Type of wave", choices=WaveKind.choices)
    starts_at = UKDateTimeField(label="Final sync starts")
    cutover_at = UKDateTimeField(label="Cutover")
    booking_deadline = UKDateTimeField(label="Booking deadline")
    capacity_mailboxes = forms.IntegerField(
        label="Capacity (mailboxes)",
        min_value=1,
        max_value=1_000_000,
        widget=forms.NumberInput(attrs={"class": "nhsuk-input--width-10", "inputmode": "numeric"}),
    )
    capacity_gb = forms.IntegerField(
        label="Data budget (GB)",
        min_value=1,
        max_value=10_000_000,
        widget=forms.NumberInput(attrs={"class": "nhsuk-input--width-10", "inputmode": "numeric"}),
    )

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if Wave.objects.filter(name__iexact=name).exists():
            raise forms.ValidationError("A wave with this name already exists.")
        return name

    def clean(self):
        data = super().clean()
        starts, cutover, deadline = (
            data.get(k) for k in ("starts_at", "cutover_at", "booking_deadline")
        )
        if starts and cutover and cutover <= starts:
            self.add_error("cutover_at", "Cutover must be after the final sync starts.")
        if starts and deadline and deadline > starts:
            self.add_error(
                "booking_deadline", "The booking deadline must be before the wave starts."
            )
        if deadline and deadline <= timezone.now():
            self.add_error("booking_deadline", "The booking deadline must be in the future.")
        return data


MAX_LISTED = 50_000  # the largest organisation's mailboxes
ADDRESS_SEPARATORS = re.compile(r"[\s,;]+")


class BookingForm(NHSFormMixin, forms.Form):
    ALL = "all"
    CHOSEN = "chosen"
    LISTED = "listed"
    organisation = forms.ChoiceField(label="Organisation")
    cohort = forms.ChoiceField(
        label="Which mailboxes",
        widget=forms.RadioSelect,
        choices=[
            (ALL, "All mailboxes not yet booked"),
            (CHOSEN, "Only the mailboxes I choose"),
            (LISTED, "The mailboxes whose addresses I paste"),
        ],
        initial=ALL,
    )
    mailboxes = forms.TypedMultipleChoiceField(
        coerce=int, required=False, label="Mailboxes", widget=forms.CheckboxSelectMultiple
    )
    addresses = forms.CharField(
        required=False,
        label="Addresses",
        max_length=MAX_LISTED * 40,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "autocomplete": "off"}),
        error_messages={
            "max_length": f"Paste at most {MAX_LISTED:,} addresses: book a larger cohort in parts."
        },
    )

    def clean_addresses(self) -> list[str]:
        """One address per line, or separated by commas, semicolons or spaces, as pasted from a
        spreadsheet's column or an email's recipients; each once, in lower case."""
        listed = ADDRESS_SEPARATORS.split(self.cleaned_data["addresses"].lower())
        addresses = list(dict.fromkeys(address for address in listed if address))
        if len(addresses) > MAX_LISTED:
            raise forms.ValidationError(
                f"Paste at most {MAX_LISTED:,} addresses (these are {len(addresses):,}): "
                "book a larger cohort in parts."
            )
        return addresses

    def __init__(self, *args, organisations, bookable, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["organisation"].choices = [
            (o.code, f"{o.name} ({o.code})") for o in organisations
        ]
        self.fields["mailboxes"].choices = [(m.pk, m.address) for m in bookable]

    def clean(self):
        data = super().clean()
        if data.get("cohort") == self.CHOSEN and not data.get("mailboxes"):
            self.add_error("mailboxes", "Choose at least one mailbox, or book all of them.")
        if data.get("cohort") == self.LISTED and "addresses" in data and not data["addresses"]:
            self.add_error("addresses", "Paste the addresses of the mailboxes to book.")
        if data.get("cohort") == self.ALL and data.get("mailboxes"):
            self.add_error(
                "cohort",
                "You chose all mailboxes but also ticked some: choose “Only the mailboxes I choose” "
                "to book just those.",
            )
        if data.get("cohort") == self.ALL and data.get("addresses"):
            self.add_error(
                "cohort",
                "You chose all mailboxes but also pasted addresses: choose “The mailboxes whose "
                "addresses I paste” to book just those.",
            )
        if data.get("cohort") == self.CHOSEN and data.get("addresses"):
            self.add_error(
                "addresses",
                "You chose to tick mailboxes but also pasted addresses: book the pasted ones "
                "instead, or clear them.",
            )
        if data.get("cohort") == self.LISTED and data.get("mailboxes"):
            self.add_error(
                "mailboxes",
                "You chose to paste addresses but also ticked mailboxes: untick them, or add "
                "their addresses to the list.",
            )
        return data


class RejectForm(NHSFormMixin, forms.Form):
    reason = forms.CharField(label="Reason for rejecting", max_length=500)


class ReasonForm(NHSFormMixin, forms.Form):
    reason = forms.CharField(label="Reason", max_length=500, required=False)
