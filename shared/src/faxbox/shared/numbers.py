"""Fax destination number rules: the one place that decides whether a number may be faxed.

The CLI, the email validator (the local part of ``<number>@<realm>``) and the web portal all
call :func:`normalize` (or :func:`check`), so a number is accepted or refused — with the same
reason — whichever way it arrives.

Accepted input is digits with an optional single leading ``+``:

* ``+<country code><number>``, or the same after the dialling prefixes ``00`` or ``011``;
* North American (NANP) numbers without a prefix: 10 digits, or 11 digits starting with 1.

Everything else is refused with a :class:`RefusalCode` and a sentence meant for the sender.
Spaces, dashes, dots and parentheses are refused rather than stripped: in an email address
``1-555-...`` is a different mailbox from ``1555...``, and silently rewriting it would fax a
number the sender never typed in that form.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from typing import Final, cast

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ALL_COUNTRIES",
    "MAX_EXTENSION_DIGITS",
    "NormalizedNumber",
    "NumberCategory",
    "NumberPolicy",
    "NumberRefused",
    "RefusalCode",
    "assignable",
    "check",
    "fax_address",
    "home_regions",
    "normalize",
    "validate_region",
]


class RefusalCode(StrEnum):
    """Why a number was refused. Values are stable: they are stored and shown to API clients."""

    EMPTY = "empty"
    INVALID_CHARACTERS = "invalid_characters"
    LETTERS = "letters"
    PLUS_NOT_LEADING = "plus_not_leading"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    MISSING_INTERNATIONAL_PREFIX = "missing_international_prefix"
    INVALID_NUMBER = "invalid_number"
    BLOCKED_CATEGORY = "blocked_category"
    COUNTRY_NOT_ALLOWED = "country_not_allowed"


class NumberCategory(StrEnum):
    """The kind of line a number reaches, as classified by libphonenumber."""

    FIXED_LINE = "fixed_line"
    MOBILE = "mobile"
    # NANP and a few other plans can't tell fixed from mobile by the number alone.
    FIXED_LINE_OR_MOBILE = "fixed_line_or_mobile"
    TOLL_FREE = "toll_free"
    PREMIUM_RATE = "premium_rate"
    SHARED_COST = "shared_cost"
    VOIP = "voip"
    PERSONAL_NUMBER = "personal_number"
    PAGER = "pager"
    UAN = "uan"
    VOICEMAIL = "voicemail"
    UNKNOWN = "unknown"


_PNT = phonenumbers.PhoneNumberType
_CATEGORY_BY_TYPE: Final[dict[int, NumberCategory]] = {
    _PNT.FIXED_LINE: NumberCategory.FIXED_LINE,
    _PNT.MOBILE: NumberCategory.MOBILE,
    _PNT.FIXED_LINE_OR_MOBILE: NumberCategory.FIXED_LINE_OR_MOBILE,
    _PNT.TOLL_FREE: NumberCategory.TOLL_FREE,
    _PNT.PREMIUM_RATE: NumberCategory.PREMIUM_RATE,
    _PNT.SHARED_COST: NumberCategory.SHARED_COST,
    _PNT.VOIP: NumberCategory.VOIP,
    _PNT.PERSONAL_NUMBER: NumberCategory.PERSONAL_NUMBER,
    _PNT.PAGER: NumberCategory.PAGER,
    _PNT.UAN: NumberCategory.UAN,
    _PNT.VOICEMAIL: NumberCategory.VOICEMAIL,
}

_CATEGORY_LABEL: Final[dict[NumberCategory, str]] = {
    NumberCategory.FIXED_LINE: "landline",
    NumberCategory.MOBILE: "mobile",
    NumberCategory.FIXED_LINE_OR_MOBILE: "landline or mobile",
    NumberCategory.TOLL_FREE: "toll-free",
    NumberCategory.PREMIUM_RATE: "premium-rate",
    NumberCategory.SHARED_COST: "shared-cost",
    NumberCategory.VOIP: "internet (VoIP)",
    NumberCategory.PERSONAL_NUMBER: "personal (follow-me)",
    NumberCategory.PAGER: "pager",
    NumberCategory.UAN: "company-wide (UAN)",
    NumberCategory.VOICEMAIL: "voicemail",
    NumberCategory.UNKNOWN: "unclassified",
}

# libphonenumber's pseudo-region for numbers that belong to no country (+800, +882 …).
NON_GEOGRAPHIC_REGION: Final = phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY

# An account's allowed countries may be this alone: every country.
ALL_COUNTRIES: Final = "*"

# The countries of the North American Numbering Plan (+1): the US, Canada and the
# Caribbean states and territories that share the plan.
NANP_REGIONS: Final = frozenset(phonenumbers.region_codes_for_country_code(1))


def validate_region(value: str) -> str:
    """An ISO 3166-1 alpha-2 code libphonenumber knows (upper-cased), or ValueError."""
    code = value.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        hint = " (the United Kingdom is GB)" if code == "UK" else ""
        raise ValueError(f"{value!r} is not an ISO 3166 alpha-2 country code{hint}")
    return code


def home_regions(country: str) -> list[str]:
    """The countries an account in ``country`` may fax by default: that one, or for a
    North American home every country of the shared +1 plan (one dials them alike)."""
    code = validate_region(country)
    return sorted(NANP_REGIONS) if code in NANP_REGIONS else [code]


def _countries_phrase(regions: frozenset[str]) -> str:
    if regions == NANP_REGIONS:
        return "North America (the countries of the +1 plan)"
    # Country codes, not names: libphonenumber's names live in its geocoder, whose
    # import costs seconds.
    if regions >= NANP_REGIONS:
        return _join(["North America (the +1 countries)", *sorted(regions - NANP_REGIONS)], "or")
    return _join(sorted(regions), "or")


class NumberPolicy(BaseModel):
    """Per-account limits on where faxes may go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Premium-rate is blocked by default because a fax call to one is billed to the
    # account at the line's rate, and a fax that never connects can still be charged.
    blocked_categories: frozenset[NumberCategory] = frozenset({NumberCategory.PREMIUM_RATE})
    allowed_countries: frozenset[str] = Field(
        default=frozenset(),
        description=(
            "ISO 3166-1 alpha-2 region codes (plus '001' for non-geographic numbers); "
            "empty means every country is allowed."
        ),
    )

    @field_validator("allowed_countries", mode="before")
    @classmethod
    def _upper_case_regions(cls, value: object) -> object:
        # Settings and admin forms give "us" as often as "US"; both mean the same region.
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple | set | frozenset):
            return frozenset(v.strip().upper() if isinstance(v, str) else v for v in value)
        return value

    @field_validator("allowed_countries")
    @classmethod
    def _known_regions(cls, value: frozenset[str]) -> frozenset[str]:
        # A typo such as "UK" (the ISO code is GB) would otherwise silently block a country.
        unknown = sorted(
            r
            for r in value
            if r not in phonenumbers.SUPPORTED_REGIONS and r != NON_GEOGRAPHIC_REGION
        )
        if unknown:
            raise ValueError(f"unknown region code(s): {', '.join(unknown)}")
        return value


