"""NHS.UK frontend classes on Django form widgets, so templates render fields plainly."""

from django import forms
from django.forms.widgets import Input

WIDGET_CLASSES = {
    forms.Select: "nhsuk-select",
    forms.Textarea: "nhsuk-textarea",
    forms.CheckboxInput: "nhsuk-checkboxes__input",
    forms.RadioSelect: "nhsuk-radios__input",
    forms.CheckboxSelectMultiple: "nhsuk-checkboxes__input",
    Input: "nhsuk-input",
}


class NHSFormMixin:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            widget = field.widget
            css = next((c for kind, c in WIDGET_CLASSES.items() if isinstance(widget, kind)), "")
            existing = widget.attrs.get("class", "")
            widget.attrs["class"] = " ".join(dict.fromkeys(f"{css} {existing}".split()))
            if field.help_text:
                widget.attrs["aria-describedby"] = f"id_{name}-hint"

    def full_clean(self):
        super().full_clean()
        for name in self.errors:
            if name in self.fields:
                widget = self.fields[name].widget
                base = widget.attrs.get("class", "").split()
                error_class = f"{base[0]}--error" if base else ""
                widget.attrs["class"] = " ".join(dict.fromkeys([*base, error_class]))
                described = f"id_{name}-error {widget.attrs.get('aria-describedby', '')}"
                widget.attrs["aria-describedby"] = described.strip()
