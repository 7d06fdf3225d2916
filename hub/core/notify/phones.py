"""Phone numbers as users type them and as networks send them."""

from __future__ import annotations

import re

DIGITS = re.compile(r"\D")


def phone_forms(number: str) -> list[str]:
    """The spellings one phone number is stored under: `+8613800138000`, `13800138000`, …

    Replies arrive in international form (`+86…`) while users type numbers either way, so a
    reply is matched against every form.
    """
    digits = DIGITS.sub("", number or "")
    forms = {number, digits, f"+{digits}"}
    if digits.startswith("86") and len(digits) == 13:
        forms |= {digits[2:], f"+{digits}"}
    if len(digits) == 11 and digits.startswith("1"):
        forms |= {f"+86{digits}", f"86{digits}"}
    return sorted(f for f in forms if f and f != "+")
