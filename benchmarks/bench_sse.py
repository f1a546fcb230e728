"""Decoding throughput of streamkit's SSE decoder against httpx-sse's and openai-python's, on the same bytes.

    python benchmarks/bench_sse.py            # a table
    python benchmarks/bench_sse.py --json     # the same figures as JSON

Workloads:
- llm: an LLM-shaped stream of 100,000 OpenAI chunks (`data: {json}\\n\\n`), fed one event per read, as a
  live stream arrives, and in 64 KiB reads, as a fast one does;
- big: 256 events of 64 KiB data each, fed in 4 KiB reads, so that every event spans many reads;
- bytewise: 2,000 OpenAI chunks fed one byte at a time.

Each contender turns bytes into events the way it does inside its library: streamkit's `SSEDecoder.feed_raw`
(what its client runs: each event's type and data as bytes, for the JSON parser) and `SSEDecoder.feed` (full
`ServerSentEvent`s, decoded text); httpx-sse's UTF-8 text decoding, `SSELineDecoder` and `SSEDecoder.decode`
per line (what `aiter_sse` runs); openai-python's `SSEDecoder.iter_bytes`. The contenders are run in turn,
round after round, so that the machine's drift hits all alike; each figure is the median over the rounds.

Then decode + aggregate: the cost per chunk of turning the llm stream into a final ChatCompletion (SSE, JSON
into typed chunks, merge), for streamkit and for openai-python (pydantic models and its
`ChatCompletionStreamState`, on a tenth of the chunks because it is slow).
"""

from __future__ import annotations

import argparse
import codecs
import json
import random
import statistics
import time
from collections.abc import Callable

from httpx_sse._decoders import SSEDecoder as HttpxSSEDecoder
from httpx_sse._decoders import SSELineDecoder as HttpxSSELineDecoder
from openai._streaming import SSEDecoder as OpenAISSEDecoder
from openai.lib.streaming.chat._completions import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk as OpenAIChatCompletionChunk

import streamkit
from streamkit.protocols import CHAT

Chunks = list[bytes]
Contender = Callable[[Chunks], int]

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "you",
    "that",
    "it",
    "he",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "at",
    "be",
    "this",
    "from",
    "I",
    "have",
    "or",
    "by",
]


def llm_stream(n: int, seed: int = 0) -> bytes:
    """n OpenAI-shaped chunks (a role chunk, content chunks, a finish chunk, a usage chunk) and [DONE]."""
    rng = random.Random(seed)
    head = (
        '{"id":"chatcmpl-AB1234567890abcdefghijklmnop","object":"chat.completion.chunk","created":1727346168,'
        '"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5050236cbd","choices":[{"index":0,"delta":'
    )
    events = [
        head + '{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}'
    ]
    for _ in range(n - 3):
        word = json.dumps(" " + rng.choice(WORDS))
        events.append(head + '{"content":' + word + '},"logprobs":null,"finish_reason":null}]}')
    events.append(head + '{},"logprobs":null,"finish_reason":"stop"}]}')
    events.append(
        head.split('"choices"')[0] + '"choices":[],"usage":{"prompt_tokens":14,"completion_tokens":'
        f'{n - 3},"total_tokens":{n + 11}}}}}'
    )
    events.append("[DONE]")
    return "".join(f"data: {e}\n\n" for e in events).encode()


def split_events(stream: bytes) -> Chunks:
    return [part + b"\n\n" for part in stream.split(b"\n\n") if part]


def split_every(stream: bytes, size: int) -> Chunks:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def big_stream(events: int = 256, size: int = 64 * 1024) -> bytes:
    return b"".join(b"data: " + bytes([97 + i % 26]) * size + b"\n\n" for i in range(events))


def run_streamkit(chunks: Chunks) -> int:
    decoder = streamkit.SSEDecoder()
    feed = decoder.feed
    n = 0
    for chunk in chunks:
        n += len(feed(chunk))
    return n


def run_streamkit_raw(chunks: Chunks) -> int:
    decoder = streamkit.SSEDecoder()
    feed = decoder.feed_raw
    n = 0
    for chunk in chunks:
        n += len(feed(chunk))
    return n


def run_httpx_sse(chunks: Chunks) -> int:
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    lines = HttpxSSELineDecoder()
    decoder = HttpxSSEDecoder()
    n = 0
    for chunk in chunks:
        for line in lines.decode(text.decode(chunk)):
            if decoder.decode(line.rstrip("\n")) is not None:
                n += 1
    return n


def run_openai(chunks: Chunks) -> int:
    return sum(1 for _ in OpenAISSEDecoder().iter_bytes(iter(chunks)))


CONTENDERS: dict[str, Contender] = {
    "streamkit": run_streamkit_raw,
    "streamkit .feed": run_streamkit,
    "httpx-sse": run_httpx_sse,
    "openai": run_openai,
}


