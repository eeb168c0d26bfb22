"""htmx's HTML mode: a form post answers both bubbles at once; the reply streams as HTML events."""

from __future__ import annotations

import html
import re

from tests.conftest import HubFactory, HubUnderTest
from tests.support.sse import events_until


def _htmx(hub: HubUnderTest, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {hub.token(user)}", "HX-Request": "true"}


def _stream_url(fragment: str) -> str:
    found = re.search(r'sse-connect="([^"]+)"', fragment)
    assert found, fragment
    return html.unescape(found.group(1))


async def test_a_form_post_answers_bubbles_and_the_reply_streams_as_html(
    hub: HubUnderTest,
) -> None:
    tab = await hub.connect("ann")
    form = {"text": "<b>bold</b> & **strong**"}
    resp = await hub.session.post(f"{hub.url}/api/chat", data=form, headers=_htmx(hub, "ann"))
    assert resp.status == 200 and resp.content_type == "text/html"
    fragment = await resp.text()
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; **strong**" in fragment  # the user's bubble, escaped
    url = _stream_url(fragment)
    assert "ticket=" in url and "/api/replies/r" in url
    async with hub.session.get(url) as stream:
        events = await events_until(stream, "done")
        assert await stream.content.read() == b""  # the stream ends after done
    deltas = [e for e in events if e.event == "delta"]
    assert [e.id for e in deltas] == [str(i) for i in range(len(deltas))]
    assert all(e.data.startswith("<span>") and "<b>" not in e.data for e in deltas)
    shown = "".join(html.unescape(re.sub(r"</?span>", "", e.data)) for e in deltas)
    assert shown == "Echo: <b>bold</b> & **strong**"
    done = events[-1].data
    assert "<strong>strong</strong>" in done and "<b>" not in done
    await tab.expect("message", text="<b>bold</b> & **strong**")  # a normal message for everyone


async def test_a_reply_that_finished_before_the_bubble_connected_still_ends_it(
    start_hub: HubFactory,
) -> None:
    hub = await start_hub()
    tab = await hub.connect("ann")
    resp = await hub.session.post(
        f"{hub.url}/api/chat", data={"text": "quick"}, headers=_htmx(hub, "ann")
    )
    url = _stream_url(await resp.text())
    await tab.expect("done")  # finished before anyone listened
    async with hub.session.get(url) as stream:
        events = await events_until(stream, "done")
    assert "Echo: quick" in events[-1].data


async def test_the_reply_stream_is_for_members_of_its_channel_only(hub: HubUnderTest) -> None:
    resp = await hub.session.post(
        f"{hub.url}/api/chat", data={"text": "mine"}, headers=_htmx(hub, "ann")
    )
    url = _stream_url(await resp.text())
    reply = re.search(r"/api/replies/(r[0-9a-f]+)/", url)
    assert reply
    bob = {"Authorization": f"Bearer {hub.token('bob')}"}
    spy = await hub.session.get(
        f"{hub.url}/api/replies/{reply.group(1)}/events?channel=dm:ann", headers=bob
    )
    assert spy.status == 403
