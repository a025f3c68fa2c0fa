"""Fax destination number rules (faxbox.shared.numbers).

Every accepted number in the table was checked against libphonenumber to be valid; the
fictional 555-01xx range is deliberately avoided so metadata updates can't flip a case.
"""

from __future__ import annotations

import pickle
import re

import phonenumbers
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from faxbox.shared.numbers import (
    NormalizedNumber,
    NumberCategory,
    NumberPolicy,
    NumberRefused,
    RefusalCode,
    called_number_keys,
    check,
    fax_address,
    normalize,
)
from faxbox.shared.store import Account

R = RefusalCode
ALLOW_ALL = NumberPolicy(blocked_categories=frozenset())
NORTH_AMERICA_ONLY = NumberPolicy(allowed_countries=frozenset({"US", "CA"}))
US_ONLY = NumberPolicy(allowed_countries=frozenset({"US"}))
STRICT = NumberPolicy(
    blocked_categories=frozenset(
        {
            NumberCategory.PREMIUM_RATE,
            NumberCategory.TOLL_FREE,
            NumberCategory.VOIP,
            NumberCategory.PAGER,
            NumberCategory.SHARED_COST,
            NumberCategory.PERSONAL_NUMBER,
            NumberCategory.UAN,
        }
    )
)

CASES: list[tuple[str, NumberPolicy | None, str | RefusalCode]] = [
    # --- accepted: international indicator +, 00 or 011 -----------------------------------
    ("+442079460958", None, "+442079460958"),
    ("00442079460958", None, "+442079460958"),
    ("011442079460958", None, "+442079460958"),
    # libphonenumber drops the "(0)" that UK numbers are often written with after +44.
    ("+4402079460958", None, "+442079460958"),
    ("+493012345678", None, "+493012345678"),  # Germany, Berlin
    ("00493012345678", None, "+493012345678"),
    ("+4930901820", None, "+4930901820"),  # Germany: shorter subscriber number
    ("+33142685300", None, "+33142685300"),  # France, Paris
    ("0033612345678", None, "+33612345678"),  # France, mobile
    ("+81312345678", None, "+81312345678"),  # Japan, Tokyo
    ("01181312345678", None, "+81312345678"),
    ("+61291234567", None, "+61291234567"),  # Australia, Sydney
    ("+61412345678", None, "+61412345678"),  # Australia, mobile
    ("+390212345678", None, "+390212345678"),  # Italy keeps its leading 0 in E.164
    ("+80012345678", None, "+80012345678"),  # international freephone, no country
    # --- accepted: North America without prefix -------------------------------------------
    ("2024561111", None, "+12024561111"),
    ("12024561111", None, "+12024561111"),
    ("+12024561111", None, "+12024561111"),
    ("0012024561111", None, "+12024561111"),
    ("01112024561111", None, "+12024561111"),
    ("6502530000", None, "+16502530000"),
    ("4169671111", None, "+14169671111"),  # Toronto: region CA
    ("18003569377", None, "+18003569377"),  # toll-free is not blocked by default
    # --- premium rate and other categories ------------------------------------------------
    ("19005551234", None, R.BLOCKED_CATEGORY),
    ("+19005551234", None, R.BLOCKED_CATEGORY),
    ("19005551234", ALLOW_ALL, "+19005551234"),
    ("2129761234", None, R.BLOCKED_CATEGORY),  # 976 exchange: premium whatever metadata says
    ("2129761234", ALLOW_ALL, "+12129761234"),
    ("19765551234", None, R.BLOCKED_CATEGORY),  # 976 area code
    ("19765551234", ALLOW_ALL, R.INVALID_NUMBER),  # … which isn't an assigned area code
    ("+449012345678", None, R.BLOCKED_CATEGORY),  # UK premium
    ("+449012345678", ALLOW_ALL, "+449012345678"),
    ("+499001234567", None, R.BLOCKED_CATEGORY),  # German premium
    ("+33891123456", None, R.BLOCKED_CATEGORY),  # French premium
    ("+611900123456", None, R.BLOCKED_CATEGORY),  # Australian premium
    ("+448001234567", STRICT, R.BLOCKED_CATEGORY),  # toll-free
    ("+445612345678", STRICT, R.BLOCKED_CATEGORY),  # VoIP
    ("+447640123456", STRICT, R.BLOCKED_CATEGORY),  # pager
    ("+4918500123456", STRICT, R.BLOCKED_CATEGORY),  # UAN
    ("+442079460958", STRICT, "+442079460958"),
    # --- allowed countries ----------------------------------------------------------------
    ("2024561111", NORTH_AMERICA_ONLY, "+12024561111"),
    ("4169671111", NORTH_AMERICA_ONLY, "+14169671111"),
    ("4169671111", US_ONLY, R.COUNTRY_NOT_ALLOWED),
    ("+493012345678", NORTH_AMERICA_ONLY, R.COUNTRY_NOT_ALLOWED),
    ("+80012345678", US_ONLY, R.COUNTRY_NOT_ALLOWED),
    # --- characters -----------------------------------------------------------------------
    ("", None, R.EMPTY),
    ("   ", None, R.EMPTY),
    ("+44 20 7946 0958", None, R.INVALID_CHARACTERS),
    ("+442079460958 ", None, R.INVALID_CHARACTERS),
    ("\t+442079460958", None, R.INVALID_CHARACTERS),
    ("2024561111\n", None, R.INVALID_CHARACTERS),
    ("1-202-456-1111", None, R.INVALID_CHARACTERS),
    ("202.456.1111", None, R.INVALID_CHARACTERS),
    ("(202)4561111", None, R.INVALID_CHARACTERS),
    ("202/4561111", None, R.INVALID_CHARACTERS),
    ("+442079460958#", None, R.INVALID_CHARACTERS),
    ("\uff12\uff10\uff12\uff14\uff15\uff16\uff11\uff11\uff11\uff11", None, R.INVALID_CHARACTERS),
    ("\u0662\u0660\u0662\u0664\u0665\u0666\u0661\u0661\u0661\u0661", None, R.INVALID_CHARACTERS),
    ("1800FLOWERS", None, R.LETTERS),
    ("1-800-FLOWERS", None, R.LETTERS),
    ("2024561111x12", None, R.LETTERS),
    ("44+2079460958", None, R.PLUS_NOT_LEADING),
    ("++442079460958", None, R.PLUS_NOT_LEADING),
    ("2024561111+", None, R.PLUS_NOT_LEADING),
    # --- length ---------------------------------------------------------------------------
    ("+", None, R.TOO_SHORT),
    ("00", None, R.TOO_SHORT),
    ("011", None, R.TOO_SHORT),
    ("555123456", None, R.TOO_SHORT),
    ("1202456111", None, R.TOO_SHORT),  # 1 + only 9 digits
    ("+1202456111", None, R.TOO_SHORT),
    ("+44", None, R.TOO_SHORT),
    ("+4420", None, R.TOO_SHORT),
    ("120245611112", None, R.TOO_LONG),
    ("+120245611112", None, R.TOO_LONG),
    ("+442079460958123", None, R.TOO_LONG),
    ("+4420794609581234567", None, R.TOO_LONG),
    ("1234567890123456", None, R.TOO_LONG),
    # --- international indicator missing --------------------------------------------------
    ("442079460958", None, R.MISSING_INTERNATIONAL_PREFIX),
    ("493012345678", None, R.MISSING_INTERNATIONAL_PREFIX),
    ("02079460958", None, R.MISSING_INTERNATIONAL_PREFIX),  # UK national form
    ("0142685300", None, R.MISSING_INTERNATIONAL_PREFIX),  # French national form
    # --- not a valid number ---------------------------------------------------------------
    ("11024561111", None, R.INVALID_NUMBER),  # area code starts with 1
    ("2021561111", None, R.INVALID_NUMBER),  # exchange starts with 1
    ("+12020561111", None, R.INVALID_NUMBER),  # exchange starts with 0
    ("5555551234", None, R.INVALID_NUMBER),  # 555 isn't an area code
    ("+441012345678", None, R.INVALID_NUMBER),
    ("+0442079460958", None, R.INVALID_NUMBER),  # no country code starts with 0
    ("+999123456", None, R.INVALID_NUMBER),  # unassigned country code
]


