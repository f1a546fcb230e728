"""Ask the embedded model: no key, no network. It needs the `local` extra (see Install)."""

import asyncio

import streamkit


async def main() -> None:
    # Starts llama.cpp's server with SmolLM2 on a free loopback port (about a second); leaving the block
    # stops it.
    async with streamkit.AsyncClient.local() as client:
        stream = await client.chat.completions.create(
            model=streamkit.LOCAL_MODEL,  # "smollm2"
            messages=[{"role": "user", "content": "What is a server-sent event?"}],
            max_tokens=64,
            stream=True,
        )
        async with stream:
            async for text in stream.text_deltas():
                print(text, end="", flush=True)
        print()
        final = await stream.get_final_completion()
        print(f"finish_reason={final.choices[0].finish_reason}")


asyncio.run(main())
