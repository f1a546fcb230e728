"""Long-running answers, in a script: a background response that survives a broken connection, read again,
cancelled."""

import streamkit
from streamkit.protocols.responses import ResponseCreatedEvent

with streamkit.Client() as client:  # OPENAI_API_KEY, OPENAI_BASE_URL
    # In the background, the server keeps the response's events: if the connection breaks before the end,
    # the stream picks itself up where it stopped (GET ...?stream=true&starting_after=N).
    with client.responses.create(
        model="gpt-4o-mini", input="Tell me a long story.", background=True, stream=True
    ) as stream:
        for text in stream.text_deltas():
            print(text, end="", flush=True)
    print()
    response = stream.get_final_response()
    metrics = stream.metrics
    print(f"status={response.status} resumes={metrics.resumes} outage={metrics.outage:.3f}s")

    # The stored response: as it stands, and its events again, those after the third (0, 1, 2)
    assert response.id is not None
    stored = client.responses.retrieve(response.id)
    with client.responses.retrieve(response.id, stream=True, starting_after=2) as replay:
        events = [event.type for event in replay]
    print(f"retrieved status={stored.status}; replayed {len(events)} events, the last {events[-1]}")

    # Start another, and cancel it once it has begun
    with client.responses.create(
        model="gpt-4o-mini", input="Tell me another long story.", background=True, stream=True
    ) as stream:
        created = next(stream)  # response.created, which names the response
    assert isinstance(created, ResponseCreatedEvent)
    cancelled = client.responses.cancel(created.response.id or "")
    print(f"cancelled status={cancelled.status}")
