"""Linear time in the accumulators, whatever the server sends: the cost per delta at N, 2N and 4N deltas.

    python benchmarks/bench_aggregate.py              # a table
    python benchmarks/bench_aggregate.py --json       # the same figures as JSON
    python benchmarks/bench_aggregate.py --scale 0.25 # a quarter of the deltas (for code that is not linear)

Each workload is a stream that a server may send, in the shapes where an item or block has no index, or piles
up: chat tool-call deltas without `index` (a new id every second delta), Responses text deltas each with a
fresh `item_id` and no `output_index`, Messages deltas to blocks that never started, and long runs of logprobs
or citations on one part. Rows marked "reference" are the same streams with every index given.

Each is timed as the client runs it: the stream (SSE decoding of 64 KiB reads, JSON into typed items and the
accumulator's `add`: what holds the event loop, event after event), then `final()` once. Each figure is µs
per delta, the median of the rounds: where the stream's stays flat from N to 4N, the work per delta does not
grow with the stream. The final's copies every item once; CPython's garbage collector, which walks every live
object now and then, makes it grow somewhat with millions of objects.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import streamkit
from streamkit.protocols import CHAT, MESSAGES, RESPONSES
from streamkit.protocols.base import Api

READ = 64 * 1024

_CHAT_HEAD = (
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
)


def _chat(tool_calls: str) -> str:
    return f'{_CHAT_HEAD}"delta":{{"tool_calls":[{tool_calls}]}},"finish_reason":null}}]}}'


def chat_tool_calls(n: int, indexed: bool = False) -> list[str]:
    """n tool-call deltas, two per call: the call whole but for its last fragment, then that fragment."""
    events = []
    for i in range(n // 2):
        index = f'"index":{i},' if indexed else ""
        events.append(
            _chat(
                f'{{{index}"id":"call_{i:08d}","type":"function",'
                '"function":{"name":"get_weather","arguments":"{\\"city\\": "}}'
            )
        )
        events.append(_chat(f'{{{index}"function":{{"arguments":"\\"Paris\\"}}"}}}}'))
    return events


def chat_calls(final: Any) -> int:
    calls = final.choices[0].message.tool_calls or []
    assert all(c.function.arguments == '{"city": "Paris"}' for c in calls)
    return 2 * len(calls)


def responses_items(n: int, indexed: bool = False) -> list[str]:
    """n text deltas, each to a new message known only by its `item_id`."""
    return [
        f'{{"type":"response.output_text.delta","item_id":"msg_{i:08d}",'
        + (f'"output_index":{i},"content_index":0,' if indexed else "")
        + '"delta":"word "}'
        for i in range(n)
    ]


def responses_logprobs(n: int) -> list[str]:
    """n text deltas to one part, each with its logprob."""
    return [
        '{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,'
        '"delta":"w","logprobs":[{"token":"w","logprob":-0.1,"bytes":[119],"top_logprobs":[]}]}'
    ] * n


def messages_blocks(n: int, started: bool = False) -> list[str]:
    """n text deltas, each to a new block that never started (or did, for the reference)."""
    events = []
    for i in range(n):
        if started:
            events.append(
                f'{{"type":"content_block_start","index":{i},"content_block":{{"type":"text","text":""}}}}'
            )
        events.append(
            f'{{"type":"content_block_delta","index":{i},"delta":{{"type":"text_delta","text":"word "}}}}'
        )
    return events


def messages_citations(n: int) -> list[str]:
    """n citations to one text block."""
    citation = (
        '{"type":"char_location","cited_text":"x","document_index":0,"start_char_index":0,"end_char_index":1}'
    )
    return [
        f'{{"type":"content_block_delta","index":0,"delta":{{"type":"citations_delta","citation":{citation}}}}}'
    ] * n


class Workload(NamedTuple):
    label: str
    api: Api[Any, Any]
    n: int  # deltas at N
    events: Callable[[int], list[str]]
    deltas: Callable[[Any], int]  # the deltas the final object shows, to check that the work was done


WORKLOADS = [
    Workload("chat tool-call deltas, no index", CHAT, 40_000, chat_tool_calls, chat_calls),
    Workload(
        "chat tool-call deltas, reference", CHAT, 40_000, partial(chat_tool_calls, indexed=True), chat_calls
    ),
    Workload(
        "responses, fresh item_id, no index", RESPONSES, 20_000, responses_items, lambda f: len(f.output)
    ),
    Workload(
        "responses, reference",
        RESPONSES,
        20_000,
        partial(responses_items, indexed=True),
        lambda f: len(f.output),
    ),
    Workload(
        "responses, logprobs on one part",
        RESPONSES,
        20_000,
        responses_logprobs,
        lambda f: len(f.output[0].content[0].logprobs),
    ),
    Workload("messages, blocks never started", MESSAGES, 20_000, messages_blocks, lambda f: len(f.content)),
    Workload(
        "messages, reference (started)",
        MESSAGES,
        20_000,
        partial(messages_blocks, started=True),
        lambda f: len(f.content),
    ),
    Workload(
        "messages, citations on one block",
        MESSAGES,
        20_000,
        messages_citations,
        lambda f: len(f.content[0].citations),
    ),
]


def run(api: Api[Any, Any], reads: list[bytes]) -> tuple[float, float, Any]:
    """Seconds to decode and add the reads, seconds to take the final object, and that object."""
    start = time.perf_counter()
    decoder = streamkit.SSEDecoder()
    acc = api.accumulator()
    decode = api.decode
    add = acc.add
    for read in reads:
        for kind, data in decoder.feed_raw(read):
            item = decode(data, kind)
            if item is not None:
                add(item)
    streamed = time.perf_counter()
    final = acc.final()
    return streamed - start, time.perf_counter() - streamed, final


def measure(workload: Workload, n: int, rounds: int) -> dict[str, float]:
    """Median µs per delta over the rounds, of the stream and of the final."""
    body = "".join(f"data: {e}\n\n" for e in workload.events(n)).encode()
    reads = [body[i : i + READ] for i in range(0, len(body), READ)]
    stream, final_ = [], []
    for _ in range(rounds):
        seconds, final_seconds, final = run(workload.api, reads)
        assert workload.deltas(final) == n, (workload.label, workload.deltas(final), n)
        stream.append(seconds)
        final_.append(final_seconds)
    return {"stream": statistics.median(stream) / n * 1e6, "final": statistics.median(final_) / n * 1e6}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every N by this")
    parser.add_argument("--multiples", type=int, nargs="+", default=[1, 2, 4], help="N times each of these")
    parser.add_argument("--only", help="run only the workloads whose label contains this")
    args = parser.parse_args(argv)

    results: dict[str, dict[int, dict[str, float]]] = {}
    for workload in WORKLOADS:
        if args.only is None or args.only in workload.label:
            base = max(2, int(workload.n * args.scale) // 2 * 2)
            results[workload.label] = {
                base * m: measure(workload, base * m, args.rounds) for m in args.multiples
            }

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"us per delta, median of {args.rounds} rounds: the stream (decode + add; flat from N to"
        f" {args.multiples[-1]}N means linear time), then final() once\n"
    )
    heads = "  ".join(f"{f'{m}N':>7}" for m in args.multiples)
    print(f"{'workload':36} {'N':>7}  stream: {heads}  last/first   final: {heads}")
    for label, row in results.items():
        stream = [cell["stream"] for cell in row.values()]
        final = [cell["final"] for cell in row.values()]
        print(
            f"{label:36} {next(iter(row)):7,}  {'':8}"
            + "  ".join(f"{v:7.2f}" for v in stream)
            + f"  {stream[-1] / stream[0]:9.2f}x   {'':7}"
            + "  ".join(f"{v:7.2f}" for v in final)
        )


if __name__ == "__main__":
    main()
