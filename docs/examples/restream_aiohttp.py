"""Re-stream an answer to a browser from an aiohttp.web endpoint, as server-sent events.

Run it with `python restream_aiohttp.py` and open http://127.0.0.1:8080/?q=Hello in a browser.
"""

import json
from collections.abc import AsyncIterator

from aiohttp import web

import streamkit

CLIENT = web.AppKey("client", streamkit.AsyncClient)


async def ask(request: web.Request) -> web.StreamResponse:
    question = request.query.get("q", "Hello!")
    try:  # open the upstream stream first, so that its errors can still become a status code
        stream = await request.app[CLIENT].chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}], stream=True
        )
    except streamkit.APIStatusError as e:
        raise web.HTTPBadGateway(text=f"upstream answered {e.status_code}: {e.message}") from e

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    # If the browser goes away, a write fails and `async with` closes the upstream stream at once.
    async with stream:
        try:
            async for text in stream.text_deltas():
                await response.write(f"data: {json.dumps({'text': text})}\n\n".encode())
            final = await stream.get_final_completion()
            done = {"finish_reason": final.choices[0].finish_reason}
            await response.write(f"event: done\ndata: {json.dumps(done)}\n\n".encode())
        except streamkit.StreamkitError as e:  # mid-stream: the status is sent already; say so in the stream
            await response.write(f"event: error\ndata: {json.dumps({'message': str(e)})}\n\n".encode())
    return response


def create_app() -> web.Application:
    async def client_context(app: web.Application) -> AsyncIterator[None]:
        async with streamkit.AsyncClient() as client:  # one client, one connection pool, for the app
            app[CLIENT] = client
            yield

    app = web.Application()
    app.cleanup_ctx.append(client_context)
    app.router.add_get("/", ask)
    return app


if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=8080)