def race(chunks: Chunks, rounds: int, contenders: dict[str, Contender]) -> dict[str, float]:
    """The median seconds per pass of each contender, taken in turn, round after round."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    expected = None
    for r in range(rounds):
        names = list(contenders)
        names = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
        for name in names:
            start = time.perf_counter()
            events = contenders[name](chunks)
            times[name].append(time.perf_counter() - start)
            if expected is None:
                expected = events
            assert events == expected, (name, events, expected)
    return {name: statistics.median(t) for name, t in times.items()}


def aggregate_streamkit(events: list[bytes]) -> float:
    start = time.perf_counter()
    decoder = streamkit.SSEDecoder()
    acc = streamkit.ChatCompletionAccumulator()
    decode = CHAT.decode
    for chunk in events:
        for kind, data in decoder.feed_raw(chunk):
            if data.startswith(b"[DONE]"):
                break
            chunk_ = decode(data, kind)
            if chunk_ is not None:
                acc.add(chunk_)
    acc.final()
    return time.perf_counter() - start


def aggregate_openai(events: list[bytes]) -> float:
    start = time.perf_counter()
    state = ChatCompletionStreamState()
    for event in OpenAISSEDecoder().iter_bytes(iter(events)):
        if event.data.startswith("[DONE]"):
            break
        state.handle_chunk(OpenAIChatCompletionChunk.model_validate_json(event.data))
    state.get_final_completion()
    return time.perf_counter() - start


def scaling() -> dict[str, dict[int, float]]:
    """Nanoseconds per byte to decode one event of growing size: flat figures mean linear time."""
    result: dict[str, dict[int, float]] = {"bytewise": {}, "4 KiB reads": {}}
    for label, sizes, read in (
        ("bytewise", (16_384, 65_536, 262_144), 1),
        ("4 KiB reads", (1 << 20, 1 << 24), 4096),
    ):
        for size in sizes:
            lines = b"data: " + b"z" * 1000 + b"\n"
            stream = lines * (size // len(lines)) + b"\n"
            chunks = split_every(stream, read)
            start = time.perf_counter()
            assert run_streamkit(chunks) == 1
            result[label][size] = (time.perf_counter() - start) / len(stream) * 1e9
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks in the llm stream")
    args = parser.parse_args(argv)

    llm = llm_stream(args.chunks)
    small = llm_stream(2_000)
    workloads: list[tuple[str, bytes, Chunks]] = [
        ("llm, one event per read", llm, split_events(llm)),
        ("llm, 64 KiB reads", llm, split_every(llm, 64 * 1024)),
        ("big 64 KiB events, 4 KiB reads", big := big_stream(), split_every(big, 4096)),
        ("bytewise, 2k chunks", small, split_every(small, 1)),
    ]
    results: dict[str, object] = {}
    for label, stream, chunks in workloads:
        medians = race(chunks, args.rounds, CONTENDERS)
        events = run_streamkit(chunks)
        results[label] = {
            name: {
                "seconds": t,
                "MB_per_s": len(stream) / t / 1e6,
                "events_per_s": events / t,
                "streamkit_speedup": t / medians["streamkit"],
            }
            for name, t in medians.items()
        }

    reads = split_events(llm)
    few = reads[: len(reads) // 10]
    ours = statistics.median(aggregate_streamkit(reads) for _ in range(args.rounds))
    theirs = statistics.median(aggregate_openai(few) for _ in range(max(1, args.rounds // 2)))
    per_chunk = {"streamkit": ours / len(reads) * 1e6, "openai": theirs / len(few) * 1e6}
    results["decode + aggregate, us per chunk"] = per_chunk
    linear = scaling()
    results["ns per byte by event size"] = linear

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"SSE decoding, median of {args.rounds} rounds (speedup = contender's time / streamkit's time)\n")
    print(f"{'workload':34} {'decoder':16} {'MB/s':>9} {'events/s':>12} {'streamkit speedup':>18}")
    for label, _, _ in workloads:
        table = results[label]
        assert isinstance(table, dict)
        for name, row in table.items():
            print(
                f"{label:34} {name:16} {row['MB_per_s']:9.1f} {row['events_per_s']:12,.0f}"
                f" {row['streamkit_speedup']:17.2f}x"
            )
    print(
        f"\ndecode + aggregate into a ChatCompletion: streamkit {per_chunk['streamkit']:.2f} us/chunk,"
        f" openai {per_chunk['openai']:.1f} us/chunk ({per_chunk['openai'] / per_chunk['streamkit']:.0f}x)"
    )
    print("\none event of growing size (1000-byte lines), ns per byte; flat means linear time:")
    for label, row in linear.items():
        print(f"  {label:12} " + "  ".join(f"{size >> 10:>6} KiB: {ns:6.1f}" for size, ns in row.items()))


if __name__ == "__main__":
    main()
