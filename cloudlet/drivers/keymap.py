"""Text to key presses on a US keyboard, as Linux input key codes (``linux/input-event-codes.h``).

A "chord" is the keys held down together for one character: ``(KEY_LEFTSHIFT, KEY_A)`` types "A".
Drivers send chords in that neutral code set (libvirt: ``VIR_KEYCODE_SET_LINUX``), so the mapping
lives here once, not in each driver. Only what a US layout types without dead keys or compose
sequences is mapped: printable ASCII, newline (Enter) and tab.
"""

from __future__ import annotations

from collections.abc import Iterable

Chord = tuple[int, ...]

KEY_ESC = 1
KEY_MINUS, KEY_EQUAL, KEY_BACKSPACE, KEY_TAB = 12, 13, 14, 15
KEY_LEFTBRACE, KEY_RIGHTBRACE, KEY_ENTER, KEY_LEFTCTRL = 26, 27, 28, 29
KEY_SEMICOLON, KEY_APOSTROPHE, KEY_GRAVE, KEY_LEFTSHIFT, KEY_BACKSLASH = 39, 40, 41, 42, 43
KEY_COMMA, KEY_DOT, KEY_SLASH, KEY_SPACE = 51, 52, 53, 57

# Keys of the letter rows, in the order of their codes (KEY_Q = 16 ... KEY_M = 50).
_LETTER_ROWS = (("qwertyuiop", 16), ("asdfghjkl", 30), ("zxcvbnm", 44))
# The digit row: KEY_1 = 2 ... KEY_9 = 10, KEY_0 = 11; with shift, the symbols above them.
_DIGITS, _DIGITS_SHIFTED = "1234567890", "!@#$%^&*()"
# Punctuation keys: (unshifted, shifted, code).
_PUNCTUATION = (
    ("-", "_", KEY_MINUS),
    ("=", "+", KEY_EQUAL),
    ("[", "{", KEY_LEFTBRACE),
    ("]", "}", KEY_RIGHTBRACE),
    (";", ":", KEY_SEMICOLON),
    ("'", '"', KEY_APOSTROPHE),
    ("`", "~", KEY_GRAVE),
    ("\\", "|", KEY_BACKSLASH),
    (",", "<", KEY_COMMA),
    (".", ">", KEY_DOT),
    ("/", "?", KEY_SLASH),
)


def _us_layout() -> dict[str, Chord]:
    keys: dict[str, Chord] = {" ": (KEY_SPACE,), "\n": (KEY_ENTER,), "\t": (KEY_TAB,)}
    for row, first in _LETTER_ROWS:
        for offset, letter in enumerate(row):
            keys[letter] = (first + offset,)
            keys[letter.upper()] = (KEY_LEFTSHIFT, first + offset)
    for offset, (digit, symbol) in enumerate(zip(_DIGITS, _DIGITS_SHIFTED, strict=True)):
        keys[digit] = (2 + offset,)
        keys[symbol] = (KEY_LEFTSHIFT, 2 + offset)
    for plain, shifted, code in _PUNCTUATION:
        keys[plain] = (code,)
        keys[shifted] = (KEY_LEFTSHIFT, code)
    return keys


US: dict[str, Chord] = _us_layout()


def normalize(text: str) -> str:
    """Line ends as typed: CRLF and a lone CR are one Enter each."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def untypable(text: str, layout: dict[str, Chord] = US) -> list[str]:
    """The distinct characters of ``text`` the layout cannot type, in order of appearance."""
    return list(dict.fromkeys(ch for ch in normalize(text) if ch not in layout))


def chords(text: str, layout: dict[str, Chord] = US) -> list[Chord]:
    """The chords that type ``text``; raises KeyError on a character the layout lacks (check
    ``untypable`` first)."""
    return [layout[ch] for ch in normalize(text)]


def describe(chars: Iterable[str]) -> str:
    """Characters for a message: printable ones quoted, the rest as U+XXXX."""
    return ", ".join(repr(ch) if ch.isprintable() else f"U+{ord(ch):04X}" for ch in chars)
