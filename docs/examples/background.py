"""Long-running answers: a background response that survives a broken connection, read again, cancelled."""

import asyncio

import streamkit


async def main() -> None:
    async with streamkit.AsyncClient() as client:  # OPENAI_API_KEY, OPENAI_BASE_URL
        # In the background, the server keeps the response's events: if the connection breaks before the
        # end, the stream picks itself up where it stopped (GET ...?stream=true&starting_after=N).
        stream = await client.responses.create(
            model="gpt-4o-mini", input="Tell me a long story.", background=True, stream=True
        )
        async with stream:
            async for text in stream.text_deltas():
                print(text, end="", flush=True)
        print()
        response = await stream.get_final_response()
        metrics = stream.metrics
        print(f"status={response.status} resumes={metrics.resumes} outage={metrics.outage:.3f}s")

        # The stored response: as it stands, and its events again, those after the third (0, 1, 2)
        assert response.id is not None
        stored = await client.responses.retrieve(response.id)
        replay = await client.responses.retrieve(response.id, stream=True, starting_after=2)
        events = [event.type async for event in replay]
        print(f"retrieved status={stored.status}; replayed {len(events)} events, the last {events[-1]}")

        # Start another, and cancel it once it has begun
        stream = await client.responses.create(
            model="gpt-4o-mini", input="Tell me another long story.", background=True, stream=True
        )
        async with stream:
            created = await anext(stream)  # response.created, which names the response
        assert isinstance(created, streamkit.protocols.responses.ResponseCreatedEvent)
        cancelled = await client.responses.cancel(created.response.id or "")
        print(f"cancelled status={cancelled.status}")


asyncio.run(main())
