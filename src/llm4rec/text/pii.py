"""PII scrubbing: personal data out of text before it is encoded or stored.

:func:`scrub_pii` replaces, in this order of precedence (the leftmost match
wins; at one position the first kind listed wins):

========================  =================  ==========================================
what                      placeholder        rule
========================  =================  ==========================================
URL with a query string   ``[URL]``          ``http(s)://`` or ``www.`` followed by ``?``
e-mail address            ``[EMAIL]``        ``local@domain.tld``
phone number              ``[PHONE]``        7-15 digits in groups joined by one kind of
                                             separator (space, dot or dash), after a
                                             ``+cc`` or ``(area)`` prefix or in three or
                                             more groups; dates, runs of years
                                             (``1939-1945``), product codes
                                             (``6187-2419``, ``7586 0.26``) and short
                                             groups (``Size 10 12 14 16``) are kept
long digit run            ``[NUMBER]``       7 or more digits in a row, or more than 15
                                             digits in phone-like groups (card numbers)
========================  =================  ==========================================

Ordinary numbers survive: ``"Apollo 13 (1995)"``, ``"iPhone 12"``, ``"SPF 50"``,
``"Size 10 12 14"``, ``"2020-01-15"``. URLs without a query string are kept:
they name pages, not people.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["PLACEHOLDERS", "scrub_pii"]

#: kind -> the token that replaces it
PLACEHOLDERS: dict[str, str] = {"url": "[URL]", "email": "[EMAIL]", "phone": "[PHONE]", "number": "[NUMBER]"}

_URL = r"(?:https?://|www\.)[^\s?#]*\?[^\s#]*(?:#\S*)?"
_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
# Digit groups joined by one separator, with an optional +country and (area) prefix.
_PHONE = r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,5}\)[\s.-]?)?\d{1,5}(?:[\s.-]\d{1,5})+"
_DIGITS = r"\d{7,}"
_PATTERN = re.compile(
    rf"(?P<url>{_URL})|(?P<email>{_EMAIL})|(?<![\w+])(?P<phone>{_PHONE})(?![\w])|(?<!\w)(?P<number>{_DIGITS})",
)
_YEARS = re.compile(r"(?:1[5-9]|20)\d\d(?:[\s-]+(?:1[5-9]|20)\d\d){0,2}")
_DATE = re.compile(r"\d{4}[.-]\d{1,2}[.-]\d{1,2}|\d{1,2}[.-]\d{1,2}[.-]\d{4}")
_PHONE_PREFIX = re.compile(r"^(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,5}\)[\s.-]?)?")
_GROUP = re.compile(r"\d+")
_SEPARATOR = re.compile(r"[\s.-]")
_DIGIT_RUN = re.compile(_DIGITS)


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup
    text = match.group()
    if kind != "phone":
        return PLACEHOLDERS[kind]
    digits = sum(c.isdigit() for c in text)
    if digits > 15:
        return PLACEHOLDERS["number"]
    body = _PHONE_PREFIX.sub("", text)
    groups, separators = _GROUP.findall(body), set(_SEPARATOR.findall(body))
    # One separator kind throughout ("7586 0.26" is a code and a decimal), a +/( prefix or three
    # groups ("6187-2419" is a model number), not only short groups ("Size 10 12 14 16").
    phone_like = (len(separators) <= 1 and (body != text or len(groups) >= 3)
                  and (digits >= 9 or max(map(len, groups)) >= 3)
                  and not (_YEARS.fullmatch(text) or _DATE.fullmatch(text)))
    if digits >= 7 and phone_like:
        return PLACEHOLDERS["phone"]
    return _DIGIT_RUN.sub(PLACEHOLDERS["number"], text)  # not a phone, but hide a long run inside


def scrub_pii(texts: str | Iterable[str]) -> str | list[str]:
    """Replace e-mail addresses, phone numbers, long digit runs and URLs with
    query strings by placeholder tokens (see the module docstring).

    Takes one string (returns one) or an iterable of strings (returns a list,
    same order). Whitespace and every other character are left as they are.
    """
    if isinstance(texts, str):
        return _PATTERN.sub(_replace, texts)
    sub = _PATTERN.sub
    return [sub(_replace, t) for t in texts]
