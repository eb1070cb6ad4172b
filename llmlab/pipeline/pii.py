"""PII masking: email addresses, phone numbers and IP addresses replaced by placeholders, with counts (the
placeholders of Stanford CS336's data assignment)."""

from __future__ import annotations

import re

EMAIL = "|||EMAIL_ADDRESS|||"
PHONE = "|||PHONE_NUMBER|||"
IP = "|||IP_ADDRESS|||"

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# North American numbers with optional +1, separators (space, dot, dash) and area-code parentheses, and
# international numbers written +CC followed by 7-12 digits in groups
_PHONE = re.compile(r"(?<![\w+])(?:\+?1[\s.-]?)?(?:\(\d{3}\)|\d{3})[\s.-]?\d{3}[\s.-]?\d{4}(?!\w)"
                    r"|(?<![\w+])\+(?:[2-9]\d{0,2})(?:[\s.-]?\d{2,4}){2,5}(?!\w)")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\d.]*\d)")


def mask_emails(text: str) -> tuple[str, int]:
    return _EMAIL.subn(EMAIL, text)


def mask_phone_numbers(text: str) -> tuple[str, int]:
    return _PHONE.subn(PHONE, text)


def mask_ips(text: str) -> tuple[str, int]:
    """IPv4 addresses (each octet 0-255, not part of a longer dotted number)."""
    return _IPV4.subn(IP, text)


def mask_pii(text: str) -> tuple[str, dict[str, int]]:
    counts = {}
    for name, fn in (("email", mask_emails), ("phone", mask_phone_numbers), ("ip", mask_ips)):
        text, counts[name] = fn(text)
    return text, counts
