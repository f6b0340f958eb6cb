"""An audit entry's before/after as a list of field changes (pure: no database)."""

import json
from dataclasses import dataclass

# Longest value shown in full; longer ones are cut (the admin keeps the whole entry).
VALUE_CHARS = 300


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: str | None  # None: the field was not there (a creation)
    after: str | None  # None: the field is gone (a deletion)


def _text(value) -> str:
    if isinstance(value, str):
        text = value
    elif value is None:
        text = "(none)"
    else:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def field_changes(before, after) -> list[FieldChange]:
    """The fields that differ between two snapshots, in the order they were stored; a
    creation lists every field's new value, a deletion every old one. Values that are not
    dicts (a bare list or text) show as one field named "value"."""
    if before is not None and not isinstance(before, dict):
        before = {"value": before}
    if after is not None and not isinstance(after, dict):
        after = {"value": after}
    old, new = before or {}, after or {}
    changes = []
    for name in [*old, *(k for k in new if k not in old)]:
        if name in old and name in new and old[name] == new[name]:
            continue
        changes.append(
            FieldChange(
                field=str(name),
                before=_text(old[name]) if name in old else None,
                after=_text(new[name]) if name in new else None,
            )
        )
    return changes
