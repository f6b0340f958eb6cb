"""Rendering of notifications through the "email" template engine (settings.TEMPLATES).

Emails are `notify/email/<name>.subject.txt`, `.txt` and `.html`; chat messages
`notify/chat/<name>.txt`. The templates live in `alerts/notify/jinja2/`.
"""

from django.template import engines
from jinja2 import Environment, StrictUndefined, select_autoescape
from markupsafe import Markup

from portmon.text import one_line

ENGINE = "email"


def _field(value):
    """Every {{ field }} of an email renders on one line: a banner or a host name holding a
    newline must not forge lines of the message (a digest line, a "no findings" line)."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return one_line(value)
    return value


def environment(**options) -> Environment:
    """The Jinja2 environment of the "email" engine (TEMPLATES OPTIONS "environment")."""
    options.update(
        # Autoescape HTML only: escaping the text part would show "&lt;" in a mail client.
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_field,
    )
    return Environment(**options)


def _render(template: str, context: dict) -> str:
    return engines[ENGINE].get_template(template).render(context)


def email_render(name: str, context: dict) -> tuple[str, str, str]:
    """Return (subject, text, html) for the template set `name`."""
    subject = _render(f"notify/email/{name}.subject.txt", context)
    # A header must be one line: the subject template may wrap for readability.
    subject = " ".join(subject.split())
    context = {**context, "subject": subject}
    text = _render(f"notify/email/{name}.txt", context)
    html = _render(f"notify/email/{name}.html", context)
    return subject, text, html


def chat_render(name: str, context: dict) -> str:
    """The plain-text body of chat message `name`."""
    return _render(f"notify/chat/{name}.txt", context)
