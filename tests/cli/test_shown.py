"""What the CLI prints of a network string: the same characters, or escapes, never commands."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from p2pshare.cli.shown import printable, shown


def test_escape_sequences_and_controls_become_visible_escapes() -> None:
    assert printable("\x1b[2J\x1b[Hdone\r\n") == "\\x1b[2J\\x1b[Hdone\\x0d\\x0a"
    assert printable("abc\u202etxt.exe") == "abc\\u202etxt.exe"
    assert printable("\x9b31m") == "\\x9b31m"


def test_ordinary_names_are_unchanged() -> None:
    for name in ["holiday video.mp4", "[/evil]", "été – 日本語 🎉.txt", "a\\x1b"]:
        assert printable(name) == name


def test_markup_is_printed_as_the_characters_it_is_made_of() -> None:
    console = Console(record=True, width=200, color_system=None)
    for name in ["[/evil]", "[red on red]x", "[bold]b[/bold]", "[link=http://x]y[/link]"]:
        console.print(shown(name))
    assert console.export_text().splitlines() == [
        "[/evil]",
        "[red on red]x",
        "[bold]b[/bold]",
        "[link=http://x]y[/link]",
    ]


@given(st.text())
def test_nothing_printable_keeps_a_control_character(text: str) -> None:
    out = printable(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)
