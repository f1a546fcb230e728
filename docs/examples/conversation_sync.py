"""Keep a conversation, and trim its history so it fits the model's context, from a script."""

import streamkit

MAX_MESSAGES = 6  # after the system message: the last three questions and answers


def trim(messages: list[dict[str, object]]) -> list[dict[str, object]]:
    """Keep the system message and the most recent turns, starting at a user message."""
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    tail = messages[len(head) :][-MAX_MESSAGES:]
    while tail and tail[0]["role"] != "user":  # never start with an answer or a tool result
        tail = tail[1:]
    return head + tail


with streamkit.Client() as client:
    chat = streamkit.SyncConversation(client, model="gpt-4o-mini", system="Answer in one sentence.")
    for question in [
        "What is TLS?",
        "And mTLS?",
        "Who issues the certificates?",
        "How long do they last?",
    ]:
        print(f"> {question}")
        stream = chat.send(question)
        with stream:
            for text in stream.text_deltas():
                print(text, end="", flush=True)
        print()
        chat.messages = trim(chat.messages)  # the turn joined the history when its stream completed
    print(f"{len(chat.messages)} messages kept")