class NormalizedNumber(BaseModel):
    """An accepted fax destination."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    e164: str = Field(pattern=r"^\+[1-9][0-9]{1,14}$", examples=["+442079460958"])
    region: str = Field(
        description="ISO 3166-1 alpha-2 code, or '001' for non-geographic numbers such as +800."
    )
    category: NumberCategory
    national_format: str = Field(examples=["020 7946 0958"])
    international_format: str = Field(examples=["+44 20 7946 0958"])


class NumberRefused(Exception):
    """The number can't be faxed; ``message`` is written for the person who typed it."""

    def __init__(self, code: RefusalCode, message: str) -> None:
        # Both go to Exception so the exception survives pickling (multiprocessing, Celery …).
        super().__init__(code, message)
        self.code: RefusalCode = code
        self.message: str = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"NumberRefused(code={self.code.value!r}, message={self.message!r})"


_DEFAULT_POLICY: Final = NumberPolicy()
_MAX_E164_DIGITS: Final = 15
_NANP_LENGTH: Final = 10

_VALID_FORMS: Final = (
    "2125551234 for a North American number, "
    "or +442079460958 (+, country code, number) for any other country"
)
_EXAMPLES: Final = "for example " + _VALID_FORMS
_INTERNATIONAL_HINT: Final = (
    "numbers outside North America must start with + (or 00 or 011) and the country code, "
    "for example +442079460958"
)

