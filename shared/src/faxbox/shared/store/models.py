"""Documents of the global collections, as pydantic models.

Conventions, chosen so documents read the same on MongoDB 8 and on FerretDB v1:

* ``_id`` is a string generated here (:func:`new_id`), not an ObjectId, so ids
  serialize to JSON, logs and CLI output unchanged. In Python the field is ``id``;
  :meth:`StoreModel.to_doc` writes it as ``_id``.
* Models are frozen: a change is made with ``model_copy(update=...)`` and written with
  a single-document update, never by mutating a shared instance.
* Timestamps are aware UTC datetimes truncated to milliseconds, BSON's precision, so a
  model read back compares equal to the one written.
* No field name contains ``.`` or starts with ``$`` (FerretDB refuses such keys).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import string
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    field_validator,
    model_validator,
)

from faxbox.shared.numbers import (
    ALL_COUNTRIES,
    NumberCategory,
    NumberPolicy,
    home_regions,
    validate_region,
)
from faxbox.shared.secretbox import SecretBox, SecretKeyMissing, is_sealed
from faxbox.shared.store.monthly import MAX_ACCOUNT_ID_LENGTH, validate_account_id
from faxbox.shared.tagline import HeaderFormatError, check_format

# Crockford's base32 alphabet, lower-cased: ids end up inside collection names
# (account ids do) and FerretDB's SQLite backend lower-cases those anyway.
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    """A short, time-ordered, URL- and collection-name-safe id: ``<prefix>_<26 chars>``.

    ULID layout: 48 bits of milliseconds then 80 random bits, so ids sort roughly by
    creation time (handy in listings) and never collide in practice.
    """
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_ID_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def utc_now() -> datetime:
    """Now, in UTC, truncated to BSON's millisecond precision."""
    return _ms(datetime.now(UTC))


def _ms(dt: datetime) -> datetime:
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
# E.164 (``+`` then up to 15 digits) or an internal extension (digits, ``*``, ``#``).
_NUMBER_RE = re.compile(r"^(\+[1-9][0-9]{1,14}|[0-9*#]{1,16})$")
_PRINTABLE_ASCII = set(string.printable) - set("\t\n\r\x0b\x0c")


def _email(value: str) -> str:
    value = value.strip()
    if not _EMAIL_RE.match(value):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


def _lower_email(value: str) -> str:
    return _email(value).lower()


def validate_number_key(value: str) -> str:
    """Check a fax number: E.164 (``+4930123456``) or an extension (``1001``)."""
    if not _NUMBER_RE.match(value):
        raise ValueError(f"{value!r} is not an E.164 number (+<digits>) or an extension")
    return value


def _permission_entry(value: str) -> str:
    """An allowed sender: ``user@example.com``, ``@example.com`` or ``example.com``."""
    value = value.strip().lower()
    if "@" in value and not value.startswith("@"):
        return _email(value)
    if not _DOMAIN_RE.match(value.removeprefix("@")):
        raise ValueError(f"{value!r} is neither an e-mail address nor a domain")
    return value


Email = Annotated[str, AfterValidator(_email)]
LowerEmail = Annotated[str, AfterValidator(_lower_email)]
NumberKey = Annotated[str, AfterValidator(validate_number_key)]
PermissionEntry = Annotated[str, AfterValidator(_permission_entry)]
UtcDatetime = Annotated[datetime, AfterValidator(_ms)]
Region = Annotated[str, AfterValidator(validate_region)]


class StoreModel(BaseModel):
    """Base of every stored document."""

    model_config = ConfigDict(
        frozen=True,
        # Documents may carry fields a newer version added; ignore them, don't fail.
        extra="ignore",
        # ``id`` in Python, ``_id`` in the database: accept both when validating.
        validate_by_name=True,
        validate_by_alias=True,
    )

    def to_doc(self) -> dict[str, Any]:
        """The BSON-ready document (``id`` becomes ``_id``)."""
        return self.model_dump(mode="python", by_alias=True)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Self:
        return cls.model_validate(doc)


# Premium-rate and shared-cost numbers are billed to the caller at the line's rate: a
# fax that never connects can still cost money, so new accounts block both.
DEFAULT_BLOCKED_CATEGORIES: tuple[str, ...] = ("premium_rate", "shared_cost")


