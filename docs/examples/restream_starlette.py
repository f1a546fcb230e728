"""Re-stream an answer to a browser from a Starlette (or FastAPI) endpoint, as server-sent events.

Run it with `uvicorn restream_starlette:app` and open http://127.0.0.1:8000/?q=Hello in a browser.
"""

import contextlib
import json
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

import streamkit


async def events(stream: streamkit.ChatCompletionStream) -> AsyncIterator[str]:
    # Starlette cancels this generator when the browser goes away; `async with` then closes the upstream.
    async with stream:
        try:
            async for text in stream.text_deltas():
                yield f"data: {json.dumps({'text': text})}\n\n"
            final = await stream.get_final_completion()
            yield f"event: done\ndata: {json.dumps({'finish_reason': final.choices[0].finish_reason})}\n\n"
        except streamkit.StreamkitError as e:
            yield f"event: error\ndata: {json.dumps({'message': str(e)})}\n\n"


async def ask(request: Request) -> Response:
    client: streamkit.AsyncClient = request.state.client
    try:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": request.query_params.get("q", "Hello!")}],
            stream=True,
        )
    except streamkit.APIStatusError as e:
        return PlainTextResponse(f"upstream answered {e.status_code}: {e.message}", status_code=502)
    return StreamingResponse(
        events(stream), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, streamkit.AsyncClient]]:
    async with streamkit.AsyncClient() as client:  # one client, one connection pool, for the app
        yield {"client": client}


app = Starlette(routes=[Route("/", ask)], lifespan=lifespan)