_LINE_BREAKS: Final = frozenset("\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029")
# What people group digits with, named as the refusal message names them, in that order.
_SEPARATORS: Final[tuple[tuple[str, Callable[[str], bool]], ...]] = (
    # isspace() rather than " " so that tabs and no-break spaces pasted from documents count.
    ("spaces", lambda ch: ch.isspace() and ch not in _LINE_BREAKS),
    ("line breaks", lambda ch: ch in _LINE_BREAKS),
    ("dashes", lambda ch: ch in "-\u2010\u2011\u2012\u2013\u2014\u2212"),
    ("dots", lambda ch: ch == "."),
    ("parentheses", lambda ch: ch in "()"),
    ("slashes", lambda ch: ch == "/"),
)
# Only ASCII digits: str.isdigit() also accepts Arabic-Indic or full-width digits, which
# carriers don't dial and which would make two addresses for one number.
_DIGITS_ONLY: Final = re.compile(r"\+?[0-9]+")

# NANP premium-rate services that libphonenumber may classify as ordinary lines: the 900
# area code, and the 976 prefix (historically a local premium exchange inside any area code,
# so it is matched both as area code and as exchange).
_NANP_PREMIUM_AREA_CODES: Final = frozenset({"900", "976"})
_NANP_PREMIUM_EXCHANGES: Final = frozenset({"976"})


def normalize(raw: str, policy: NumberPolicy | None = None) -> NormalizedNumber:
    """Return the fax destination ``raw`` denotes, or raise :class:`NumberRefused`.

    ``raw`` is an email local part or a typed number; it is not trimmed or cleaned up.
    ``policy`` defaults to :class:`NumberPolicy()` (premium-rate blocked, every country).
    """
    if policy is None:
        policy = _DEFAULT_POLICY
    has_plus, digits = _read_digits(raw)
    with_country_code = _strip_international_prefix(has_plus, digits)
    if with_country_code is None:
        with_country_code = "1" + _national_nanp(digits)
    return _resolve(with_country_code, policy)


def check(raw: str, policy: NumberPolicy | None = None) -> NormalizedNumber | NumberRefused:
    """Like :func:`normalize`, but return the refusal instead of raising it."""
    try:
        return normalize(raw, policy)
    except NumberRefused as refused:
        return refused


_E164: Final = re.compile(r"\+[1-9][0-9]{1,14}")
_DNS_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_REALM: Final = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")


def fax_address(number_e164: str, realm: str) -> str:
    """The To address that faxes ``number_e164``, e.g. ``+442079460958@acme.faxbox.test``.

    The E.164 form keeps its ``+`` because ``+`` is legal in an email local part and makes the
    address unambiguous: :func:`normalize` reads it back as the same number, whereas a bare
    ``442079460958`` would be refused as missing its international prefix.
    Raises ``ValueError`` if ``number_e164`` isn't E.164 (use :func:`normalize` first) or
    ``realm`` isn't a domain name.
    """
    if not _E164.fullmatch(number_e164):
        raise ValueError(
            f"not an E.164 number: {number_e164!r}; pass NormalizedNumber.e164 from normalize()"
        )
    domain = realm.lower()
    if len(domain) > 253 or not _REALM.fullmatch(domain):
        raise ValueError(f"not a domain name: {realm!r}")
    return f"{number_e164}@{domain}"


