"""The API for scripts: send, follow, cancel and resend faxes; manage webhooks.

``/api/v1``: documented in docs/api.md and in the OpenAPI document (/openapi.json, with
examples). A token with scope ``read`` may only read; ``send`` also sends, cancels and
resends; ``admin`` does everything its user may (webhooks too). A signed-in browser needs
no scope (its role decides, and its changes carry the CSRF token).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, File, Form, Header, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from faxbox.portal import outbound, webhook_admin
from faxbox.portal.deps import CheckedPrincipal, CurrentPrincipal, Deps, SendingPrincipal
from faxbox.portal.outbound import Submitted
from faxbox.shared.faxview import WEBHOOK_EVENTS, FaxView
from faxbox.shared.store.webhooks import Webhook, WebhookDelivery

router = APIRouter(prefix="/api/v1")

REPLAYED_HEADER: Final = "Idempotent-Replayed"


def _page_example(page: int, image_bytes: int, ecm_retries: int) -> dict[str, Any]:
    return {
        "page": page,
        "confirmed": True,
        "result": "MCF",
        "bit_rate": 14400,
        "ecm": True,
        "x_resolution": 8031,
        "y_resolution": 7700,
        "encoding": "T.6",
        "length": 2292,
        "image_bytes": image_bytes,
        "bad_rows": 0,
        "longest_bad_row_run": 0,
        "ecm_retries": ecm_retries,
        "transmissions": 1,
    }


_FAX_EXAMPLE: Final[dict[str, Any]] = {
    "id": "fax_01jq7m2x0k3v9d8s6a5b4c3e2f",
    "account_id": "acc_01jq7kzq4m2n8p6r4t2v0x8z6b",
    "faxbox_id": "fbx_01jq7kzr2a4c6e8g0j2l4n6q8s",
    "user_id": "usr_01jq7kzqx1z3b5d7f9h1k3m5p7",
    "direction": "outbound",
    "status": "partially_delivered",
    "to": "+12125550123",
    "from": "+16465550101",
    "pages_sent": 2,
    "pages_total": 3,
    "attempts": 3,
    "failure_reason": "call_dropped",
    "failure_text": "The telephone call was cut off before the fax finished.",
    "retryable": True,
    "rejection_reasons": [],
    "page_report": [
        _page_example(1, image_bytes=48211, ecm_retries=0),
        _page_example(2, image_bytes=51377, ecm_retries=2),
    ],
    "created_at": "2026-03-02T14:05:11.203Z",
    "updated_at": "2026-03-02T14:19:40.877Z",
}


_WEBHOOK_EXAMPLE: Final[dict[str, Any]] = {
    "id": "whk_01jq7n0c8r2t4v6x8z0b2d4f6h",
    "account_id": "acc_01jq7kzq4m2n8p6r4t2v0x8z6b",
    "faxbox_id": None,
    "url": "https://erp.example.com/faxbox/events",
    "failover_url": "https://erp-backup.example.com/faxbox/events",
    "events": ["fax.delivered", "fax.failed"],
    "max_concurrency": 4,
    "enabled": True,
    "description": "ERP",
    "created_at": "2026-03-01T09:00:00Z",
}
_DELIVERY_EXAMPLE: Final[dict[str, Any]] = {
    "event_id": "evt_2f0c6d3e5a7b4c1d9e8f0a1b2c3d4e5f",
    "event_type": "fax.delivered",
    "fax_id": "fax_01jq7m2x0k3v9d8s6a5b4c3e2f",
    "state": "delivered",
    "created_at": "2026-03-02T14:07:55.102Z",
    "next_attempt_at": None,
    "delivered_at": "2026-03-02T14:08:05.377Z",
    "attempts": [
        {
            "at": "2026-03-02T14:07:55.230Z",
            "url": "https://erp.example.com/faxbox/events",
            "status": 503,
            "error": None,
            "duration_ms": 212,
            "replay": False,
            "failover": False,
        },
        {
            "at": "2026-03-02T14:08:05.377Z",
            "url": "https://erp.example.com/faxbox/events",
            "status": 200,
            "error": None,
            "duration_ms": 95,
            "replay": False,
            "failover": False,
        },
    ],
    "body": '{"account_id":"acc_01jq7kzq4m2n8p6r4t2v0x8z6b",'
    '"created_at":"2026-03-02T14:07:55.102Z","data":{"...":"..."},'
    '"fax_id":"fax_01jq7m2x0k3v9d8s6a5b4c3e2f",'
    '"id":"evt_2f0c6d3e5a7b4c1d9e8f0a1b2c3d4e5f","type":"fax.delivered"}',
}


def _answer(
    example: Any, description: str = "", model: type[BaseModel] | None = None
) -> dict[str, Any]:
    """One answer in the OpenAPI document, with an example of its JSON body."""
    answer: dict[str, Any] = {"content": {"application/json": {"example": example}}}
    if model is not None:
        answer["model"] = model
    if description:
        answer["description"] = description
    return answer


class FaxCreated(BaseModel):
    id: str = Field(description="The fax id: follow it at url.")
    to: str = Field(description="The number, in E.164.")
    status: str = Field(description="queued: the validator decides it next.")
    url: str

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "fax_01jq7m2x0k3v9d8s6a5b4c3e2f",
                    "to": "+12125550123",
                    "status": "queued",
                    "url": "/api/v1/faxes/fax_01jq7m2x0k3v9d8s6a5b4c3e2f",
                }
            ]
        }
    )


class SubmissionOut(BaseModel):
    submission_id: str = Field(description="The first fax's id; one submission, one document.")
    faxes: list[FaxCreated] = Field(description="One fax per distinct number, in the order given.")

    @classmethod
    def of(cls, submitted: Submitted) -> SubmissionOut:
        sub = submitted.submission
        return cls(
            submission_id=sub.id,
            faxes=[
                FaxCreated(id=fax_id, to=number, status="queued", url=f"/api/v1/faxes/{fax_id}")
                for fax_id, number in zip(sub.fax_ids, sub.numbers, strict=True)
            ],
        )


class FaxOut(FaxView):
    model_config = ConfigDict(
        frozen=True, populate_by_name=True, json_schema_extra={"examples": [_FAX_EXAMPLE]}
    )


class CancelOut(BaseModel):
    id: str
    status: str = Field(description="The fax's status when the cancel was asked for.")
    cancel_requested: bool = True


class ErrorOut(BaseModel):
    detail: str
    code: str | None = None


class WebhookIn(BaseModel):
    url: str = Field(description="https://… where events are POSTed (public addresses only).")
    failover_url: str | None = Field(
        default=None, description="Tried at once whenever url does not answer 2xx."
    )
    faxbox_id: str | None = Field(default=None, description="Only this faxbox's faxes.")
    events: list[str] | None = Field(
        default=None, description=f"Some of {list(WEBHOOK_EVENTS)}; default all."
    )
    max_concurrency: int = Field(default=4, ge=1, le=50, description="Requests open at once.")
    description: str = Field(default="", max_length=200)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://erp.example.com/faxbox/events",
                    "failover_url": "https://erp-backup.example.com/faxbox/events",
                    "events": ["fax.delivered", "fax.failed"],
                    "max_concurrency": 4,
                    "description": "ERP",
                }
            ]
        }
    )


class WebhookOut(BaseModel):
    id: str
    account_id: str
    faxbox_id: str | None
    url: str
    failover_url: str | None
    events: list[str]
    max_concurrency: int
    enabled: bool
    description: str
    created_at: datetime

    @classmethod
    def of(cls, hook: Webhook) -> WebhookOut:
        return cls.model_validate(hook.model_dump())


class WebhookChange(BaseModel):
    enabled: bool

    model_config = ConfigDict(json_schema_extra={"examples": [{"enabled": False}]})


class AttemptOut(BaseModel):
    at: datetime
    url: str
    status: int | None
    error: str | None
    duration_ms: int
    replay: bool
    failover: bool


class DeliveryOut(BaseModel):
    event_id: str
    event_type: str
    fax_id: str
    state: str = Field(description="pending, delivered, or failed (the schedule is over).")
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    attempts: list[AttemptOut]
    body: str = Field(description="The JSON body sent (the same at every attempt).")

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryOut:
        return cls.model_validate(delivery.model_dump())


class SigningKeyOut(BaseModel):
    account_id: str
    algorithm: str = "ed25519"
    public_key: str = Field(description="Base64 of the 32-byte Ed25519 public key.")
    pem: str = Field(description="The same key as PEM (SubjectPublicKeyInfo).")
    created_at: datetime


_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    403: {"model": ErrorOut, "description": "The token lacks the scope."},
    404: {"model": ErrorOut, "description": "No such fax (or not yours)."},
}
_SEND_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    **_ERRORS,
    409: {
        "model": ErrorOut,
        "description": "The Idempotency-Key was used for a different request in the last 24 "
        "hours (code idempotency_key_reused), or is in use right now.",
    },
    413: {"model": ErrorOut, "description": "The document is over the size limit."},
    415: {"model": ErrorOut, "description": "Not a PDF or TIFF."},
    503: {
        "model": ErrorOut,
        "description": "The submission could not be recorded (code unavailable): nothing "
        "was queued; try again with the same Idempotency-Key.",
    },
    422: _answer(
        {
            "detail": "These numbers cannot be faxed: 555: a number needs its area "
            "code (10 digits in North America) or + and a country code.",
            "code": "invalid_number",
        },
        "A number the account may not fax, too many numbers, no faxbox...",
        ErrorOut,
    ),
}


# --- faxes -----------------------------------------------------------------------------


@router.post(
    "/faxes",
    status_code=202,
    response_model=SubmissionOut,
    tags=["sending"],
    responses={
        202: _answer(
            {
                "submission_id": "fax_01jq7m2x0k3v9d8s6a5b4c3e2f",
                "faxes": [
                    {
                        "id": "fax_01jq7m2x0k3v9d8s6a5b4c3e2f",
                        "to": "+12125550123",
                        "status": "queued",
                        "url": "/api/v1/faxes/fax_01jq7m2x0k3v9d8s6a5b4c3e2f",
                    },
                    {
                        "id": "fax_01jq7m2x0k3v9d8s6a5b4c3e2f-2",
                        "to": "+442079460958",
                        "status": "queued",
                        "url": "/api/v1/faxes/fax_01jq7m2x0k3v9d8s6a5b4c3e2f-2",
                    },
                ],
            },
            "Accepted: one fax per number, recorded and queued for the "
            "validator (for good, even if the broker confirms it only later).",
        ),
        **_SEND_ERRORS,
    },
)
async def send_fax(
    principal: SendingPrincipal,
    deps: Deps,
    response: Response,
    file: Annotated[UploadFile, File(description="One PDF or TIFF.")],
    to: Annotated[
        list[str],
        Form(
            description="Destination numbers (repeat the field, or separate with commas); "
            "the same rules as a fax address by email: E.164 with +, or a North American "
            "10-digit number; the account's blocked categories and countries apply.",
            examples=["+12125550123"],
        ),
    ],
    faxbox: Annotated[
        str | None, Form(description="The faxbox to send from; default: your own.")
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Repeat a request safely for 24 hours: the same key and body give "
            "the same faxes (header Idempotent-Replayed: true), another body 409.",
        ),
    ] = None,
) -> SubmissionOut:
    """Send one document to one or more numbers: one fax per distinct number.

    The fax then goes the way of a fax by email: the validator decides it (the faxbox's
    rules, page limits, rendering), the transmitter calls, and you hear of it through
    GET /api/v1/faxes/{id}, your webhooks and the usual mails.
    """
    limit = deps.send_limits.max_upload_bytes
    data = await file.read(limit + 1)
    submitted = await outbound.submit(
        deps.sending,
        principal,
        faxbox_id=faxbox,
        to=to,
        document=data,
        filename=file.filename or "document",
        channel="portal" if principal.csrf is not None else "api",
        idempotency_key=idempotency_key,
    )
    if submitted.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return SubmissionOut.of(submitted)


@router.get(
    "/faxes/{fax_id}",
    response_model=FaxOut,
    response_model_by_alias=True,
    tags=["sending"],
    responses={200: _answer(_FAX_EXAMPLE), **_ERRORS},
)
async def get_fax(fax_id: str, principal: CurrentPrincipal, deps: Deps) -> FaxOut:
    """A fax by its id: status, failure_reason, retryable, pages and the per-page report."""
    found = await outbound.locate(deps.store, deps.sending.submissions, principal, fax_id)
    return FaxOut.model_validate(found.view().model_dump())


@router.post(
    "/faxes/{fax_id}/cancel",
    status_code=202,
    response_model=CancelOut,
    tags=["sending"],
    responses={
        202: _answer(
            {"id": "fax_01jq7m2x0k3v9d8s6a5b4c3e2f", "status": "sending", "cancel_requested": True}
        ),
        **_ERRORS,
        409: _answer(
            {"detail": "The fax is delivered already.", "code": "already_finished"},
            "Delivered, failed or cancelled already.",
            ErrorOut,
        ),
    },
)
async def cancel_fax(fax_id: str, principal: SendingPrincipal, deps: Deps) -> CancelOut:
    """Stop a fax: queued or waiting for a redial, it ends at once; on the line, the
    call is hung up. The fax ends as cancelled (failure_reason cancelled), with what
    pages were confirmed before the call ended."""
    view = await outbound.cancel(deps.sending, principal, fax_id)
    return CancelOut(id=view.id, status=view.status.value)


@router.post(
    "/faxes/{fax_id}/resend",
    status_code=202,
    response_model=SubmissionOut,
    tags=["sending"],
    responses=_SEND_ERRORS,
)
async def resend_fax(
    fax_id: str,
    principal: SendingPrincipal,
    deps: Deps,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> SubmissionOut:
    """A new fax of the same document to the same number, from the same faxbox."""
    submitted = await outbound.resend(deps.sending, principal, fax_id, idempotency_key)
    if submitted.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return SubmissionOut.of(submitted)


# --- webhooks -------------------------------------------------------------------------


@router.get(
    "/accounts/{account_id}/webhooks",
    response_model=list[WebhookOut],
    tags=["webhooks"],
    responses={200: _answer([_WEBHOOK_EXAMPLE])},
)
async def list_webhooks(
    account_id: str, principal: CurrentPrincipal, deps: Deps
) -> list[WebhookOut]:
    return [
        WebhookOut.of(h)
        for h in await webhook_admin.list_webhooks(deps.hooks, principal, account_id)
    ]


@router.post(
    "/accounts/{account_id}/webhooks",
    status_code=201,
    response_model=WebhookOut,
    tags=["webhooks"],
    responses={
        201: _answer(_WEBHOOK_EXAMPLE),
        422: _answer(
            {
                "detail": "'http://10.0.0.5/hook' points at 10.0.0.5, a private "
                "address; only public addresses can receive webhooks (the platform "
                "operator can allow a network with FAXBOX_WEBHOOKS_ALLOWED_NETWORKS)"
            },
            "A URL refused (not public, not https...).",
            ErrorOut,
        ),
    },
)
async def add_webhook(
    account_id: str, body: WebhookIn, principal: CheckedPrincipal, deps: Deps
) -> WebhookOut:
    """Tell ``url`` about this account's faxes (signed, see docs/api.md)."""
    hook = await webhook_admin.add_webhook(
        deps.hooks,
        principal,
        account_id,
        webhook_admin.WebhookIn(
            url=body.url,
            failover_url=body.failover_url,
            faxbox_id=body.faxbox_id,
            events=tuple(body.events) if body.events is not None else None,
            max_concurrency=body.max_concurrency,
            description=body.description,
        ),
    )
    return WebhookOut.of(hook)


