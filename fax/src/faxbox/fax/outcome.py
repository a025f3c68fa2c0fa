"""What a T.30 completion code means, for the retry logic and for the person who sent the fax.

Every ``T30_ERR_*`` code of spandsp 0.0.6 (``enum`` in spandsp/t30.h, numbered in order
from ``T30_ERR_OK = 0``) has an entry here; a unit test parses the header and fails when
one is missing or out of place.

Failure classes:

* ``line``: nobody (or no fax machine) was there, or the call went away. Worth trying
  again later, unchanged.
* ``protocol``: the two machines were talking but the fax conversation broke down
  (training, a lost answer after a page, an unexpected hang-up). Worth trying again,
  possibly slower or without error correction.
* ``document``: the file we were given, or the far machine's abilities, make this
  document unsendable as it is. Trying again unchanged will fail the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class FailureClass(StrEnum):
    LINE = "line"
    PROTOCOL = "protocol"
    DOCUMENT = "document"


@dataclass(frozen=True, slots=True)
class CodeInfo:
    code: int
    name: str
    failure_class: FailureClass | None  # None only for T30_ERR_OK
    message: str
    hint: str


_L, _P, _D = FailureClass.LINE, FailureClass.PROTOCOL, FailureClass.DOCUMENT

_RETRY = "Try again later. If it keeps happening, check the fax number with the recipient."
_RETRY_LINE = (
    "Try again in a few minutes. If it keeps happening, ask the recipient whether "
    "their fax machine is switched on and connected."
)
_RETRY_SLOWER = (
    "Try again. If it keeps failing, the telephone line may be poor: try at another "
    "time of day, or ask us to send it at a slower speed."
)
_FIX_FILE = (
    "Send the document again as a PDF. If it was already a PDF, try printing it to a new PDF first."
)
_ASK_RECIPIENT = "Ask the recipient whether their fax machine can receive this kind of document."
_OPTIONS = (
    "The receiving fax machine asked for something we do not support. Ask the recipient "
    "whether their machine needs a password or special setting."
)

# In the order of enum t30_err_e in spandsp/t30.h (0.0.6): position == numeric value.
_TABLE: tuple[tuple[str, FailureClass | None, str, str], ...] = (
    ("T30_ERR_OK", None, "The fax went through successfully.", "Nothing to do."),
    # Link problems
    (
        "T30_ERR_CEDTONE",
        _L,
        "The line answered with a long tone but no fax machine ever started talking.",
        _RETRY_LINE,
    ),
    (
        "T30_ERR_T0_EXPIRED",
        _L,
        "No fax machine answered the call.",
        "Check that the number is a fax number, then try again later.",
    ),
    (
        "T30_ERR_T1_EXPIRED",
        _L,
        "The call was answered, but not by a fax machine that would talk to us.",
        "Check that the number is a fax number and not a phone or answering machine.",
    ),
    (
        "T30_ERR_T3_EXPIRED",
        _P,
        "The receiving machine asked for an operator, and nobody responded in time.",
        _RETRY,
    ),
    (
        "T30_ERR_HDLC_CARRIER",
        _P,
        "The fax machines could not hear each other properly.",
        _RETRY_SLOWER,
    ),
    (
        "T30_ERR_CANNOT_TRAIN",
        _P,
        "The fax machines could not agree on a speed the line could carry.",
        _RETRY_SLOWER,
    ),
    (
        "T30_ERR_OPER_INT_FAIL",
        _P,
        "The receiving machine asked for an operator, and that exchange failed.",
        _RETRY,
    ),
    (
        "T30_ERR_INCOMPATIBLE",
        _D,
        "The receiving fax machine does not support any of the ways we can send.",
        _ASK_RECIPIENT,
    ),
    (
        "T30_ERR_RX_INCAPABLE",
        _D,
        "The machine at that number is not able to receive faxes right now.",
        "Ask the recipient to check their fax machine (it may be out of paper or set "
        "to send only), then try again.",
    ),
    (
        "T30_ERR_TX_INCAPABLE",
        _D,
        "The machine at that number has nothing to send to us.",
        "Ask the sender to put the document in their fax machine and try again.",
    ),
    (
        "T30_ERR_NORESSUPPORT",
        _D,
        "The receiving fax machine cannot print the document at its level of detail.",
        "Send the document again at standard resolution, or ask the recipient to check "
        "their machine.",
    ),
    (
        "T30_ERR_NOSIZESUPPORT",
        _D,
        "The receiving fax machine cannot print pages of this size.",
        "Send the document on A4 or US Letter pages.",
    ),
    (
        "T30_ERR_UNEXPECTED",
        _P,
        "The receiving fax machine sent something we did not expect.",
        _RETRY,
    ),
    # Phase E status values returned to a transmitter
    (
        "T30_ERR_TX_BADDCS",
        _P,
        "The receiving fax machine did not accept our settings at the start of the call.",
        _RETRY_SLOWER,
    ),
    (
        "T30_ERR_TX_BADPG",
        _P,
        "The receiving fax machine hung up after we sent a page.",
        "Try again. Some pages may already have arrived; the recipient can tell you which.",
    ),
    (
        "T30_ERR_TX_ECMPHD",
        _P,
        "The receiving fax machine gave an invalid answer while we were correcting errors.",
        _RETRY_SLOWER,
    ),
    (
        "T30_ERR_TX_GOTDCN",
        _P,
        "The receiving fax machine hung up before we could start sending.",
        _RETRY_LINE,
    ),
    (
        "T30_ERR_TX_INVALRSP",
        _P,
        "The receiving fax machine gave an invalid answer after a page.",
        _RETRY,
    ),
    (
        "T30_ERR_TX_NODIS",
        _P,
        "The receiving fax machine did not introduce itself the way it should.",
        _RETRY,
    ),
    (
        "T30_ERR_TX_PHBDEAD",
        _P,
        "The receiving fax machine stopped answering before the first page.",
        _RETRY_SLOWER,
    ),
    (
        "T30_ERR_TX_PHDDEAD",
        _P,
        "The receiving fax machine stopped answering after a page: the call was probably cut off.",
        "Try again. Some pages may already have arrived; the recipient can tell you which.",
    ),
    (
        "T30_ERR_TX_T5EXP",
        _P,
        "The receiving fax machine stayed busy for too long and never became ready.",
        "Try again later; the recipient's machine may be out of paper or memory.",
    ),
    # Phase E status values returned to a receiver
    (
        "T30_ERR_RX_ECMPHD",
        _P,
        "The sending fax machine gave an invalid answer while correcting errors.",
        "Ask the sender to try again.",
    ),
    (
        "T30_ERR_RX_GOTDCS",
        _P,
        "The other fax machine tried to send when we expected it to wait.",
        "Ask the sender to try again.",
    ),
    (
        "T30_ERR_RX_INVALCMD",
        _P,
        "The sending fax machine sent something unexpected after a page.",
        "Ask the sender to try again.",
    ),
    (
        "T30_ERR_RX_NOCARRIER",
        _P,
        "The signal from the sending fax machine was lost during a page.",
        "Ask the sender to try again; the telephone line may be poor.",
    ),
    (
        "T30_ERR_RX_NOEOL",
        _P,
        "The page from the sending fax machine stopped arriving part way through.",
        "Ask the sender to try again; the telephone line may be poor.",
    ),
    (
        "T30_ERR_RX_NOFAX",
        _P,
        "The sending fax machine never started sending the page.",
        "Ask the sender to try again.",
    ),
    (
        "T30_ERR_RX_T2EXPDCN",
        _P,
        "The sending fax machine did not end the call properly.",
        "Usually harmless: check whether every page arrived; if not, ask the sender to try again.",
    ),
    (
        "T30_ERR_RX_T2EXPD",
        _P,
        "The sending fax machine went silent after a page.",
        "Ask the sender to try again; the call was probably cut off.",
    ),
    (
        "T30_ERR_RX_T2EXPFAX",
        _P,
        "The sending fax machine went silent before sending a page.",
        "Ask the sender to try again; the call was probably cut off.",
    ),
    (
        "T30_ERR_RX_T2EXPMPS",
        _P,
        "The sending fax machine went silent before sending the next page.",
        "Ask the sender to try again; the call was probably cut off.",
    ),
    (
        "T30_ERR_RX_T2EXPRR",
        _P,
        "The sending fax machine went silent while waiting for us.",
        "Ask the sender to try again.",
    ),
    (
        "T30_ERR_RX_T2EXP",
        _P,
        "The sending fax machine went silent during the call.",
        "Ask the sender to try again; the call was probably cut off.",
    ),
    (
        "T30_ERR_RX_DCNWHY",
        _P,
        "The other fax machine hung up before sending anything.",
        "Ask the sender to try again.",
    ),
    (
        "T30_ERR_RX_DCNDATA",
        _P,
        "The sending fax machine hung up before sending the page.",
        "Ask the sender to try again.",
    ),
    (
        "T30_ERR_RX_DCNFAX",
        _P,
        "The sending fax machine hung up in the middle of a page.",
        "Ask the sender to try again.",
    ),
    (
        "T30_ERR_RX_DCNPHD",
        _P,
        "The sending fax machine hung up between pages.",
        "Check which pages arrived, and ask the sender to send the rest again.",
    ),
    (
        "T30_ERR_RX_DCNRRD",
        _P,
        "The sending fax machine hung up while we were getting ready for more.",
        "Ask the sender to try again.",
    ),
    (
        "T30_ERR_RX_DCNNORTN",
        _P,
        "The sending fax machine hung up instead of sending a page again.",
        "Ask the sender to try again.",
    ),
    # TIFF file problems
    (
        "T30_ERR_FILEERROR",
        _D,
        "The document could not be opened for faxing.",
        _FIX_FILE,
    ),
    (
        "T30_ERR_NOPAGE",
        _D,
        "A page of the document could not be found.",
        _FIX_FILE,
    ),
    (
        "T30_ERR_BADTIFF",
        _D,
        "The document is not in a form that can be faxed.",
        _FIX_FILE,
    ),
    (
        "T30_ERR_BADPAGE",
        _D,
        "A page of the document is missing its page number.",
        _FIX_FILE,
    ),
    (
        "T30_ERR_BADTAG",
        _D,
        "The document has settings that cannot be faxed.",
        _FIX_FILE,
    ),
    (
        "T30_ERR_BADTIFFHDR",
        _D,
        "The document's file header is damaged.",
        _FIX_FILE,
    ),
    (
        "T30_ERR_NOMEM",
        _D,
        "We ran out of room to store the pages of this fax.",
        "Ask the sender to try again later, or to send fewer pages at a time.",
    ),
    # General problems
    (
        "T30_ERR_RETRYDCN",
        _P,
        "The fax machines gave up after repeating themselves too many times.",
        _RETRY_SLOWER,
    ),
    (
        "T30_ERR_CALLDROPPED",
        _L,
        "The telephone call was cut off before the fax finished.",
        "Try again. Some pages may already have arrived; the recipient can tell you which.",
    ),
    # Feature negotiation issues
    ("T30_ERR_NOPOLL", _P, "The other fax machine refused to be polled.", _OPTIONS),
    (
        "T30_ERR_IDENT_UNACCEPTABLE",
        _P,
        "The receiving fax machine did not accept our identity.",
        _OPTIONS,
    ),
    (
        "T30_ERR_SUB_UNACCEPTABLE",
        _P,
        "The receiving fax machine did not accept the sub-address (extension).",
        "Check the extension you gave for the fax number.",
    ),
    (
        "T30_ERR_SEP_UNACCEPTABLE",
        _P,
        "The other fax machine did not accept the polling address.",
        _OPTIONS,
    ),
    (
        "T30_ERR_PSA_UNACCEPTABLE",
        _P,
        "The other fax machine did not accept the polled sub-address.",
        _OPTIONS,
    ),
    (
        "T30_ERR_SID_UNACCEPTABLE",
        _P,
        "The receiving fax machine did not accept our sender identification.",
        _OPTIONS,
    ),
    (
        "T30_ERR_PWD_UNACCEPTABLE",
        _P,
        "The receiving fax machine did not accept the password.",
        "Check the fax password with the recipient.",
    ),
    (
        "T30_ERR_TSA_UNACCEPTABLE",
        _P,
        "The receiving fax machine did not accept our internet address.",
        _OPTIONS,
    ),
    (
        "T30_ERR_IRA_UNACCEPTABLE",
        _P,
        "The receiving fax machine did not accept the internet routing address.",
        _OPTIONS,
    ),
    (
        "T30_ERR_CIA_UNACCEPTABLE",
        _P,
        "The receiving fax machine did not accept our calling internet address.",
        _OPTIONS,
    ),
    (
        "T30_ERR_ISP_UNACCEPTABLE",
        _P,
        "The other fax machine did not accept the internet polling address.",
        _OPTIONS,
    ),
    (
        "T30_ERR_CSA_UNACCEPTABLE",
        _P,
        "The receiving fax machine did not accept the called internet address.",
        _OPTIONS,
    ),
)

CODES: dict[int, CodeInfo] = {
    value: CodeInfo(value, name, cls, message, hint)
    for value, (name, cls, message, hint) in enumerate(_TABLE)
}
CODES_BY_NAME: dict[str, CodeInfo] = {info.name: info for info in CODES.values()}

T30_ERR_OK = CODES_BY_NAME["T30_ERR_OK"].code
T30_ERR_T0_EXPIRED = CODES_BY_NAME["T30_ERR_T0_EXPIRED"].code
T30_ERR_FILEERROR = CODES_BY_NAME["T30_ERR_FILEERROR"].code
T30_ERR_CALLDROPPED = CODES_BY_NAME["T30_ERR_CALLDROPPED"].code


# The table speaks from the sending side; these few codes also end received calls,
# where the wording has to be about the caller instead.
_RECEIVING_WORDING: dict[str, tuple[str, str]] = {
    "T30_ERR_CEDTONE": (
        "The caller never started talking like a fax machine.",
        "Nothing to do unless the caller reports a problem.",
    ),
    "T30_ERR_T0_EXPIRED": (
        "The caller never started sending a fax.",
        "Nothing to do unless the caller reports a problem; it may have been a voice call.",
    ),
    "T30_ERR_T1_EXPIRED": (
        "The caller stopped before the fax started.",
        "Nothing to do unless the caller reports a problem; it may have been a voice call.",
    ),
    "T30_ERR_CALLDROPPED": (
        "The telephone call was cut off before the fax finished.",
        "Check which pages arrived, and ask the sender to send the rest again.",
    ),
}


def describe(code: int, receiving: bool = False) -> CodeInfo:
    """The entry for ``code``; an unknown code (a newer spandsp) counts as a protocol failure.

    ``receiving`` picks wording for the answering side where it differs.
    """
    info = CODES.get(code)
    if info is not None:
        wording = _RECEIVING_WORDING.get(info.name) if receiving else None
        if wording is not None:
            return CodeInfo(info.code, info.name, info.failure_class, *wording)
        return info
    return CodeInfo(
        code,
        f"T30_ERR_{code}",
        FailureClass.PROTOCOL,
        "The fax failed for a reason we do not recognise.",
        _RETRY,
    )


class PageStats(BaseModel):
    """One phase D report (t30_stats_t), taken when a page had just been sent or received.

    ``page`` is 1-based. ``result`` is the T.30 frame that ended the page: on the sending
    side the receiver's verdict (MCF good, RTP/RTN retrain, PIP/PIN interrupt), on the
    receiving side the sender's post-page command (MPS more pages, EOP end, EOM).
    Resolutions are pixels per metre (7700 fine, 3850 standard, 8031 for 204 dpi).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    page: int
    result: str
    bit_rate: int
    ecm: bool
    x_resolution: int
    y_resolution: int
    width: int
    length: int
    image_size: int
    encoding: int
    bad_rows: int
    longest_bad_row_run: int
    ecm_retries: int


class FaxOutcome(BaseModel):
    """The end of one fax call, as the rest of the system sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str  # "send" | "receive"
    success: bool
    completion_code: int
    completion_name: str
    completion_text: str  # spandsp's own wording, for logs and support
    failure_class: FailureClass | None
    message: str  # for the person who sent or is receiving the fax
    hint: str
    pages_transferred: int
    pages_in_file: int
    bit_rate: int
    ecm: bool
    x_resolution: int  # pixels per metre, of the last page
    y_resolution: int
    remote_id: str
    pages: list[PageStats]