def _read_digits(raw: str) -> tuple[bool, str]:
    """Check the characters of ``raw``; return (has leading +, the digits)."""
    if not raw or raw.isspace():
        raise NumberRefused(
            RefusalCode.EMPTY,
            f"No fax number was given. Enter the number using digits only, {_EXAMPLES}.",
        )
    # Letters first: "1-800-FLOWERS" is a vanity number, and the useful advice is about the
    # letters, not the dashes.
    if any(ch.isalpha() for ch in raw):
        raise NumberRefused(
            RefusalCode.LETTERS,
            "The fax number contains letters, but only digits are allowed (and extensions "
            "can't be dialled). If it's a word number such as 1-800-FLOWERS, use the digits "
            "from a phone keypad instead: 1800FLOWERS becomes 18003569377. Write the number "
            f"with digits only, {_EXAMPLES}.",
        )
    found = [name for name, matches in _SEPARATORS if any(matches(ch) for ch in raw)]
    if found:
        listed = _join(found)
        raise NumberRefused(
            RefusalCode.INVALID_CHARACTERS,
            f"The fax number contains {listed}. Only digits and an optional leading + are "
            f"allowed; remove the {listed} and write the digits together, for example "
            "+442079460958 rather than +44 20 7946 0958, or 2125551234 rather than "
            "212-555-1234.",
        )
    if "+" in raw[1:]:
        raise NumberRefused(
            RefusalCode.PLUS_NOT_LEADING,
            "The fax number has a + that isn't at the very start. A + may appear only once, "
            "as the first character, followed by the country code and number, for example "
            "+442079460958.",
        )
    if not _DIGITS_ONLY.fullmatch(raw):
        if raw == "+":
            raise NumberRefused(
                RefusalCode.TOO_SHORT,
                "There is nothing after the +. Put the country code and the number after it, "
                "for example +442079460958.",
            )
        raise NumberRefused(
            RefusalCode.INVALID_CHARACTERS,
            "The fax number contains characters that aren't allowed. Only the digits 0-9 and "
            f"an optional leading + may be used, {_EXAMPLES}.",
        )
    return raw.startswith("+"), raw.lstrip("+")


def _strip_international_prefix(has_plus: bool, digits: str) -> str | None:
    """Digits starting with the country code, or None if there is no international indicator."""
    if has_plus:
        return digits
    for prefix in ("011", "00"):  # NANP and ITU exit codes; neither is a prefix of the other
        if digits.startswith(prefix):
            rest = digits[len(prefix) :]
            if not rest:
                raise NumberRefused(
                    RefusalCode.TOO_SHORT,
                    f"There is nothing after the international prefix {prefix}. Put the "
                    f"country code and the number after it, for example {prefix}442079460958 "
                    "or +442079460958.",
                )
            return rest
    return None


def _national_nanp(digits: str) -> str:
    """The 10 NANP digits of a number written without an international indicator."""
    count = len(digits)
    if count > _MAX_E164_DIGITS:
        raise _too_many_digits(count)
    if count < _NANP_LENGTH:
        raise NumberRefused(
            RefusalCode.TOO_SHORT,
            f"The fax number has only {_digits(count)}. North American numbers need 10 digits "
            "(3-digit area code and 7-digit number), for example 2125551234; "
            f"{_INTERNATIONAL_HINT}.",
        )
    if digits.startswith("1"):
        if count == _NANP_LENGTH + 1:
            return digits[1:]
        raise _nanp_length(count - 1, "1")
    if digits.startswith("0"):
        # A leading 0 is the trunk prefix of most non-NANP countries: this is almost
        # certainly a foreign number written the way it's dialled at home.
        raise NumberRefused(
            RefusalCode.MISSING_INTERNATIONAL_PREFIX,
            "The fax number starts with 0, which North American numbers never do, so it looks "
            "like a number from another country written without its country code. Write it "
            "as +, the country code, then the number without its leading 0: for example "
            "020 7946 0958 in the UK becomes +442079460958.",
        )
    if count == _NANP_LENGTH:
        return digits
    raise NumberRefused(
        RefusalCode.MISSING_INTERNATIONAL_PREFIX,
        f"The fax number has {count} digits and no + at the start, so it can't be a North "
        "American number (those have 10 digits, or 11 starting with 1). If it's a number in "
        "another country, start it with + (or 00 or 011) and the country code, for example "
        "+442079460958 rather than 442079460958.",
    )


def _nanp_length(count: int, written_prefix: str) -> NumberRefused:
    """The refusal for a NANP number whose digits after the leading 1 aren't exactly 10."""
    code = RefusalCode.TOO_SHORT if count < _NANP_LENGTH else RefusalCode.TOO_LONG
    return NumberRefused(
        code,
        f"The fax number starts with {written_prefix} (North America) but has {_digits(count)} "
        f"after it; it needs exactly 10 (3-digit area code and 7-digit number), for example "
        f"{written_prefix}2125551234, or just the 10 digits: 2125551234.",
    )


