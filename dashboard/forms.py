"""Forms of the dashboard: validation only; writes go through services."""

from django import forms

from alerts.models import AlertEvent, EventState, Rule
from alerts.rule_files import RULE_FIELDS
from alerts.services.events import NOTE_MAX

TRIAGE_STATES = [
    (EventState.ACKNOWLEDGED, "acknowledge"),
    (EventState.IGNORED, "ignore"),
    (EventState.FIXED, "fixed"),
    (EventState.REOPENED, "reopen"),
]


class TriageForm(forms.Form):
    to_state = forms.ChoiceField(choices=TRIAGE_STATES)
    note = forms.CharField(
        required=False,
        max_length=NOTE_MAX,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60, "placeholder": "note (optional)"}),
    )


class BulkTriageForm(TriageForm):
    ids = forms.TypedMultipleChoiceField(
        coerce=int, choices=(), error_messages={"required": "select at least one event"}
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Any id is a choice: an id that no longer exists is refused by the service.
        self.fields["ids"].choices = [(v, v) for v in self.data.getlist("ids") if v.isdigit()]


class NoteForm(forms.Form):
    text = forms.CharField(max_length=NOTE_MAX, widget=forms.Textarea(attrs={"rows": 3}))


class RuleForm(forms.ModelForm):
    class Meta:
        model = Rule
        fields = list(RULE_FIELDS)
        widgets = {
            "expires_at": forms.DateTimeInput(
                attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"
            )
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["expires_at"].input_formats = [
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d",
        ]


def rule_initial_from_event(event: AlertEvent) -> dict:
    """An allow rule for exactly this host and port, prefilled from an event."""
    detail = event.detail or {}
    zone = detail.get("zone") or (event.host.network.zone if event.host.network else "")
    initial = {
        "action": "allow",
        "ip_cidr": event.host.ip,
        "port_lo": event.port,
        "proto": event.proto,
        "zone": zone,
        "reason": f"allowed from event #{event.pk} ({event.get_kind_display()})",
        "enabled": True,
    }
    if detail.get("process"):
        initial["process"] = detail["process"]
    return initial


class RulesImportForm(forms.Form):
    """Step 1 uploads a file (dry run); step 2 sends its text back to import it."""

    file = forms.FileField(required=False)
    # The document the dry run showed, validated again when it is imported.
    document = forms.CharField(required=False, widget=forms.HiddenInput, strip=False)
