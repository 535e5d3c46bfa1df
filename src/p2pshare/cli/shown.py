"""Strings from the network, made safe to print: always data, never commands or markup.

Names, errors and addresses come from other peers and the tracker. Printed as they
are, an escape sequence clears or rewrites the screen (a rogue provider's error text
printed a fake "Download complete"), and rich reads ``[/evil]`` as markup (a crash
for every command that prints it). Everything printed from the network goes through
``printable`` (escapes for control characters) and reaches rich as ``Text``.
"""

from __future__ import annotations

import re

from rich.text import Text

# C0 and C1 controls (ESC, CR, BS...), DEL, line and paragraph separators, and the
# bidirectional overrides that reorder what the eye reads (CVE-2021-42574)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object) -> str:
    """``value`` as text a terminal shows as it is: control characters as escapes."""
    return _UNSAFE.sub(_escape, str(value))


def shown(value: object, style: str = "") -> Text:
    """``value`` for rich: printable, and never read as markup."""
    return Text(printable(value), style=style)