def _resolve(with_country_code: str, policy: NumberPolicy) -> NormalizedNumber:
    count = len(with_country_code)
    if count > _MAX_E164_DIGITS:
        raise _too_many_digits(count)
    nanp_premium = False
    if with_country_code.startswith("1"):
        nanp_premium = _check_nanp(with_country_code[1:])
        if nanp_premium and NumberCategory.PREMIUM_RATE in policy.blocked_categories:
            # Refused before the validity check so an unlisted premium prefix (e.g. the 976
            # area code, unknown to libphonenumber) is reported as what the sender meant.
            shown = "+1 " + _nanp_dashed(with_country_code[1:])
            raise _blocked(shown, NumberCategory.PREMIUM_RATE)

    number = _parse(with_country_code)
    shown = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    # parse() always sets the country code; the stubs just type the attribute as optional.
    country_code = cast(int, number.country_code)
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible in (
        phonenumbers.ValidationResult.TOO_SHORT,
        phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    ):
        raise NumberRefused(
            RefusalCode.TOO_SHORT,
            f"{shown} is too short for a number with country code +{country_code}. Check that "
            "the area code and the whole number are there, for example +442079460958.",
        )
    if possible == phonenumbers.ValidationResult.TOO_LONG:
        raise NumberRefused(
            RefusalCode.TOO_LONG,
            f"{shown} has too many digits for a number with country code +{country_code}. "
            "Check for extra or repeated digits; a complete number looks like +442079460958.",
        )
    if possible != phonenumbers.ValidationResult.IS_POSSIBLE or not phonenumbers.is_valid_number(
        number
    ):
        raise NumberRefused(
            RefusalCode.INVALID_NUMBER,
            f"{shown} isn't a valid phone number for country code +{country_code}. Check the "
            f"area code and the number; a valid number looks like {_VALID_FORMS}.",
        )

    region = phonenumbers.region_code_for_number(number) or NON_GEOGRAPHIC_REGION
    category = _CATEGORY_BY_TYPE.get(phonenumbers.number_type(number), NumberCategory.UNKNOWN)
    if nanp_premium:
        category = NumberCategory.PREMIUM_RATE

    if policy.allowed_countries and region not in policy.allowed_countries:
        raise NumberRefused(
            RefusalCode.COUNTRY_NOT_ALLOWED,
            f"{shown} is {_region_phrase(region, country_code)}, and your account may only "
            f"send faxes to {_countries_phrase(policy.allowed_countries)}. Only your service "
            "provider (your reseller, or the platform's administrator) can allow faxes to "
            f"{_region_name(region)}; ask them, or use a fax number in an allowed country.",
        )
    if category in policy.blocked_categories:
        raise _blocked(shown, category)

    return NormalizedNumber(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        region=region,
        category=category,
        national_format=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL),
        international_format=shown,
    )


def _check_nanp(ten: str) -> bool:
    """Apply the NANP structure rules to the digits after the 1; return True if premium-rate.

    Done here rather than left to libphonenumber so that a number written with and without
    its +1 / 1 gets the same, specific, reason.
    """
    if len(ten) != _NANP_LENGTH:
        raise _nanp_length(len(ten), "+1")
    area_code, exchange = ten[:3], ten[3:6]
    shown = "+1 " + _nanp_dashed(ten)
    if area_code[0] in "01":
        raise NumberRefused(
            RefusalCode.INVALID_NUMBER,
            f"{shown} isn't a valid North American number: the area code (the first 3 of the "
            "10 digits) never starts with 0 or 1. Check the number; a valid one looks like "
            f"2125551234. Also, {_INTERNATIONAL_HINT}.",
        )
    if exchange[0] in "01":
        raise NumberRefused(
            RefusalCode.INVALID_NUMBER,
            f"{shown} isn't a valid North American number: the 3 digits after the area code "
            "never start with 0 or 1. Check the number; a valid one looks like 2125551234.",
        )
    return area_code in _NANP_PREMIUM_AREA_CODES or exchange in _NANP_PREMIUM_EXCHANGES


