"""Forms of the dashboard: validation only; writes go through services."""

from datetime import datetime, time
from typing import Any

from django import forms
from django.contrib.auth.models import User
from django.http import QueryDict
from django.utils import timezone

from alerts.models import AlertEvent, EventState, Rule
from alerts.rule_files import RULE_FIELDS
from alerts.services.events import NOTE_MAX
from alerts.services.triage import TRIAGE_ACTIONS

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


class BulkTriageForm(forms.Form):
    """The events list's bulk bar: the checked events, one action button, a reason (needed
    to ignore or accept), a date (to accept the risk until), and the state each row showed
    (`seen`, "id:state"): a row someone changed meanwhile is refused, not overwritten."""

    ids = forms.TypedMultipleChoiceField(
        coerce=int, choices=(), error_messages={"required": "select at least one event"}
    )
    action = forms.ChoiceField(choices=[(k, label) for k, (_, label) in TRIAGE_ACTIONS.items()])
    reason = forms.CharField(required=False, max_length=NOTE_MAX)
    until = forms.DateField(required=False)

    def __init__(self, data: QueryDict) -> None:
        super().__init__(data)
        self.query = data
        ids = self.fields["ids"]
        assert isinstance(ids, forms.TypedMultipleChoiceField)
        # Any id is a choice: an id that no longer exists is refused by the service.
        ids.choices = [(v, v) for v in data.getlist("ids") if v.isdigit()]

    def seen(self) -> dict[int, str]:
        pairs = (v.partition(":") for v in self.query.getlist("seen"))
        return {int(i): state for i, _, state in pairs if i.isdigit() and state}

    def until_at(self) -> datetime | None:
        """The end of the chosen day, in the site's time zone."""
        day = self.cleaned_data.get("until")
        return timezone.make_aware(datetime.combine(day, time.max)) if day else None


class NoteForm(forms.Form):
    text = forms.CharField(max_length=NOTE_MAX, widget=forms.Textarea(attrs={"rows": 3}))


class RuleForm(forms.ModelForm):
    required_css_class = "required"
    # Saving an allow rule resolves the open events it matches (ticked from an event).
    resolve_open = forms.BooleanField(
        required=False, label="Resolve the open events it matches (as ignored, by this rule)"
    )

    class Meta:
        model = Rule
        fields = list(RULE_FIELDS)
        labels = {
            "action": "Action",
            "ip_cidr": "IP / CIDR",
            "process": "Process",
            "port_lo": "Port from",
            "port_hi": "Port to",
            "proto": "Protocol",
            "zone": "Zone",
            "reason": "Reason",
            "owner": "Owner",
            "expires_at": "Expires at",
            "enabled": "Enabled",
        }
        help_texts = {
            "ip_cidr": "an address or a CIDR such as 10.0.0.0/8; blank: any",
            "port_hi": "blank: the same as Port from",
            "expires_at": "blank: never",
        }
        widgets = {
            "expires_at": forms.DateTimeInput(
                attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"
            ),
            "reason": forms.TextInput(attrs={"size": 40}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        expires_at = self.fields["expires_at"]
        assert isinstance(expires_at, forms.DateTimeField)
        expires_at.input_formats = [
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d",
        ]


def rule_initial_from_event(event: AlertEvent, user: User | None = None) -> dict[str, Any]:
    """An allow rule for exactly this host and port, prefilled from an event; the owner
    is the network's owner, else the person writing the rule."""
    detail = event.detail or {}
    zone = detail.get("zone") or (event.host.network.zone if event.host.network else "")
    initial: dict[str, Any] = {
        "action": "allow",
        "ip_cidr": event.host.ip,
        "port_lo": event.port,
        "proto": event.proto,
        "zone": zone,
        "reason": f"allowed from event #{event.pk} ({event.get_kind_display()})",
        "enabled": True,
        "resolve_open": True,
    }
    network = event.host.network
    owner = (network.owner_email if network else "") or (
        (user.email or user.get_username()) if user is not None else ""
    )
    if owner:
        initial["owner"] = owner
    if detail.get("process"):
        initial["process"] = detail["process"]
    return initial


class RulesImportForm(forms.Form):
    """Step 1 uploads a file (dry run); step 2 sends its text back to import it."""

    file = forms.FileField(required=False)
    # The document the dry run showed, validated again when it is imported.
    document = forms.CharField(required=False, widget=forms.HiddenInput, strip=False)