def _case_id(case: tuple[str, NumberPolicy | None, str | RefusalCode]) -> str:
    raw, policy, expected = case
    name = {
        id(ALLOW_ALL): "allow-all",
        id(NORTH_AMERICA_ONLY): "US+CA",
        id(US_ONLY): "US",
        id(STRICT): "strict",
    }.get(id(policy), "default")
    return f"{raw!r}-{name}-{expected}"


@pytest.mark.parametrize(("raw", "policy", "expected"), CASES, ids=[_case_id(c) for c in CASES])
def test_table(raw: str, policy: NumberPolicy | None, expected: str | RefusalCode) -> None:
    if isinstance(expected, RefusalCode):
        with pytest.raises(NumberRefused) as refused:
            normalize(raw, policy)
        assert refused.value.code is expected, refused.value.message
        assert refused.value.message
        assert str(refused.value) == refused.value.message
    else:
        assert normalize(raw, policy).e164 == expected


def test_details_of_an_accepted_number() -> None:
    assert normalize("+442079460958") == NormalizedNumber(
        e164="+442079460958",
        region="GB",
        category=NumberCategory.FIXED_LINE,
        national_format="020 7946 0958",
        international_format="+44 20 7946 0958",
    )
    us = normalize("2024561111")
    assert (us.region, us.category) == ("US", NumberCategory.FIXED_LINE_OR_MOBILE)
    assert us.national_format == "(202) 456-1111"
    assert normalize("4169671111").region == "CA"
    assert normalize("+80012345678").region == "001"
    assert normalize("2129761234", ALLOW_ALL).category is NumberCategory.PREMIUM_RATE


