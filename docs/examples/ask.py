"""Ask a question and print the answer as it arrives."""

import asyncio

import streamkit


async def main() -> None:
    async with streamkit.AsyncClient() as client:  # OPENAI_API_KEY, OPENAI_BASE_URL
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "What is a server-sent event?"}],
            stream=True,
        )
        async with stream:  # closes the response even if the loop is left early
            async for text in stream.text_deltas():
                print(text, end="", flush=True)
        print()
        final = await stream.get_final_completion()
        ttft = "-" if stream.metrics.ttft is None else f"{stream.metrics.ttft:.3f}s"  # None if no token came
        print(f"finish_reason={final.choices[0].finish_reason} ttft={ttft}")


asyncio.run(main())
