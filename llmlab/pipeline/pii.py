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
    """Emails, then phone numbers, then IPv4 addresses replaced by their placeholders; returns the text and
    {"email": n, "phone": n, "ip": n}.

    - email: ``\\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}\\b``
    - phone: a North American number, optionally "+1" or "1" and a separator first, the area code bare or in
      parentheses, groups 3-3-4 separated by nothing, a space, "." or "-", not inside a longer word or number;
      or an international number: "+", a country code (2-9 then up to two digits), then 2 to 5 groups of
      2-4 digits, each after an optional space, "." or "-"
    - ip: four decimal octets 0-255 joined by ".", not part of a longer dotted number (999.1.1.1 and
      1.2.3.4.5 are not addresses)
    """
    counts = {}
    for name, fn in (("email", mask_emails), ("phone", mask_phone_numbers), ("ip", mask_ips)):
        text, counts[name] = fn(text)
    return text, counts
