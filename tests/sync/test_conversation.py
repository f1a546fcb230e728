"""`SyncConversation` on chat, Responses and Messages: the history in the API's shape, sent with each turn;
one turn at a time; a failed or closed turn not kept."""

from __future__ import annotations

from typing import Any

import pytest

import streamkit
from streamkit.server import ServerThread
from tests.sync.conftest import CONVERSATION_APIS, SLOW, fault, planned

# Where each API's request carries the conversation, and how its assistant turn holds the text.
HISTORY_FIELD = {"chat": "messages", "responses": "input", "messages": "messages"}


def answer_text(api: str, item: dict[str, Any]) -> str:
    """The text of an assistant turn in the history, in the API's shape."""
    if api == "chat":
        text: str = item["content"]
        return text
    (part,) = item["content"]
    return str(part["text"])


def last_request(server: ServerThread) -> dict[str, Any]:
    return server.stats.bodies[-1]


@pytest.mark.parametrize("api", CONVERSATION_APIS)
def test_a_conversation_keeps_its_history(
    client: streamkit.Client, sync_server: ServerThread, api: str
) -> None:
    conversation = streamkit.SyncConversation(client, model="m", api=api, system="Be brief.", max_tokens=64)
    first = conversation.send("What is TLS?")
    assert conversation.busy
    with first:
        first_text = "".join(first.text_deltas())
    assert not conversation.busy
    sent = last_request(sync_server)
    assert first_text == planned(api, sent).text != ""
    history = [m for m in conversation.messages if m.get("role") != "system"]
    assert [(m["role"], m["content"]) for m in history[:1]] == [("user", "What is TLS?")]
    assert [m["role"] for m in history] == ["user", "assistant"] and answer_text(
        api, history[1]
    ) == first_text

    second = conversation.send("And mTLS?")
    second_text = "".join(second.text_deltas())
    sent = last_request(sync_server)
    # The second request carries the first turn, question and answer, before the new question.
    turns = [m for m in sent[HISTORY_FIELD[api]] if m.get("role") != "system"]
    assert [m["role"] for m in turns] == ["user", "assistant", "user"]
    assert answer_text(api, turns[1]) == first_text and turns[2]["content"] == "And mTLS?"
    if api == "chat":
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    else:
        assert sent["instructions" if api == "responses" else "system"] == "Be brief."
    assert second_text == planned(api, sent).text
    roles = [m["role"] for m in conversation.messages if m.get("role") != "system"]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert answer_text(api, conversation.messages[-1]) == second_text

    conversation.reset()
    assert conversation.messages == ([{"role": "system", "content": "Be brief."}] if api == "chat" else [])


@pytest.mark.parametrize("api", CONVERSATION_APIS)
def test_a_send_while_the_last_turn_streams_is_refused(client: streamkit.Client, api: str) -> None:
    conversation = streamkit.SyncConversation(client, model="m", api=api, max_tokens=64)
    first = conversation.send("one")
    with pytest.raises(streamkit.ConversationBusyError):
        conversation.send("two")
    assert isinstance(streamkit.ConversationBusyError("x"), RuntimeError)
    first.get_final()
    assert not conversation.busy
    second = conversation.send("two")
    while second._reading:  # read to its end, but its items not yet taken: still the turn under way
        second._read_more()
    assert conversation.busy and second.completed
    assert list(second)
    assert not conversation.busy
    assert [m["content"] for m in conversation.messages if m["role"] == "user"] == ["one", "two"]


@pytest.mark.parametrize("api", CONVERSATION_APIS)
def test_a_closed_turn_is_not_kept(client: streamkit.Client, api: str) -> None:
    conversation = streamkit.SyncConversation(client, model="m", api=api, max_tokens=4096)
    conversation.send("one").get_final()
    kept = list(conversation.messages)
    stream = conversation.send("two", extra_headers=SLOW)
    with stream:
        for _ in stream:
            break
    assert not conversation.busy and conversation.messages == kept
    final = stream.get_final()  # what came before the close, as it stands: no turn
    assert conversation.messages == kept and final is not None
    conversation.send("three").get_final()
    assert [m["content"] for m in conversation.messages if m["role"] == "user"] == ["one", "three"]


@pytest.mark.parametrize("api", CONVERSATION_APIS)
@pytest.mark.parametrize("spec", ["drop=6", "truncate=6", "malformed=6", "status=400"])
def test_a_failed_turn_leaves_the_history_as_it_was(client: streamkit.Client, api: str, spec: str) -> None:
    conversation = streamkit.SyncConversation(client, model="m", api=api, max_tokens=64)
    conversation.send("one").get_final()
    kept = list(conversation.messages)
    with pytest.raises(streamkit.StreamkitError):
        conversation.send("two", extra_headers=fault(spec)).get_final()
    assert conversation.messages == kept and not conversation.busy
    conversation.send("two").get_final()  # sent again, after the same history
    assert [m["content"] for m in conversation.messages if m["role"] == "user"] == ["one", "two"]
