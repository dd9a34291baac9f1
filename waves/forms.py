from django import forms
from django.utils import timezone

from portal.lib.forms import NHSFormMixin
from waves.models import Wave, WaveKind

UK_TIME = "UK time (Europe/London): GMT in winter, BST in summer."


class UKDateTimeField(forms.DateTimeField):
    widget = forms.DateTimeInput(attrs={"type": "datetime-local", "class": "nhsuk-input--width-20"})

    def __init__(self, **kwargs):
        super().__init__(
            input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"], help_text=UK_TIME, **kwargs
        )


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


class BookingForm(NHSFormMixin, forms.Form):
    ALL = "all"
    CHOSEN = "chosen"
    organisation = forms.ChoiceField(label="Organisation")
    cohort = forms.ChoiceField(
        label="Which mailboxes",
        widget=forms.RadioSelect,
        choices=[(ALL, "All mailboxes not yet booked"), (CHOSEN, "Only the mailboxes I choose")],
        initial=ALL,
    )
    mailboxes = forms.TypedMultipleChoiceField(
        coerce=int, required=False, label="Mailboxes", widget=forms.CheckboxSelectMultiple
    )

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
        if data.get("cohort") == self.ALL and data.get("mailboxes"):
            self.add_error(
                "cohort",
                "You chose all mailboxes but also ticked some: choose “Only the mailboxes I choose” "
                "to book just those.",
            )
        return data


class RejectForm(NHSFormMixin, forms.Form):
    reason = forms.CharField(label="Reason for rejecting", max_length=500)


class ReasonForm(NHSFormMixin, forms.Form):
    reason = forms.CharField(label="Reason", max_length=500, required=False)