def test_messages_say_what_is_wrong_and_what_is_valid() -> None:
    def message(raw: str, policy: NumberPolicy | None = None) -> str:
        result = check(raw, policy)
        assert isinstance(result, NumberRefused)
        return result.message

    spaces = message("+44 20 7946 0958")
    assert "spaces" in spaces
    assert "+442079460958" in spaces
    assert "dashes" in message("1-202-456-1111")
    assert "spaces and dashes" in message("+1 202-456-1111")
    assert "letters" in message("1800FLOWERS")
    assert "18003569377" in message("1800FLOWERS")
    too_short = message("555123456")
    assert "9 digits" in too_short
    assert "10 digits" in too_short
    assert "+442079460958" in message("442079460958")
    assert "premium-rate" in message("19005551234")
    not_allowed = message("+493012345678", NORTH_AMERICA_ONLY)
    assert "CA or US" in not_allowed
    assert "+49" in not_allowed


def test_messages_do_not_echo_arbitrary_input() -> None:
    # Refusals end up in bounce emails and web pages; the raw input may be hostile.
    hostile = "<script>alert(1)</script>"
    result = check(hostile)
    assert isinstance(result, NumberRefused)
    assert hostile not in result.message


def test_check_returns_instead_of_raising() -> None:
    assert isinstance(check("+442079460958"), NormalizedNumber)
    refused = check("+44 20 7946 0958")
    assert isinstance(refused, NumberRefused)
    assert refused.code is R.INVALID_CHARACTERS


def test_refusal_code_values_are_stable() -> None:
    assert {c.value for c in RefusalCode} == {
        "empty",
        "invalid_characters",
        "letters",
        "plus_not_leading",
        "too_short",
        "too_long",
        "missing_international_prefix",
        "invalid_number",
        "blocked_category",
        "country_not_allowed",
    }


def test_refusal_survives_pickling() -> None:
    refused = check("")
    assert isinstance(refused, NumberRefused)
    copy = pickle.loads(pickle.dumps(refused))
    assert (copy.code, copy.message) == (refused.code, refused.message)


def test_policy_defaults_and_validation() -> None:
    assert NumberPolicy().blocked_categories == {NumberCategory.PREMIUM_RATE}
    assert NumberPolicy().allowed_countries == frozenset()
    assert NumberPolicy.model_validate({"allowed_countries": ["us", " ca"]}).allowed_countries == {
        "US",
        "CA",
    }
    with pytest.raises(ValidationError, match="UK"):
        NumberPolicy.model_validate({"allowed_countries": ["UK"]})
    with pytest.raises(ValidationError):
        NumberPolicy.model_validate({"blocked_categories": ["premium"]})
    policy = NumberPolicy()
    with pytest.raises(ValidationError):
        policy.allowed_countries = frozenset({"US"})  # type: ignore[misc]
    assert NumberPolicy.model_validate_json(policy.model_dump_json()) == policy


def test_fax_address() -> None:
    assert fax_address("+442079460958", "acme.faxbox.test") == "+442079460958@acme.faxbox.test"
    assert fax_address("+12024561111", "Acme.Faxbox.Test") == "+12024561111@acme.faxbox.test"
    local_part = fax_address(normalize("00442079460958").e164, "acme.faxbox.test").split("@")[0]
    assert normalize(local_part).e164 == "+442079460958"
    for bad_number in ("442079460958", "+44 20 7946 0958", "+0442079460958", ""):
        with pytest.raises(ValueError, match=r"E\.164"):
            fax_address(bad_number, "acme.faxbox.test")
    for bad_realm in ("", "acme faxbox", "a@b.test", "-acme.test", "acme..test"):
        with pytest.raises(ValueError, match="domain"):
            fax_address("+442079460958", bad_realm)