class Account(StoreModel):
    # The id is part of per-month collection names.
    id: Annotated[str, AfterValidator(validate_account_id)] = Field(
        default_factory=lambda: new_id("acc"), alias="_id", max_length=MAX_ACCOUNT_ID_LENGTH
    )
    name: str = Field(min_length=1, max_length=200)
    realm: str = Field(description="Lower-cased; unique across accounts.")
    reseller_id: str | None = None
    months_to_keep: int | None = Field(
        default=None, ge=1, description="History/document retention; None keeps forever."
    )
    country: Region = Field(default="US", description="Home country, ISO 3166 alpha-2.")
    # Number policy: which destinations this account's faxes may dial.
    blocked_categories: list[str] = Field(default_factory=lambda: list(DEFAULT_BLOCKED_CATEGORIES))
    allowed_countries: list[str] = Field(
        default_factory=list,
        description=(
            "ISO 3166 alpha-2 codes, or ['*'] for every country. Empty (or absent, as in "
            "accounts stored before this field had a default) reads as the home country: "
            "for a North American (NANP) home, every NANP country."
        ),
    )
    daily_page_limit: int | None = Field(
        default=None, ge=0, description="Pages a UTC day; None: the platform's default; 0: no cap."
    )
    created_at: UtcDatetime = Field(default_factory=utc_now)

    def number_policy(self) -> NumberPolicy:
        """The destination rules this account's faxes are held to."""
        every = ALL_COUNTRIES in self.allowed_countries
        return NumberPolicy(
            blocked_categories=frozenset(NumberCategory(c) for c in self.blocked_categories),
            allowed_countries=frozenset() if every else frozenset(self.allowed_countries),
        )

    @model_validator(mode="before")
    @classmethod
    def _home_countries_by_default(cls, data: Any) -> Any:
        # A read-time default rather than a migration: an account stored before allowed
        # countries defaulted to the home country has [] there, which meant "everywhere";
        # every reader now sees the home country without anything having to run first.
        if isinstance(data, dict) and not data.get("allowed_countries"):
            country = data.get("country") or "US"
            if isinstance(country, str):
                try:
                    regions = home_regions(country)
                except ValueError:
                    return data  # the country's own validator says what is wrong
                data = {**data, "allowed_countries": regions}
        return data

    @field_validator("blocked_categories")
    @classmethod
    def _known_categories(cls, value: list[str]) -> list[str]:
        known = {c.value for c in NumberCategory}
        unknown = [c for c in value if c not in known]
        if unknown:
            raise ValueError(f"unknown number categories {unknown}; known: {sorted(known)}")
        return value

    @field_validator("realm")
    @classmethod
    def _realm(cls, value: str) -> str:
        value = value.strip().lower()
        if not value or any(c.isspace() for c in value) or len(value) > 253:
            raise ValueError(f"{value!r} is not a valid realm")
        return value

    @field_validator("allowed_countries")
    @classmethod
    def _countries(cls, value: list[str]) -> list[str]:
        out = list(dict.fromkeys(c.strip().upper() for c in value))
        if ALL_COUNTRIES in out:
            if len(out) > 1:
                raise ValueError(f"{ALL_COUNTRIES!r} (every country) stands alone")
            return out
        return [validate_region(c) for c in out]


class Role(StrEnum):
    USER = "user"
    ACCOUNT_ADMIN = "account_admin"
    RESELLER_ADMIN = "reseller_admin"
    # The operator of the whole platform: every account, the queue dashboard, re-drive.
    PLATFORM_ADMIN = "platform_admin"


class User(StoreModel):
    id: str = Field(default_factory=lambda: new_id("usr"), alias="_id")
    account_id: str
    email: Email = Field(description="As entered; see email_lower for lookups.")
    role: Role = Role.USER
    alternate_email: Email | None = None
    password_hash: str | None = Field(default=None, repr=False)
    daily_page_limit: int | None = Field(
        default=None, ge=0, description="Pages a UTC day; None: the platform's default; 0: no cap."
    )
    created_at: UtcDatetime = Field(default_factory=utc_now)

    # FerretDB has no collation, so case-insensitive uniqueness and lookup use a stored
    # lower-cased copy with a plain unique index. Derived, so it can never disagree.
    @computed_field  # type: ignore[prop-decorator]
    @property
    def email_lower(self) -> str:
        return self.email.lower()


