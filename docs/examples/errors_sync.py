"""Handle errors and retries from a script: every error is typed, and those raised mid-stream keep what
arrived."""

import streamkit
from streamkit.server import ServerConfig, ServerThread


def ask(client: streamkit.Client, question: str, **headers: str) -> str:
    """The answer, or as much of it as arrived before an error."""
    try:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": question}],
            stream=True,
            extra_headers=headers,
        )
        with stream:
            for _ in stream:
                pass
        return stream.get_final_completion().choices[0].message.content or ""
    except streamkit.RateLimitError as e:  # 429 after every retry
        return f"rate limited: {e.message} (retry after {e.headers.get('retry-after')})"
    except streamkit.APIStatusError as e:  # any other 4xx/5xx: type, code and param come from the body
        return f"{e.status_code} {e.type}/{e.code}: {e.message}"
    except streamkit.TimeoutError as e:  # ConnectTimeout, FirstTokenTimeout, IdleTimeout, TotalTimeout
        return f"{type(e).__name__}, kept {received(e)!r}"
    except streamkit.StreamkitError as e:  # dropped connections, errors sent in the stream, bad data
        return f"{type(e).__name__}: {e}, kept {received(e)!r}"


def received(error: streamkit.StreamkitError) -> str:
    """The text that arrived before the error (`.partial` is None if no response had started)."""
    partial = error.partial
    if isinstance(partial, streamkit.ChatCompletion) and partial.choices:
        return partial.choices[0].message.content or ""
    return ""


# The built-in server rehearses failures: each request names its fault in a header.
with (
    ServerThread(ServerConfig(model="gpt-4o-mini")) as server,
    streamkit.Client(
        base_url=server.base_url,
        api_key="sk-test",
        max_retries=2,  # retried before the response starts: connection errors, 408, 409, 429, 5xx
        timeout=streamkit.Timeout(connect=5, first_token=0.5, idle=10, total=60),
    ) as client,
):
    print(ask(client, "Hi", **{"x-streamkit-fault": "status=503,fail_times=2"}))
    print(ask(client, "Hi", **{"x-streamkit-fault": "status=429,fail_times=9,retry_after=0"}))
    print(ask(client, "Hi", **{"x-streamkit-fault": "status=400"}))
    print(ask(client, "Hi", **{"x-streamkit-fault": "drop=3"}))
    print(ask(client, "Hi", **{"x-streamkit-fault": "error=object,error_after=2"}))
    print(ask(client, "Hi", **{"x-streamkit-timing": "ttft=2"}))
