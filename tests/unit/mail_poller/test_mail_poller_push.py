"""Push targets: each mailbox its own unguessable path; only a POST to it wakes it."""

from __future__ import annotations

from faxbox.mail_poller.push import ROUTE, PushHub


async def test_a_post_to_a_mailbox_path_wakes_that_mailbox_only() -> None:
    hub = PushHub("http://10.0.0.7:8080/")
    first, second = hub.target("a@x/INBOX"), hub.target("b@x/INBOX")
    assert first.url.startswith(f"http://10.0.0.7:8080{ROUTE}")
    assert first.url != second.url

    status, _, _ = await hub.handle("POST", first.url.removeprefix("http://10.0.0.7:8080"))
    assert status == "200 OK"
    assert first.arrived.is_set()
    assert not second.arrived.is_set()


async def test_unknown_paths_and_other_methods_wake_nothing() -> None:
    hub = PushHub("http://127.0.0.1:1")
    target = hub.target("a@x/INBOX")
    path = target.url.removeprefix("http://127.0.0.1:1")

    assert (await hub.handle("POST", ROUTE + "guess"))[0] == "404 Not Found"
    assert (await hub.handle("POST", ROUTE))[0] == "404 Not Found"
    assert (await hub.handle("GET", path))[0] == "405 Method Not Allowed"
    assert not target.arrived.is_set()
