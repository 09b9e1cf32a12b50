"""Format checkers for ``format`` assertions, so tools get strict answers without extras.

jsonschema checks ``date-time``, ``time``, ``uri`` and ``hostname`` only when optional packages
are installed, and checks ``email`` by looking for an ``@``. A tool that says
``"format": "date-time"`` wants a date-time, whatever happens to be installed, so the formats
tool schemas commonly use are checked here by a few small functions. Kept apart from the
validator and the explanation code: they are pure string predicates, tested against the
JSON Schema Test Suite's format cases.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date

from jsonschema import Draft202012Validator, FormatChecker

from .patterns import compile_pattern

__all__ = ["FORMAT_CHECKER"]


_DATE = r"(\d{4})-(\d{2})-(\d{2})"
_TIME = r"(\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
_DATE_TIME_RE = re.compile(rf"{_DATE}[Tt ]{_TIME}", re.ASCII)
_TIME_RE = re.compile(_TIME, re.ASCII)


def _valid_time(groups: Sequence[str | None]) -> bool:
    hour, minute, second, _frac, zulu, sign, off_h, off_m = groups
    h, m, s = int(hour or 0), int(minute or 0), int(second or 0)
    oh, om = (int(off_h or 0), int(off_m or 0)) if not zulu else (0, 0)
    if h > 23 or m > 59 or s > 60 or oh > 23 or om > 59:
        return False
    if s == 60:  # a leap second exists only at 23:59:60 UTC
        offset = (oh * 60 + om) * (-1 if sign == "-" else 1)
        return (h * 60 + m - offset) % 1440 == 23 * 60 + 59
    return True


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    match = _DATE_TIME_RE.fullmatch(value)
    if not match:
        return False
    try:
        date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    return _valid_time(match.groups()[3:])


def _is_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    match = _TIME_RE.fullmatch(value)
    return match is not None and _valid_time(match.groups())


_PCT = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"
_PATH_RE = re.compile(rf"(?:{_PCHAR}|/)*")
_QUERY_RE = re.compile(rf"(?:{_PCHAR}|[/?])*")
_USERINFO_RE = re.compile(rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*")
_REG_NAME_RE = re.compile(rf"(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*")
_URI_SPLIT_RE = re.compile(
    r"(?:([^:/?#]+):)?(?://([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?", re.S
)
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_IPV_FUTURE_RE = re.compile(rf"v[0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+")


def _valid_authority(authority: str) -> bool:
    import ipaddress

    userinfo, at, hostport = authority.rpartition("@")
    if at and not _USERINFO_RE.fullmatch(userinfo):
        return False
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            return False
        literal, rest = hostport[1:end], hostport[end + 1 :]
        if not _IPV_FUTURE_RE.fullmatch(literal):
            try:
                ipaddress.IPv6Address(literal)
            except ValueError:
                return False
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            return False
    else:
        host, colon, port_text = hostport.partition(":")
        port = port_text if colon else None
        if not _REG_NAME_RE.fullmatch(host):
            return False
    return port is None or port.isascii() and (port == "" or port.isdigit())


def _split_uri(value: str) -> tuple[str | None, str | None, str, str | None, str | None] | None:
    match = _URI_SPLIT_RE.fullmatch(value)
    if not match:
        return None
    scheme, authority, path, query, fragment = match.groups()
    if scheme is not None and not _SCHEME_RE.fullmatch(scheme):
        return None
    if authority is not None and not _valid_authority(authority):
        return None
    if not _PATH_RE.fullmatch(path):
        return None
    for part in (query, fragment):
        if part is not None and not _QUERY_RE.fullmatch(part):
            return None
    return scheme, authority, path, query, fragment


def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = _split_uri(value)
    return parts is not None and parts[0] is not None


def _is_uri_reference(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = _split_uri(value)
    if parts is None:
        return False
    scheme, authority, path, _, _ = parts
    if scheme is None and authority is None and not path.startswith("/"):
        # A relative path's first segment may not contain a colon (it would read as a scheme).
        return ":" not in path.split("/", 1)[0]
    return True


_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def _is_uuid(value: object) -> bool:
    return not isinstance(value, str) or bool(_UUID_RE.fullmatch(value))


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+"
_DOT_ATOM_RE = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_QUOTED_RE = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _is_hostname(value: object) -> bool:
    """RFC 1123 host name: dot-separated ASCII labels of 1-63 characters, 253 in all.

    A-labels (``xn--``) must be valid IDNA (checked with ``idna``, which httpx already needs).
    """
    if not isinstance(value, str):
        return True
    if not value or len(value) > 253:
        return False
    return all(_valid_label(label) for label in value.split("."))


def _valid_label(label: str) -> bool:
    if not _LABEL_RE.fullmatch(label):
        return False
    if label[2:4] != "--":
        return True
    # "--" in the 3rd and 4th places is reserved for A-labels ("xn--"), which must decode.
    if label[:2].lower() != "xn":
        return False
    import idna

    try:
        idna.decode(label)
    except (idna.IDNAError, UnicodeError):
        return False
    return True


def _is_email(value: object) -> bool:
    """RFC 5321 mailbox: dot-atom or quoted local part, host name or address literal."""
    import ipaddress

    if not isinstance(value, str):
        return True
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        return False
    if not (_DOT_ATOM_RE.fullmatch(local) or _QUOTED_RE.fullmatch(local)):
        return False
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        try:
            if literal[:5].lower() == "ipv6:":
                ipaddress.IPv6Address(literal[5:])
            else:
                ipaddress.IPv4Address(literal)
        except ValueError:
            return False
        return True
    return _is_hostname(domain)


def _is_regex(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        compile_pattern(value)
    except re.error:
        return False
    return True


def _format_checker() -> FormatChecker:
    """Draft 2020-12's checkers plus ours for the formats jsonschema leaves unchecked here.

    jsonschema checks ``date-time``, ``time``, ``uri`` and ``hostname`` only with optional
    extra packages; these few functions remove that dependency, and are stricter on ``uuid``
    and ``email`` (jsonschema only looks for an ``@``).
    """
    checker = FormatChecker(formats=())
    checker.checkers = dict(Draft202012Validator.FORMAT_CHECKER.checkers)
    ours = {
        "date-time": _is_date_time,
        "time": _is_time,
        "uri": _is_uri,
        "uri-reference": _is_uri_reference,
        "uuid": _is_uuid,
        "email": _is_email,
        "hostname": _is_hostname,
        "regex": _is_regex,
    }
    for name, func in ours.items():
        checker.checks(name)(func)
    return checker


FORMAT_CHECKER = _format_checker()
"""The format checker used when formats are asserted (the default)."""