def _parse(with_country_code: str) -> phonenumbers.PhoneNumber:
    try:
        return phonenumbers.parse("+" + with_country_code, None)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise NumberRefused(
                RefusalCode.INVALID_NUMBER,
                "The number doesn't begin with a valid country code. After the + (or 00 or "
                "011) comes the country code, such as 44 for the United Kingdom or 49 for "
                "Germany, then the number: for example +442079460958.",
            ) from None
        if exc.error_type == phonenumbers.NumberParseException.TOO_LONG:
            raise _too_many_digits(len(with_country_code)) from None
        # The remaining parse errors (NOT_A_NUMBER, TOO_SHORT_NSN, TOO_SHORT_AFTER_IDD) can
        # only mean "too few digits" once _read_digits has ruled out everything but digits.
        raise NumberRefused(
            RefusalCode.TOO_SHORT,
            f"The number has only {_digits(len(with_country_code))} after the +, which is too "
            "few for any country. Give the country code and the whole number, for example "
            "+442079460958.",
        ) from None


def _too_many_digits(count: int) -> NumberRefused:
    return NumberRefused(
        RefusalCode.TOO_LONG,
        f"The fax number has {count} digits, but phone numbers never have more than 15 "
        "(country code included). Check for extra or repeated digits; a complete number looks "
        "like 2125551234 or +442079460958.",
    )


def _blocked(shown: str, category: NumberCategory) -> NumberRefused:
    label = _CATEGORY_LABEL[category]
    return NumberRefused(
        RefusalCode.BLOCKED_CATEGORY,
        f"{shown} is a {label} number, and your account doesn't allow faxing to {label} "
        "numbers. Use an ordinary landline fax number instead, or ask your account "
        f"administrator to allow {label} numbers.",
    )


def _region_phrase(region: str, country_code: int) -> str:
    if region == NON_GEOGRAPHIC_REGION:
        return f"an international number that belongs to no country (+{country_code})"
    return f"a number in {region} (country code +{country_code})"


def _region_name(region: str) -> str:
    return "numbers of no country" if region == NON_GEOGRAPHIC_REGION else region


def _nanp_dashed(ten: str) -> str:
    return f"{ten[:3]}-{ten[3:6]}-{ten[6:]}"


def _digits(count: int) -> str:
    return f"{count} digit" if count == 1 else f"{count} digits"


def _join(items: list[str], conjunction: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


# Extensions are short internal numbers (PBX style); anything longer must be a real,
# dialable number and goes through the destination rules.
MAX_EXTENSION_DIGITS: Final = 8

# Numbers we receive on are not destinations: nothing is blocked when assigning them.
_INBOUND_POLICY: Final = NumberPolicy(blocked_categories=frozenset())


def assignable(raw: str) -> str:
    """An inbound number for a faxbox: E.164 (normalized) or a short extension.

    The CLI and the portal both assign numbers through this, so a number typed either
    way is stored under the same key. Raises :class:`NumberRefused`.
    """
    text = raw.strip()
    if text.isdigit() and len(text) <= MAX_EXTENSION_DIGITS:
        return text
    return normalize(text, _INBOUND_POLICY).e164


def called_number_keys(raw: str) -> list[str]:
    """The keys an inbound call's number may be assigned under, best first.

    Carriers write the called number in a SIP URI as they like: E.164 with or without
    the ``+``, a 10-digit North American national number, with a leading ``1``, or an
    extension. Each is read with the rules numbers are assigned with (:func:`assignable`),
    so ``2125550100``, ``12125550100`` and ``+12125550100`` all find ``+12125550100``;
    digits that only make sense as E.164 without the ``+`` (``442079460958``) are tried
    with it. URI parameters (``;npdi``, ``;rn=...``) are not part of the number.
    """
    text = raw.split(";", 1)[0].strip()
    if not text:
        return []
    keys: list[str] = []
    for candidate in (text, f"+{text}" if text.isdigit() else ""):
        if not candidate:
            continue
        try:
            key = assignable(candidate)
        except NumberRefused:
            continue
        if key not in keys:
            keys.append(key)
    return keys
