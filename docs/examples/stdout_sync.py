"""Print a stream to stdout as it arrives, from a script: text, refusals and tool calls, then the other
choices of `n>1`."""

import sys

import streamkit

with streamkit.Client() as client:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Write a haiku about latency."}],
        n=2,
        stream=True,
        stream_options={"include_usage": True},  # a last chunk with the token counts
    )
    with stream:
        for chunk in stream:
            for choice in chunk.choices:
                if choice.index != 0:  # choices interleave; the others are printed once complete
                    continue
                delta = choice.delta
                for call in delta.tool_calls or []:  # a call's name comes once, its arguments in pieces
                    if call.function and call.function.name:
                        print(f"\n[calls {call.function.name}] ", end="")
                    if call.function and call.function.arguments:
                        print(call.function.arguments, end="")
                print(delta.content or delta.refusal or "", end="", flush=True)  # per delta, not per line
    print()
    final = stream.get_final_completion()
    for other in final.choices[1:]:
        print(f"[choice {other.index}] {other.message.content}")
    print(f"finish_reason={final.choices[0].finish_reason}", file=sys.stderr)
    if (
        final.usage
        and final.usage.completion_tokens
        and stream.metrics.ttft is not None
        and stream.metrics.e2e is not None
    ):
        rate = final.usage.completion_tokens / stream.metrics.e2e
        print(f"ttft {stream.metrics.ttft:.3f}s, {rate:.0f} tokens/s", file=sys.stderr)