@router.get(
    "/webhooks/{webhook_id}",
    response_model=WebhookOut,
    tags=["webhooks"],
    responses={200: _answer(_WEBHOOK_EXAMPLE)},
)
async def get_webhook(webhook_id: str, principal: CurrentPrincipal, deps: Deps) -> WebhookOut:
    return WebhookOut.of(await webhook_admin.webhook_in_scope(deps.hooks, principal, webhook_id))


@router.patch(
    "/webhooks/{webhook_id}",
    response_model=WebhookOut,
    tags=["webhooks"],
    responses={200: _answer({**_WEBHOOK_EXAMPLE, "enabled": False})},
)
async def change_webhook(
    webhook_id: str, body: WebhookChange, principal: CheckedPrincipal, deps: Deps
) -> WebhookOut:
    return WebhookOut.of(
        await webhook_admin.set_enabled(deps.hooks, principal, webhook_id, body.enabled)
    )


@router.delete("/webhooks/{webhook_id}", status_code=204, tags=["webhooks"])
async def delete_webhook(webhook_id: str, principal: CheckedPrincipal, deps: Deps) -> None:
    """The webhook and its delivery log."""
    await webhook_admin.remove_webhook(deps.hooks, principal, webhook_id)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=list[DeliveryOut],
    tags=["webhooks"],
    responses={200: _answer([_DELIVERY_EXAMPLE])},
)
async def webhook_deliveries(
    webhook_id: str, principal: CurrentPrincipal, deps: Deps
) -> list[DeliveryOut]:
    """The newest deliveries, each with every attempt."""
    return [
        DeliveryOut.of(d) for d in await webhook_admin.deliveries(deps.hooks, principal, webhook_id)
    ]


