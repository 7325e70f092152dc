"""One normaliser for texts and labels, used before the gate, the duplicate and leakage checks and
the label comparison: Unicode NFC (`résilié` typed as one code point or as `e` + accent is one
word), format characters removed (zero-width spaces, joiners, byte-order marks, bidi marks: the
tokenizer drops them, so texts differing only by them are the same text to the model), and control
characters other than tab, newline and carriage return removed (NUL bytes and the like)."""

from __future__ import annotations

import re
from typing import Any

# Unicode's format characters (category Cf, as of Unicode 14), and the C0/C1 controls but \t \n \r.
INVISIBLE = re.compile(
    "["
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
    "]"
)


def clean(value: str) -> str:
    """One text or label in NFC with its invisible characters removed."""
    import unicodedata

    return INVISIBLE.sub("", unicodedata.normalize("NFC", value))


def clean_series(values: Any) -> tuple[Any, int]:
    """A pandas string Series cleaned value by value (nulls kept), and how many values changed."""
    present = values.notna()
    cleaned = values.copy()
    cleaned[present] = [clean(str(value)) for value in values[present]]
    changed = int((cleaned[present] != values[present]).sum())
    return cleaned.astype("string"), changed
