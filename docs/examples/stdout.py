"""Print a stream to stdout as it arrives: text, refusals and tool calls, then the other choices of `n>1`."""

import asyncio
import sys

import streamkit


async def main() -> None:
    async with streamkit.AsyncClient() as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Write a haiku about latency."}],
            n=2,
            stream=True,
            stream_options={"include_usage": True},  # a last chunk with the token counts
        )
        async with stream:
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.index != 0:  # choices interleave; the others are printed once complete
                        continue
                    delta = choice.delta
                    for call in delta.tool_calls or []:  # a call's name comes once, its arguments in pieces
                        if call.function and call.function.name:
                            sys.stdout.write(f"\n[calls {call.function.name}] ")
                        if call.function and call.function.arguments:
                            sys.stdout.write(call.function.arguments)
                    sys.stdout.write(delta.content or delta.refusal or "")
                    sys.stdout.flush()  # per delta, not per line
        print()
        final = await stream.get_final_completion()
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


asyncio.run(main())