# --- properties ---------------------------------------------------------------------------


def _example_numbers() -> list[str]:
    """libphonenumber's own example number for every region and line type."""
    found: set[str] = set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for number_type in phonenumbers.supported_types_for_region(region):
            number = phonenumbers.example_number_for_type(region, number_type)
            if number is not None:
                found.add(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return sorted(found)


EXAMPLE_NUMBERS = _example_numbers()
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
PHONE_ALPHABET = "0123456789+ -().x\t"

digit_strings = st.text(alphabet="0123456789", max_size=18)
number_like = st.one_of(
    st.sampled_from(EXAMPLE_NUMBERS),
    st.builds(
        lambda p, d: p + d, st.sampled_from(["", "+", "00", "011", "1", "+1"]), digit_strings
    ),
)


@given(st.one_of(st.text(), st.text(alphabet=PHONE_ALPHABET), number_like))
@example("\x00")
@example("+" * 10_000)
@example("9" * 10_000)
def test_only_number_refused_escapes(raw: str) -> None:
    for policy in (None, ALLOW_ALL, STRICT, US_ONLY):
        # Anything other than NumberRefused propagates and fails the test.
        outcome: NormalizedNumber | NumberRefused
        try:
            outcome = normalize(raw, policy)
        except NumberRefused as refused:
            outcome = refused
        if isinstance(outcome, NumberRefused):
            assert isinstance(outcome.code, RefusalCode)
            assert outcome.message.endswith(".")
        else:
            assert E164.fullmatch(outcome.e164)


@given(number_like)
@example("+4402079460958")
def test_normalizing_an_accepted_number_again_is_identity(raw: str) -> None:
    first = check(raw, ALLOW_ALL)
    if isinstance(first, NormalizedNumber):
        assert normalize(first.e164, ALLOW_ALL) == first
        local_part = fax_address(first.e164, "acme.faxbox.test").partition("@")[0]
        assert normalize(local_part, ALLOW_ALL) == first


@given(st.sampled_from(EXAMPLE_NUMBERS))
def test_libphonenumber_examples_are_kept_as_is(e164: str) -> None:
    result = check(e164, ALLOW_ALL)
    # A handful of examples are local-only short numbers (e.g. US "+13101234") and are
    # refused as too short; everything else must come back unchanged.
    if isinstance(result, NumberRefused):
        assert result.code is R.TOO_SHORT
    else:
        assert result.e164 == e164


def _outcome(raw: str) -> str:
    result = check(raw, ALLOW_ALL)
    return result.e164 if isinstance(result, NormalizedNumber) else result.code.value


@given(digit_strings)
def test_plus_00_and_011_are_interchangeable(digits: str) -> None:
    assert _outcome("+" + digits) == _outcome("00" + digits) == _outcome("011" + digits)


@given(
    st.builds(
        lambda first, rest: first + rest,
        st.sampled_from("23456789"),
        st.text(alphabet="0123456789", min_size=9, max_size=9),
    )
)
@example("2024561111")
def test_north_american_forms_agree(ten: str) -> None:
    # Only area codes 2-9: a bare 10 digits starting with 0 or 1 gets a different (more
    # helpful) reason than the same digits after +1.
    assert _outcome(ten) == _outcome("1" + ten) == _outcome("+1" + ten)


@pytest.mark.parametrize(
    ("country", "number", "label"),
    [
        ("FR", "+33810123456", "shared-cost"),
        ("ES", "+34901123456", "shared-cost"),
        ("GB", "+448451234567", "premium-rate"),
        ("US", "+19005550100", "premium-rate"),
    ],
)
def test_a_new_account_blocks_premium_and_shared_cost_at_home(
    country: str, number: str, label: str
) -> None:
    policy = Account(name="x", realm="x.example", country=country).number_policy()
    with pytest.raises(NumberRefused) as refused:
        normalize(number, policy)
    assert refused.value.code is RefusalCode.BLOCKED_CATEGORY
    assert label in refused.value.message


@pytest.mark.parametrize(
    ("called", "keys"),
    [
        ("2125550100", ["+12125550100"]),
        ("12125550100", ["+12125550100"]),
        ("+12125550100", ["+12125550100"]),
        ("+12125550100;npdi", ["+12125550100"]),
        ("442079460958", ["+442079460958"]),
        ("1001", ["1001"]),
        ("faxbox", []),
        ("", []),
    ],
)
def test_called_number_keys(called: str, keys: list[str]) -> None:
    assert called_number_keys(called) == keys