@router.post(
    "/webhooks/{webhook_id}/deliveries/{event_id}/replay",
    status_code=202,
    response_model=DeliveryOut,
    tags=["webhooks"],
    responses={202: _answer(_DELIVERY_EXAMPLE)},
)
async def replay_delivery(
    webhook_id: str, event_id: str, principal: CheckedPrincipal, deps: Deps
) -> DeliveryOut:
    """Send this event once more (same event id and body; a new timestamp and signature)."""
    return DeliveryOut.of(await webhook_admin.replay(deps.hooks, principal, webhook_id, event_id))


@router.get(
    "/accounts/{account_id}/webhook-signing-key",
    response_model=SigningKeyOut,
    tags=["webhooks"],
    responses={
        200: _answer(
            {
                "account_id": "acc_01jq7kzq4m2n8p6r4t2v0x8z6b",
                "algorithm": "ed25519",
                "public_key": "kgZ3Ywq2t1dP0lL6oQ3xkZbEoMp6r5b2v7n9s1c4e8U=",
                "pem": "-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n",
                "created_at": "2026-03-01T09:00:00Z",
            }
        )
    },
)
async def signing_key(account_id: str, principal: CurrentPrincipal, deps: Deps) -> SigningKeyOut:
    """The key to verify this account's webhooks with (Faxbox-Signature)."""
    key = await webhook_admin.signing_key(deps.hooks, principal, account_id)
    return SigningKeyOut(
        account_id=key.account_id, public_key=key.public_key, pem=key.pem, created_at=key.created_at
    )
