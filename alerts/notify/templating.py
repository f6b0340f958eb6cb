"""Jinja2 rendering of emails: `<name>.subject.txt`, `<name>.txt` and `<name>.html`."""

from functools import lru_cache
from pathlib import Path

from django.conf import settings
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from portmon.text import one_line


def _field(value):
    """Every {{ field }} of an email renders on one line: a banner or a host name holding a
    newline must not forge lines of the message (a digest line, a "no findings" line)."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return one_line(value)
    return value


@lru_cache(maxsize=1)
def _environment() -> Environment:
    # Autoescape HTML only: escaping the text part would show "&lt;" in a mail client.
    return Environment(
        loader=FileSystemLoader(Path(settings.BASE_DIR) / "templates" / "alerts" / "email"),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_field,
    )


def email_render(name: str, context: dict) -> tuple[str, str, str]:
    """Return (subject, text, html) for the template set `name`."""
    env = _environment()
    subject = env.get_template(f"{name}.subject.txt").render(context)
    # A header must be one line: the subject template may wrap for readability.
    subject = " ".join(subject.split())
    context = {**context, "subject": subject}
    text = env.get_template(f"{name}.txt").render(context)
    html = env.get_template(f"{name}.html").render(context)
    return subject, text, html
