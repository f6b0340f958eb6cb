"""Text from outside (imported files, banners, agents) as stored and shown: one line."""

import re

# C0 and C1 controls (newline, carriage return, escape, NEL...), DEL and the Unicode line and
# paragraph separators: any of them in a banner could start a line of its own in an email.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(text: str) -> str:
    """`text` with every run of control characters made one space (and no edge spaces
    they left): "RDP\\n\\nAll clear" is "RDP All clear"."""
    if not CONTROL.search(text):
        return text
    return CONTROL.sub(" ", text).strip()
