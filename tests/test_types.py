"""Decoding and encoding the typed models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamkit import (
    ChatCompletion,
    ChatCompletionChunk,
    ChunkDecodeError,
    Completion,
    CompletionChunk,
    ProtocolError,
)
from tests.conftest import OPENAI_STREAMS


def test_unknown_fields_never_break_decoding() -> None:
    raw = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "new_top_level": {"nested": [1, 2]},
        "choices": [
            {
                "index": 0,
                "delta": {"content": "hi", "audio": {"id": "a"}, "annotations": []},
                "finish_reason": None,
                "stop_reason": 42,
                "matched_stop": None,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "cost": 0.01},
    }
    chunk = ChatCompletionChunk.from_json(json.dumps(raw))
    assert chunk.choices[0].delta.content == "hi"
    assert chunk.usage is not None
    assert chunk.usage.total_tokens == 3


def test_missing_and_null_optional_fields() -> None:
    chunk = ChatCompletionChunk.from_json(
        b'{"choices":[{"delta":{"content":null,"role":null}}],"usage":null}'
    )
    assert chunk.id is None
    assert chunk.choices[0].index == 0
    assert chunk.choices[0].delta.content is None
    minimal = ChatCompletionChunk.from_json(b'{"choices":[{"index":0}]}')
    assert minimal.choices[0].delta.content is None


def test_to_dict_leaves_out_none_but_keeps_empty_values() -> None:
    chunk = ChatCompletionChunk.from_json(
        b'{"id":"a","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"",'
        b'"refusal":null},"logprobs":{"content":[{"token":"a","logprob":-1,"top_logprobs":[]}]},'
        b'"finish_reason":null}]}'
    )
    assert chunk.to_dict() == {
        "id": "a",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": {"content": [{"token": "a", "logprob": -1.0, "top_logprobs": []}]},
            }
        ],
    }


def test_none_inside_lists_is_kept() -> None:
    chunk = CompletionChunk.from_json(
        b'{"choices":[{"text":"a","logprobs":{"tokens":["a"],"token_logprobs":[null],"top_logprobs":[null]}}]}'
    )
    assert chunk.to_dict()["choices"][0]["logprobs"] == {
        "tokens": ["a"],
        "token_logprobs": [None],
        "top_logprobs": [None],
    }


@pytest.mark.parametrize("path", OPENAI_STREAMS[:3], ids=lambda p: p.stem)
def test_final_json_round_trips(path: Path) -> None:
    text = path.with_suffix(".final.json").read_text()
    assert ChatCompletion.from_json(text).to_dict() == json.loads(text)


def test_non_streamed_completion_shapes() -> None:
    chat = ChatCompletion.from_json(
        b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":"hi","tool_calls":[{"id":"t","type":"function",'
        b'"function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls","logprobs":null}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,'
        b'"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}'
    )
    assert chat.choices[0].message.tool_calls is not None
    assert chat.choices[0].message.tool_calls[0].function is not None
    assert chat.choices[0].message.tool_calls[0].function.name == "f"
    legacy = Completion.from_json(b'{"id":"x","object":"text_completion","choices":[{"text":"a","index":0}]}')
    assert legacy.choices[0].text == "a"


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[]", b'{"choices": 3}', b'{"choices":[{"index":"zero"}]}', b'{"a":1', "\ud800"],
)
def test_invalid_data_raises_chunk_decode_error_with_raw(data: bytes | str) -> None:
    with pytest.raises(ChunkDecodeError) as info:
        ChatCompletionChunk.from_json(data)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ProtocolError)
    expected = data if isinstance(data, str) else data.decode()
    assert info.value.raw == expected
    assert info.value.partial is None


def test_each_model_has_its_own_decoder() -> None:
    ChatCompletion.from_json(b"{}")
    chunk = ChatCompletionChunk.from_json(b"{}")
    assert type(chunk) is ChatCompletionChunk
    assert chunk.object == "chat.completion.chunk"
    assert CompletionChunk.from_json(b"{}").object == "text_completion"