class RetryPolicy(StoreModel):
    attempts: int = Field(default=3, ge=1, le=20, description="Total attempts, first included.")
    delays_s: list[int] = Field(
        default_factory=lambda: [120, 300],
        description="Delay before each retry; the last one repeats.",
    )

    @field_validator("delays_s")
    @classmethod
    def _delays(cls, value: list[int]) -> list[int]:
        if not value or any(d < 0 for d in value):
            raise ValueError("delays_s needs at least one non-negative delay")
        return value


class SenderAuth(StrEnum):
    """Whether a faxbox faxes only mail whose sender a trusted mail server proved."""

    REQUIRED = "required"
    OFF = "off"


class Faxbox(StoreModel):
    id: str = Field(default_factory=lambda: new_id("fbx"), alias="_id")
    account_id: str
    owner_user_id: str
    name: str = ""
    enabled: bool = True
    numbers: list[NumberKey] = Field(
        default_factory=list,
        description="Mirror of the numbers collection; change it with assign/unassign only.",
    )
    caller_id: NumberKey | None = Field(
        default=None, description="Number presented on outbound calls."
    )
    identity: str = Field(default="", max_length=20, description="T.30 TSI/CSI.")
    header_name: str = Field(default="", max_length=60, description="Name in the page header.")
    header_format: str | None = Field(
        default=None,
        description="The page header line (faxbox.shared.tagline); None: the default one.",
    )
    timezone: str = "UTC"
    permission_list: list[PermissionEntry] = Field(default_factory=list)
    # Absent in faxboxes stored before it existed, so they read as required too: their
    # old ``require_authenticated_sender: false`` was the old default, indistinguishable
    # from a choice, and is ignored.
    sender_auth: SenderAuth = SenderAuth.REQUIRED
    success_notifications: bool = True
    extra_recipients: list[LowerEmail] = Field(default_factory=list)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    merge_attachments: bool = False
    route_flags: list[str] = Field(
        default_factory=list,
        description="Flags this faxbox's faxes carry: they may use carriers that require them.",
    )
    max_recipients: int = Field(
        default=10, ge=1, le=100, description="Fax numbers one email may be sent to."
    )
    resolution: Literal["fine", "standard"] = "fine"
    created_at: UtcDatetime = Field(default_factory=utc_now)

    @field_validator("route_flags")
    @classmethod
    def _route_flags(cls, value: list[str]) -> list[str]:
        for flag in value:
            if not re.fullmatch(r"[a-z0-9_-]{1,40}", flag):
                raise ValueError(f"route flag {flag!r} must match [a-z0-9_-]{{1,40}}")
        return sorted(set(value))

    @field_validator("identity")
    @classmethod
    def _identity(cls, value: str) -> str:
        # T.30 identities are 20 characters from a printable ASCII set; anything else
        # is mangled or rejected by the far end.
        bad = sorted({c for c in value if c not in _PRINTABLE_ASCII})
        if bad:
            raise ValueError(f"identity may only hold printable ASCII, not {''.join(bad)!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("header_format")
    @classmethod
    def _header_format(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            return check_format(value)
        except HeaderFormatError as exc:
            raise ValueError(f"header format: {exc}") from None


class NumberAssignment(StoreModel):
    """One assigned number; ``_id`` is the number, which makes it unique everywhere."""

    number: NumberKey = Field(alias="_id")
    faxbox_id: str
    account_id: str
    assigned_at: UtcDatetime = Field(default_factory=utc_now)


class AccountNumber(StoreModel):
    """A number in an account's inventory; ``_id`` is the number, so one account holds it.

    Platform and reseller admins add numbers to an account; its admins assign them to
    faxboxes from there (``NumberAssignment``), and an unassigned number comes back here.
    """

    number: NumberKey = Field(alias="_id")
    account_id: str
    added_at: UtcDatetime = Field(default_factory=utc_now)


PasswordField = Literal["sip_password", "inbound_password"]


class Carrier(StoreModel):
    id: str = Field(default_factory=lambda: new_id("car"), alias="_id")
    name: str = Field(min_length=1, max_length=100)
    flags: list[str] = Field(default_factory=list, description="What it offers, e.g. 'fax'.")
    require_flags: list[str] = Field(
        default_factory=list, description="Flags a route must ask for to use this carrier."
    )
    priority: int = Field(default=100, description="Lower is tried first.")
    channel_cap: int = Field(default=1, ge=0, description="Concurrent calls allowed.")
    sip_uri: str | None = None
    sip_host: str | None = None
    sip_port: int | None = Field(default=None, ge=1, le=65535)
    sip_username: str | None = None
    sip_password: str | None = Field(
        default=None,
        repr=False,
        description="Sealed with FAXBOX_SECRET_KEY (see faxbox.shared.secretbox); never shown.",
    )
    sip_allow: list[str] = Field(
        default_factory=list,
        description=(
            "Addresses or networks (CIDR) this carrier's calls may come from; empty: the "
            "addresses of sip_host (or sip_uri) and of outbound_proxy. An INVITE from "
            "anywhere else is refused (403)."
        ),
    )
    inbound_username: str | None = Field(
        default=None, description="When set, calls from this carrier must pass a digest challenge."
    )
    inbound_password: str | None = Field(
        default=None, repr=False, description="Sealed like sip_password; never shown."
    )
    sip_transport: Literal["udp", "tcp", "tls"] = Field(
        default="udp", description="How we reach it (TLS verifies its certificate)."
    )
    sip_domain: str | None = Field(
        default=None,
        description="Its SIP domain: the host of our From and address of record when we "
        "register or authenticate; sip_host when None.",
    )
    outbound_proxy: str | None = Field(
        default=None, description="A SIP URI every call to this carrier goes through (an SBC)."
    )
    sip_register: bool = Field(
        default=False, description="Register our contact with it (calls in come to us)."
    )
    register_expires_s: int = Field(default=600, ge=30, le=86400)
    t38_in_invite: bool = Field(
        default=False, description="Offer T.38 beside G.711 in the INVITE itself."
    )
    tcp_over_mtu: bool = Field(
        default=True, description="Send a request over 1300 bytes by TCP (RFC 3261 §18.1.1)."
    )

    def with_password(
        self, password: str | None, box: SecretBox | None, field: PasswordField = "sip_password"
    ) -> Carrier:
        """A copy holding ``password`` sealed in ``field`` (None clears it)."""
        if password is None:
            return self.model_copy(update={field: None})
        if box is None:
            raise SecretKeyMissing("storing a carrier password")
        return self.model_copy(update={field: box.seal(password, self._purpose(field))})

    def sip_secret(self, box: SecretBox | None) -> str | None:
        """The password we answer the carrier's challenges with, in clear.

        A value stored before passwords were sealed is returned as it is (and sealed by
        ``faxbox carrier seal-passwords``).
        """
        return self._open("sip_password", box)

    def inbound_secret(self, box: SecretBox | None) -> str | None:
        """The password the carrier answers our challenge with, in clear."""
        return self._open("inbound_password", box)

    def _purpose(self, field: PasswordField) -> str:
        return f"carrier:{self.id}:{field}"

    def _open(self, field: PasswordField, box: SecretBox | None) -> str | None:
        stored: str | None = getattr(self, field)
        if stored is None or not is_sealed(stored):
            return stored
        if box is None:
            raise SecretKeyMissing(f"carrier {self.name}'s {field.replace('_', ' ')}")
        return box.open(stored, self._purpose(field))

    @field_validator("sip_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        out = []
        for entry in value:
            try:
                out.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (CIDR)") from None
        return out

    @property
    def domain(self) -> str | None:
        return self.sip_domain or self.sip_host

    @model_validator(mode="after")
    def _flags_are_keys_safe(self) -> Self:
        # Flags may end up as keys of counters or metric labels; keep them plain.
        for flag in (*self.flags, *self.require_flags):
            if not re.fullmatch(r"[a-z0-9_-]{1,40}", flag):
                raise ValueError(f"carrier flag {flag!r} must match [a-z0-9_-]{{1,40}}")
        return self
