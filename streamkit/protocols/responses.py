"""The Responses API (`/v1/responses`): its typed stream events, the `Response`, its accumulator and rules.

A stream is typed `response.*` events, each JSON object naming its `type`, until a terminal event:

- `response.completed` and `response.incomplete` end the stream normally (`Response.status` says which,
  `incomplete_details.reason` why). `response.failed` and an `error` event raise `StreamAPIError`, after
  the events before them are yielded. A body that ends before a terminal event is incomplete.
- There is no `data: [DONE]`; one that a server sends after the terminal event is never read.
- Where the SSE `event:` field and the data's `type` disagree, the data's type wins. An event of a type this
  version does not know becomes an `UnknownEvent`, and a new kind of output item or content part an
  `UnknownObject`: new types never break a stream. `ping` is skipped.

Servers differ: llama.cpp sends no `sequence_number`, `output_index` or `content_index`; LiteLLM adds a
top-level `model` to every event and ends with `data: [DONE]`; OpenAI's later streams add `obfuscation`.
All of them decode.

The merge rules of `ResponseAccumulator`:

- Output items are keyed by `output_index`, or by `item_id` where a server omits the index (an event with
  neither goes to the latest item, and a new item goes after the highest index), each found in O(1); content
  parts by `content_index` (0 where omitted), reasoning summary parts by `summary_index`.
- Text, refusal, reasoning text and summary deltas, and the argument deltas of function, custom-tool and MCP
  calls (and code-interpreter code) are concatenated.
- A `*.done` event, or `response.output_item.done`, gives the full value, which replaces what the deltas
  built.
- The terminal event's `response` is authoritative for `status`, `usage`, `incomplete_details` and `error`;
  its `output`, where present and non-empty, for the output.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgspec
from msgspec.structs import replace

from streamkit.errors import StreamAPIError, api_error_fields
from streamkit.protocols.base import (
    COUNTED,
    END,
    ERROR,
    TOKEN,
    Model,
    OpenUnion,
    Outcome,
    TaggedModel,
    TypedEventApi,
    UnknownEvent,
    UnknownObject,
    detached,
)
from streamkit.protocols.chat import drop_none

__all__ = [
    "RESPONSES",
    "CodeInterpreterCallItem",
    "ComputerCallItem",
    "ContentPart",
    "CustomToolCallItem",
    "FileSearchCallItem",
    "FunctionCallItem",
    "ImageGenerationCallItem",
    "IncompleteDetails",
    "InputTokensDetails",
    "LocalShellCallItem",
    "McpApprovalRequestItem",
    "McpCallItem",
    "McpListToolsItem",
    "OutputItem",
    "OutputMessage",
    "OutputText",
    "OutputTokensDetails",
    "ReasoningItem",
    "ReasoningText",
    "Refusal",
    "Response",
    "ResponseAccumulator",
    "ResponseError",
    "ResponseLogprob",
    "ResponseStreamEvent",
    "ResponseUsage",
    "ResponsesApi",
    "SummaryText",
    "UnknownContentPart",
    "UnknownOutputItem",
    "WebSearchCallItem",
]


# The response and its parts


class ResponseError(Model):
    """Why a response failed."""

    code: str | None = None
    message: str | None = None


class IncompleteDetails(Model):
    """Why a response is incomplete: `max_output_tokens` or `content_filter`."""

    reason: str | None = None


class InputTokensDetails(Model):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


class OutputTokensDetails(Model):
    reasoning_tokens: int | None = None


class ResponseUsage(Model):
    input_tokens: int | None = None
    input_tokens_details: InputTokensDetails | None = None
    output_tokens: int | None = None
    output_tokens_details: OutputTokensDetails | None = None
    total_tokens: int | None = None


class ResponseTopLogprob(Model):
    token: str | None = None
    logprob: float | None = None
    bytes: list[int] | None = None


class ResponseLogprob(Model):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[ResponseTopLogprob] | None = None


class ContentPart(OpenUnion):
    """A part of a message's content or of a reasoning item: `OutputText`, `Refusal`, `ReasoningText`,
    `SummaryText`, or `UnknownContentPart`."""

    __slots__ = ()


class OutputText(Model, ContentPart, tag_field="type", tag="output_text"):
    text: str = ""
    annotations: list[dict[str, Any]] = msgspec.field(default_factory=list)
    logprobs: list[ResponseLogprob] | None = None


class Refusal(Model, ContentPart, tag_field="type", tag="refusal"):
    refusal: str = ""


class ReasoningText(Model, ContentPart, tag_field="type", tag="reasoning_text"):
    text: str = ""


class SummaryText(Model, ContentPart, tag_field="type", tag="summary_text"):
    text: str = ""


class UnknownContentPart(UnknownObject, ContentPart):
    """A content part of a type streamkit does not know."""

    __slots__ = ()


ContentPart.variants = (OutputText, Refusal, ReasoningText, SummaryText)
ContentPart.unknown = UnknownContentPart


class OutputItem(OpenUnion):
    """An item of a response's output: a message, a function call, reasoning, a tool call of a built-in
    tool, or an `UnknownOutputItem`."""

    __slots__ = ()


class OutputMessage(Model, OutputItem, tag_field="type", tag="message"):
    id: str | None = None
    role: str = "assistant"
    status: str | None = None
    content: list[ContentPart] = msgspec.field(default_factory=list)


class FunctionCallItem(Model, OutputItem, tag_field="type", tag="function_call"):
    id: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""
    status: str | None = None


class CustomToolCallItem(Model, OutputItem, tag_field="type", tag="custom_tool_call"):
    id: str | None = None
    call_id: str | None = None
    name: str | None = None
    input: str = ""
    status: str | None = None


class ReasoningItem(Model, OutputItem, tag_field="type", tag="reasoning"):
    id: str | None = None
    summary: list[ContentPart] = msgspec.field(default_factory=list)
    content: list[ContentPart] | None = None
    encrypted_content: str | None = None
    status: str | None = None


class FileSearchCallItem(Model, OutputItem, tag_field="type", tag="file_search_call"):
    id: str | None = None
    status: str | None = None
    queries: list[str] | None = None
    results: list[dict[str, Any]] | None = None


class WebSearchCallItem(Model, OutputItem, tag_field="type", tag="web_search_call"):
    id: str | None = None
    status: str | None = None
    action: dict[str, Any] | None = None


class CodeInterpreterCallItem(Model, OutputItem, tag_field="type", tag="code_interpreter_call"):
    id: str | None = None
    status: str | None = None
    code: str | None = None
    container_id: str | None = None
    outputs: list[dict[str, Any]] | None = None


class ImageGenerationCallItem(Model, OutputItem, tag_field="type", tag="image_generation_call"):
    id: str | None = None
    status: str | None = None
    result: str | None = None


class McpCallItem(Model, OutputItem, tag_field="type", tag="mcp_call"):
    id: str | None = None
    server_label: str | None = None
    name: str | None = None
    arguments: str = ""
    output: str | None = None
    error: Any = None
    status: str | None = None


class McpListToolsItem(Model, OutputItem, tag_field="type", tag="mcp_list_tools"):
    id: str | None = None
    server_label: str | None = None
    tools: list[dict[str, Any]] = msgspec.field(default_factory=list)
    error: Any = None


class McpApprovalRequestItem(Model, OutputItem, tag_field="type", tag="mcp_approval_request"):
    id: str | None = None
    server_label: str | None = None
    name: str | None = None
    arguments: str = ""


class ComputerCallItem(Model, OutputItem, tag_field="type", tag="computer_call"):
    id: str | None = None
    call_id: str | None = None
    action: dict[str, Any] | None = None
    pending_safety_checks: list[dict[str, Any]] | None = None
    status: str | None = None


class LocalShellCallItem(Model, OutputItem, tag_field="type", tag="local_shell_call"):
    id: str | None = None
    call_id: str | None = None
    action: dict[str, Any] | None = None
    status: str | None = None


class UnknownOutputItem(UnknownObject, OutputItem):
    """An output item of a type streamkit does not know."""

    __slots__ = ()


OutputItem.variants = (
    OutputMessage,
    FunctionCallItem,
    CustomToolCallItem,
    ReasoningItem,
    FileSearchCallItem,
    WebSearchCallItem,
    CodeInterpreterCallItem,
    ImageGenerationCallItem,
    McpCallItem,
    McpListToolsItem,
    McpApprovalRequestItem,
    ComputerCallItem,
    LocalShellCallItem,
)
OutputItem.unknown = UnknownOutputItem


class Response(Model):
    """A whole response: the answer of a request with `stream=False`, or a stream's aggregate."""

    id: str | None = None
    object: str = "response"
    created_at: int | float | None = None
    """Unix seconds, an integer as OpenAI sends it (a float only where a server sends one)."""
    status: str | None = None
    """`completed`, `incomplete`, `failed`, `in_progress`, `queued` or `cancelled`."""
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: Any = None
    max_output_tokens: int | None = None
    model: str | None = None
    output: list[OutputItem] = msgspec.field(default_factory=list)
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None
    temperature: float | None = None
    text: dict[str, Any] | None = None
    tool_choice: Any = None
    tools: list[dict[str, Any]] | None = None
    top_p: float | None = None
    truncation: str | None = None
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    background: bool | None = None

    @property
    def output_text(self) -> str:
        """The text of every `output_text` part of the message items, joined (as the openai SDK has it)."""
        return "".join(
            part.text
            for item in self.output
            if isinstance(item, OutputMessage)
            for part in item.content
            if isinstance(part, OutputText)
        )


# The events


class _Event(TaggedModel):
    sequence_number: int | None = None


class _LifecycleEvent(_Event):
    response: Response = msgspec.field(default_factory=Response)


class ResponseCreatedEvent(_LifecycleEvent, tag="response.created"):
    pass


class ResponseQueuedEvent(_LifecycleEvent, tag="response.queued"):
    pass


class ResponseInProgressEvent(_LifecycleEvent, tag="response.in_progress"):
    pass


class ResponseCompletedEvent(_LifecycleEvent, tag="response.completed"):
    """Terminal: the response is complete."""


class ResponseIncompleteEvent(_LifecycleEvent, tag="response.incomplete"):
    """Terminal: the response stopped early (`incomplete_details.reason`)."""


class ResponseFailedEvent(_LifecycleEvent, tag="response.failed"):
    """Terminal: the response failed (`response.error`); the stream raises `StreamAPIError`."""


class ResponseErrorEvent(_Event, tag="error"):
    """An error; the stream raises `StreamAPIError`."""

    code: str | None = None
    message: str | None = None
    param: str | None = None
    error: Any = None
    """The error object (or text) where a server nests the fields under `error`, as OpenAI's live API and
    proxies do (`{"type": "error", "error": {"type", "code", "message", "param"}}`)."""

    def fields(self) -> tuple[str | None, str | None, str | None, str | None]:
        """`message`, `type`, `code` and `param`: each flat field, else the nested error's."""
        message, type, code, param = api_error_fields(self.error)
        return self.message or message, type, self.code or code, self.param or param


class _ItemEvent(_Event):
    item_id: str | None = None
    output_index: int | None = None


class ResponseOutputItemAddedEvent(_Event, tag="response.output_item.added"):
    output_index: int | None = None
    item: OutputItem | None = None


class ResponseOutputItemDoneEvent(_Event, tag="response.output_item.done"):
    output_index: int | None = None
    item: OutputItem | None = None


class _PartEvent(_ItemEvent):
    content_index: int | None = None


class ResponseContentPartAddedEvent(_PartEvent, tag="response.content_part.added"):
    part: ContentPart | None = None


class ResponseContentPartDoneEvent(_PartEvent, tag="response.content_part.done"):
    part: ContentPart | None = None


class ResponseTextDeltaEvent(_PartEvent, tag="response.output_text.delta"):
    delta: str = ""
    logprobs: list[ResponseLogprob] | None = None


class ResponseTextDoneEvent(_PartEvent, tag="response.output_text.done"):
    text: str = ""
    logprobs: list[ResponseLogprob] | None = None


class ResponseOutputTextAnnotationAddedEvent(_PartEvent, tag="response.output_text.annotation.added"):
    annotation_index: int | None = None
    annotation: dict[str, Any] | None = None


class ResponseRefusalDeltaEvent(_PartEvent, tag="response.refusal.delta"):
    delta: str = ""


class ResponseRefusalDoneEvent(_PartEvent, tag="response.refusal.done"):
    refusal: str = ""


class ResponseFunctionCallArgumentsDeltaEvent(_ItemEvent, tag="response.function_call_arguments.delta"):
    delta: str = ""


class ResponseFunctionCallArgumentsDoneEvent(_ItemEvent, tag="response.function_call_arguments.done"):
    arguments: str = ""
    name: str | None = None


class ResponseCustomToolCallInputDeltaEvent(_ItemEvent, tag="response.custom_tool_call_input.delta"):
    delta: str = ""


class ResponseCustomToolCallInputDoneEvent(_ItemEvent, tag="response.custom_tool_call_input.done"):
    input: str = ""


class ResponseMcpCallArgumentsDeltaEvent(_ItemEvent, tag="response.mcp_call_arguments.delta"):
    delta: str = ""


class ResponseMcpCallArgumentsDoneEvent(_ItemEvent, tag="response.mcp_call_arguments.done"):
    arguments: str = ""


class ResponseCodeInterpreterCallCodeDeltaEvent(_ItemEvent, tag="response.code_interpreter_call_code.delta"):
    delta: str = ""


class ResponseCodeInterpreterCallCodeDoneEvent(_ItemEvent, tag="response.code_interpreter_call_code.done"):
    code: str = ""


class _SummaryEvent(_ItemEvent):
    summary_index: int | None = None


class ResponseReasoningSummaryPartAddedEvent(_SummaryEvent, tag="response.reasoning_summary_part.added"):
    part: ContentPart | None = None


class ResponseReasoningSummaryPartDoneEvent(_SummaryEvent, tag="response.reasoning_summary_part.done"):
    part: ContentPart | None = None


class ResponseReasoningSummaryTextDeltaEvent(_SummaryEvent, tag="response.reasoning_summary_text.delta"):
    delta: str = ""


class ResponseReasoningSummaryTextDoneEvent(_SummaryEvent, tag="response.reasoning_summary_text.done"):
    text: str = ""


class ResponseReasoningTextDeltaEvent(_PartEvent, tag="response.reasoning_text.delta"):
    delta: str = ""


class ResponseReasoningTextDoneEvent(_PartEvent, tag="response.reasoning_text.done"):
    text: str = ""


class ResponseFileSearchCallInProgressEvent(_ItemEvent, tag="response.file_search_call.in_progress"):
    pass


class ResponseFileSearchCallSearchingEvent(_ItemEvent, tag="response.file_search_call.searching"):
    pass


class ResponseFileSearchCallCompletedEvent(_ItemEvent, tag="response.file_search_call.completed"):
    pass


class ResponseWebSearchCallInProgressEvent(_ItemEvent, tag="response.web_search_call.in_progress"):
    pass


class ResponseWebSearchCallSearchingEvent(_ItemEvent, tag="response.web_search_call.searching"):
    pass


class ResponseWebSearchCallCompletedEvent(_ItemEvent, tag="response.web_search_call.completed"):
    pass


class ResponseCodeInterpreterCallInProgressEvent(
    _ItemEvent, tag="response.code_interpreter_call.in_progress"
):
    pass


class ResponseCodeInterpreterCallInterpretingEvent(
    _ItemEvent, tag="response.code_interpreter_call.interpreting"
):
    pass


class ResponseCodeInterpreterCallCompletedEvent(_ItemEvent, tag="response.code_interpreter_call.completed"):
    pass


class ResponseImageGenCallInProgressEvent(_ItemEvent, tag="response.image_generation_call.in_progress"):
    pass


class ResponseImageGenCallGeneratingEvent(_ItemEvent, tag="response.image_generation_call.generating"):
    pass


class ResponseImageGenCallCompletedEvent(_ItemEvent, tag="response.image_generation_call.completed"):
    pass


class ResponseImageGenCallPartialImageEvent(_ItemEvent, tag="response.image_generation_call.partial_image"):
    partial_image_b64: str = ""
    partial_image_index: int | None = None


class ResponseMcpCallInProgressEvent(_ItemEvent, tag="response.mcp_call.in_progress"):
    pass


class ResponseMcpCallCompletedEvent(_ItemEvent, tag="response.mcp_call.completed"):
    pass


class ResponseMcpCallFailedEvent(_ItemEvent, tag="response.mcp_call.failed"):
    pass


class ResponseMcpListToolsInProgressEvent(_ItemEvent, tag="response.mcp_list_tools.in_progress"):
    pass


class ResponseMcpListToolsCompletedEvent(_ItemEvent, tag="response.mcp_list_tools.completed"):
    pass


class ResponseMcpListToolsFailedEvent(_ItemEvent, tag="response.mcp_list_tools.failed"):
    pass


class ResponseAudioDeltaEvent(_Event, tag="response.audio.delta"):
    delta: str = ""
    """Base64-encoded audio."""


class ResponseAudioDoneEvent(_Event, tag="response.audio.done"):
    pass


class ResponseAudioTranscriptDeltaEvent(_Event, tag="response.audio.transcript.delta"):
    delta: str = ""


class ResponseAudioTranscriptDoneEvent(_Event, tag="response.audio.transcript.done"):
    pass


ResponseStreamEvent: TypeAlias = (
    ResponseCreatedEvent
    | ResponseQueuedEvent
    | ResponseInProgressEvent
    | ResponseCompletedEvent
    | ResponseIncompleteEvent
    | ResponseFailedEvent
    | ResponseErrorEvent
    | ResponseOutputItemAddedEvent
    | ResponseOutputItemDoneEvent
    | ResponseContentPartAddedEvent
    | ResponseContentPartDoneEvent
    | ResponseTextDeltaEvent
    | ResponseTextDoneEvent
    | ResponseOutputTextAnnotationAddedEvent
    | ResponseRefusalDeltaEvent
    | ResponseRefusalDoneEvent
    | ResponseFunctionCallArgumentsDeltaEvent
    | ResponseFunctionCallArgumentsDoneEvent
    | ResponseCustomToolCallInputDeltaEvent
    | ResponseCustomToolCallInputDoneEvent
    | ResponseMcpCallArgumentsDeltaEvent
    | ResponseMcpCallArgumentsDoneEvent
    | ResponseCodeInterpreterCallCodeDeltaEvent
    | ResponseCodeInterpreterCallCodeDoneEvent
    | ResponseReasoningSummaryPartAddedEvent
    | ResponseReasoningSummaryPartDoneEvent
    | ResponseReasoningSummaryTextDeltaEvent
    | ResponseReasoningSummaryTextDoneEvent
    | ResponseReasoningTextDeltaEvent
    | ResponseReasoningTextDoneEvent
    | ResponseFileSearchCallInProgressEvent
    | ResponseFileSearchCallSearchingEvent
    | ResponseFileSearchCallCompletedEvent
    | ResponseWebSearchCallInProgressEvent
    | ResponseWebSearchCallSearchingEvent
    | ResponseWebSearchCallCompletedEvent
    | ResponseCodeInterpreterCallInProgressEvent
    | ResponseCodeInterpreterCallInterpretingEvent
    | ResponseCodeInterpreterCallCompletedEvent
    | ResponseImageGenCallInProgressEvent
    | ResponseImageGenCallGeneratingEvent
    | ResponseImageGenCallCompletedEvent
    | ResponseImageGenCallPartialImageEvent
    | ResponseMcpCallInProgressEvent
    | ResponseMcpCallCompletedEvent
    | ResponseMcpCallFailedEvent
    | ResponseMcpListToolsInProgressEvent
    | ResponseMcpListToolsCompletedEvent
    | ResponseMcpListToolsFailedEvent
    | ResponseAudioDeltaEvent
    | ResponseAudioDoneEvent
    | ResponseAudioTranscriptDeltaEvent
    | ResponseAudioTranscriptDoneEvent
)
"""Every event type of a Responses stream that streamkit knows; others come as `UnknownEvent`."""

ResponseEvent: TypeAlias = ResponseStreamEvent | UnknownEvent
"""What a `ResponseStream` yields."""


# Accumulating

_ARGUMENT_DELTAS = (
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseCustomToolCallInputDeltaEvent,
    ResponseMcpCallArgumentsDeltaEvent,
    ResponseCodeInterpreterCallCodeDeltaEvent,
)


def _item_id(item: OutputItem | None) -> str | None:
    if isinstance(item, UnknownObject):
        value = item.data.get("id")
        return value if isinstance(value, str) else None
    return getattr(item, "id", None)


class _Text:
    """A text built from deltas, until a `*.done` event gives it whole."""

    __slots__ = ("pieces", "whole")

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.whole: str | None = None

    @property
    def value(self) -> str:
        return self.whole if self.whole is not None else "".join(self.pieces)


class _PartParts:
    """One content part of a message: its kind, its text, annotations and logprobs."""

    __slots__ = ("annotations", "done", "kind", "logprobs", "text")

    def __init__(self) -> None:
        self.kind = "output_text"
        self.text = _Text()
        self.annotations: list[dict[str, Any]] = []
        self.logprobs: list[ResponseLogprob] | None = None
        self.done: ContentPart | None = None  # from content_part.done: the whole part

    def started(self, part: ContentPart | None) -> None:
        if isinstance(part, OutputText | Refusal):
            self.kind = "refusal" if isinstance(part, Refusal) else "output_text"
        elif part is not None:
            self.done = part  # a kind this accumulator does not build: kept as it came

    def build(self) -> ContentPart:
        if self.done is not None:
            return self.done
        if self.kind == "refusal":
            return Refusal(refusal=self.text.value)
        logprobs = None if self.logprobs is None else list(self.logprobs)
        return OutputText(text=self.text.value, annotations=list(self.annotations), logprobs=logprobs)


class _ItemParts:
    """One output item: the item as announced, and what the deltas add to it until it is done."""

    __slots__ = ("arguments", "done", "index", "item", "parts", "reasoning", "summary")

    def __init__(self, index: int, item: OutputItem) -> None:
        self.index = index
        self.item = item
        self.done = False  # output_item.done gave the whole item
        self.parts: dict[int, _PartParts] = {}
        self.arguments = _Text()  # function or MCP arguments, custom tool input, interpreter code
        self.summary: dict[int, _Text] = {}
        self.reasoning: dict[int, _Text] = {}

    def part(self, index: int | None) -> _PartParts:
        key = index or 0
        part = self.parts.get(key)
        if part is None:
            part = self.parts[key] = _PartParts()
        return part

    def build(self) -> OutputItem:
        item = self.item
        if self.done:
            return item
        if isinstance(item, OutputMessage):
            if not self.parts:
                return replace(item, content=list(item.content))
            return replace(item, content=[self.parts[i].build() for i in sorted(self.parts)])
        if isinstance(item, FunctionCallItem | McpCallItem):
            return replace(item, arguments=self.arguments.value) if self._has_arguments() else item
        if isinstance(item, CustomToolCallItem):
            return replace(item, input=self.arguments.value) if self._has_arguments() else item
        if isinstance(item, CodeInterpreterCallItem):
            return replace(item, code=self.arguments.value) if self._has_arguments() else item
        if isinstance(item, ReasoningItem):
            summary = [SummaryText(text=self.summary[i].value) for i in sorted(self.summary)]
            content = [ReasoningText(text=self.reasoning[i].value) for i in sorted(self.reasoning)]
            return replace(
                item,
                summary=summary or list(item.summary),
                content=content or (None if item.content is None else list(item.content)),
            )
        return item

    def _has_arguments(self) -> bool:
        return bool(self.arguments.pieces) or self.arguments.whole is not None


class ResponseAccumulator:
    """Merges a Responses stream's events into a `Response`.

        acc = ResponseAccumulator()
        for event in events:
            acc.add(event)
        response = acc.final()

    `snapshot` is the response so far, at any point.
    """

    __slots__ = ("_by_id", "_by_index", "_error", "_events", "_last", "_response", "_terminal", "_top")

    def __init__(self) -> None:
        self._response: Response | None = None  # the latest lifecycle event's
        self._terminal: Response | None = None  # the terminal event's
        self._error: ResponseError | None = None  # from an `error` event
        self._by_index: dict[int, _ItemParts] = {}
        self._by_id: dict[str, _ItemParts] = {}
        self._top = -1  # the highest output_index, kept so that no event scans the items (-1: none yet)
        self._events = 0
        # The part the last text delta went to, by its (output_index, item_id, content_index): the deltas of
        # one part come in a run, and need not be looked up one by one. Forgotten when items change.
        self._last: tuple[tuple[int | None, str | None, int | None], _PartParts] | None = None

    @property
    def events(self) -> int:
        """How many events were added."""
        return self._events

    @property
    def output_tokens(self) -> int | None:
        """`usage.output_tokens` of the latest response that carried usage."""
        usage = self._usage()
        return None if usage is None else usage.output_tokens

    @property
    def input_tokens(self) -> int | None:
        """`usage.input_tokens` of the latest response that carried usage."""
        usage = self._usage()
        return None if usage is None else usage.input_tokens

    def _usage(self) -> ResponseUsage | None:
        for response in (self._terminal, self._response):
            if response is not None and response.usage is not None:
                return response.usage
        return None

    def _item(
        self, output_index: int | None, item_id: str | None, make: type[Model] = OutputMessage
    ) -> _ItemParts:
        """The item an event is about, made (of type `make`) if it was never announced."""
        parts = None
        if output_index is not None:
            parts = self._by_index.get(output_index)
        elif item_id is not None:
            parts = self._by_id.get(item_id)
        elif self._by_index:
            parts = self._by_index[self._top]  # neither index nor id: the latest item
        if parts is None:
            self._last = None
            if output_index is None:
                output_index = self._top + 1
            item: Any = make(id=item_id)
            if not self._by_index or output_index > self._top:
                self._top = output_index
            parts = self._by_index[output_index] = _ItemParts(output_index, item)
            if item_id is not None:
                self._by_id[item_id] = parts
        return parts

    def _announce(self, output_index: int | None, item: OutputItem | None) -> _ItemParts:
        self._last = None
        item_id = _item_id(item)
        parts = self._item(output_index, item_id, type(item) if isinstance(item, Model) else OutputMessage)
        if item is not None:
            parts.item = item
        if item_id is not None:
            self._by_id[item_id] = parts
        return parts

    def add(self, event: ResponseStreamEvent | UnknownEvent) -> int:
        """Merge one event and return what it means to the stream, `RESPONSES.flags(event)`: the stream's one
        call per event. A text delta, the common event, is told here at no cost."""
        self._events += 1
        if type(event) is ResponseTextDeltaEvent:
            key = (event.output_index, event.item_id, event.content_index)
            last = self._last
            if last is not None and last[0] == key:
                part = last[1]
            else:
                part = self._item(event.output_index, event.item_id).part(event.content_index)
                self._last = (key, part)
            delta = event.delta
            part.text.pieces.append(delta)
            if event.logprobs:
                if part.logprobs is None:
                    part.logprobs = list(event.logprobs)  # the part's own list, extended in place
                else:
                    part.logprobs += event.logprobs
                return TOKEN | COUNTED if delta else 0
            return TOKEN if delta else 0
        self._merge(event)
        return RESPONSES.flags(event)

    def _merge(self, event: ResponseStreamEvent | UnknownEvent) -> None:
        """Merge any event but a text delta."""
        if isinstance(event, _ARGUMENT_DELTAS):
            self._item(event.output_index, event.item_id, _DELTA_ITEMS[type(event)]).arguments.pieces.append(
                event.delta
            )
        elif isinstance(event, _LifecycleEvent):
            self._response = event.response
            if isinstance(event, ResponseCompletedEvent | ResponseIncompleteEvent | ResponseFailedEvent):
                self._terminal = event.response
        elif isinstance(event, ResponseOutputItemAddedEvent):
            self._announce(event.output_index, event.item)
        elif isinstance(event, ResponseOutputItemDoneEvent):
            parts = self._announce(event.output_index, event.item)
            parts.done = event.item is not None
        elif isinstance(event, ResponseContentPartAddedEvent):
            self._item(event.output_index, event.item_id).part(event.content_index).started(event.part)
        elif isinstance(event, ResponseContentPartDoneEvent):
            part = self._item(event.output_index, event.item_id).part(event.content_index)
            part.started(event.part)
            if event.part is not None:
                part.done = event.part
        elif isinstance(event, ResponseTextDoneEvent):
            part = self._item(event.output_index, event.item_id).part(event.content_index)
            part.text.whole = event.text
            if event.logprobs is not None:
                part.logprobs = list(event.logprobs)
        elif isinstance(event, ResponseOutputTextAnnotationAddedEvent):
            if event.annotation is not None:
                part = self._item(event.output_index, event.item_id).part(event.content_index)
                part.annotations.append(event.annotation)
        elif isinstance(event, ResponseRefusalDeltaEvent):
            part = self._item(event.output_index, event.item_id).part(event.content_index)
            part.kind = "refusal"
            part.text.pieces.append(event.delta)
        elif isinstance(event, ResponseRefusalDoneEvent):
            part = self._item(event.output_index, event.item_id).part(event.content_index)
            part.kind = "refusal"
            part.text.whole = event.refusal
        elif isinstance(event, ResponseFunctionCallArgumentsDoneEvent):
            parts = self._item(event.output_index, event.item_id, FunctionCallItem)
            parts.arguments.whole = event.arguments
            if event.name and isinstance(parts.item, FunctionCallItem) and not parts.item.name:
                parts.item = replace(parts.item, name=event.name)
        elif isinstance(event, ResponseCustomToolCallInputDoneEvent):
            self._item(event.output_index, event.item_id, CustomToolCallItem).arguments.whole = event.input
        elif isinstance(event, ResponseMcpCallArgumentsDoneEvent):
            self._item(event.output_index, event.item_id, McpCallItem).arguments.whole = event.arguments
        elif isinstance(event, ResponseCodeInterpreterCallCodeDoneEvent):
            self._item(
                event.output_index, event.item_id, CodeInterpreterCallItem
            ).arguments.whole = event.code
        elif isinstance(event, ResponseReasoningSummaryTextDeltaEvent):
            self._summary(event).pieces.append(event.delta)
        elif isinstance(event, ResponseReasoningSummaryTextDoneEvent):
            self._summary(event).whole = event.text
        elif isinstance(
            event, ResponseReasoningSummaryPartAddedEvent | ResponseReasoningSummaryPartDoneEvent
        ):
            text = self._summary(event)
            if isinstance(event.part, SummaryText) and (
                event.part.text or isinstance(event, ResponseReasoningSummaryPartDoneEvent)
            ):
                text.whole = event.part.text
        elif isinstance(event, ResponseReasoningTextDeltaEvent):
            self._reasoning(event).pieces.append(event.delta)
        elif isinstance(event, ResponseReasoningTextDoneEvent):
            self._reasoning(event).whole = event.text
        elif isinstance(event, ResponseErrorEvent):
            message, _, code, _ = event.fields()
            self._error = ResponseError(code=code, message=message)

    def _summary(self, event: _SummaryEvent) -> _Text:
        summary = self._item(event.output_index, event.item_id, ReasoningItem).summary
        key = event.summary_index or 0
        text = summary.get(key)
        if text is None:
            text = summary[key] = _Text()
        return text

    def _reasoning(self, event: _PartEvent) -> _Text:
        reasoning = self._item(event.output_index, event.item_id, ReasoningItem).reasoning
        key = event.content_index or 0
        text = reasoning.get(key)
        if text is None:
            text = reasoning[key] = _Text()
        return text

    @property
    def snapshot(self) -> Response:
        """The response accumulated so far (a new object each time)."""
        terminal = self._terminal
        base = terminal or self._response or Response()
        if terminal is not None and terminal.output:
            output = list(terminal.output)
        else:
            output = [self._by_index[i].build() for i in sorted(self._by_index)]
        error = base.error
        if error is None and self._error is not None:
            error = self._error
        return detached(replace(base, output=output, error=error))  # items and usage are the events' own

    def final(self) -> Response:
        """The response once every event has been added (the same as `snapshot`, by name of intent)."""
        return self.snapshot

    def is_finished(self) -> bool:
        """Whether a terminal event (`response.completed`, `.incomplete` or `.failed`) arrived."""
        return self._terminal is not None


_DELTA_ITEMS: dict[type[Any], type[Model]] = {
    ResponseFunctionCallArgumentsDeltaEvent: FunctionCallItem,
    ResponseCustomToolCallInputDeltaEvent: CustomToolCallItem,
    ResponseMcpCallArgumentsDeltaEvent: McpCallItem,
    ResponseCodeInterpreterCallCodeDeltaEvent: CodeInterpreterCallItem,
}


# The rules

_TOKEN_DELTAS: frozenset[type[Any]] = frozenset(
    {
        ResponseTextDeltaEvent,
        ResponseRefusalDeltaEvent,
        ResponseReasoningTextDeltaEvent,
        ResponseReasoningSummaryTextDeltaEvent,
        *_ARGUMENT_DELTAS,
    }
)
_NAMED_CALLS = (FunctionCallItem, CustomToolCallItem, McpCallItem)
_FLAGS: dict[type[Any], int] = {
    ResponseCompletedEvent: END,
    ResponseIncompleteEvent: END,
    ResponseFailedEvent: ERROR,
    ResponseErrorEvent: ERROR,
}


class ResponsesApi(TypedEventApi[ResponseEvent, Response]):
    """The rules of the Responses API (`streamkit.protocols.RESPONSES`)."""

    name = "responses"
    path = "/responses"
    prompt_field = "input"
    final_type = Response
    events = ResponseStreamEvent

    def flags(self, item: ResponseEvent) -> int:
        kind = type(item)
        if kind in _TOKEN_DELTAS:
            if not item.delta:  # type: ignore[union-attr]
                return 0
            return TOKEN | COUNTED if kind is ResponseTextDeltaEvent and item.logprobs else TOKEN  # type: ignore[union-attr]
        if kind is ResponseOutputItemAddedEvent:
            # A call's announcement carries its name, the model's first tokens of it: as chat counts the chunk
            # that names a tool call, and Messages a tool_use block's start, so that TTFT means the same.
            call = item.item  # type: ignore[union-attr]
            return TOKEN if isinstance(call, _NAMED_CALLS) and call.name else 0
        return _FLAGS.get(kind, 0)

    def text(self, item: ResponseEvent) -> str | None:
        return item.delta if type(item) is ResponseTextDeltaEvent else None

    def token_count(self, item: ResponseEvent) -> int | None:
        if type(item) is ResponseTextDeltaEvent and item.logprobs:
            return len(item.logprobs)
        return None

    def error(self, item: ResponseEvent) -> StreamAPIError:
        try:
            body: dict[str, Any] | None = item.to_dict()
        except RecursionError:  # JSON nested deeper than `to_dict` walks: the stream's `raw` still has it
            body = None
        raw = "" if body is None else msgspec.json.encode(body).decode()
        if isinstance(item, ResponseFailedEvent):
            error = item.response.error or ResponseError()
            return StreamAPIError(
                error.message or "the response failed",
                raw=raw,
                body=body,
                code=error.code,
                type="response.failed",
            )
        assert isinstance(item, ResponseErrorEvent)
        message, type, code, param = item.fields()
        return StreamAPIError(
            message or "the server sent an error event",
            raw=raw,
            body=body,
            code=code,
            type=type or "error",
            param=param,
        )

    def accumulator(self) -> ResponseAccumulator:
        return ResponseAccumulator()

    def turn(
        self,
        model: str,
        history: list[dict[str, Any]],
        system: str | None = None,
        max_tokens: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        params = dict(params or {})
        for name in ("n", "stop", "seed"):
            if params.get(name) is not None:
                raise ValueError(f"the Responses API has no {name!r}")
        return drop_none(
            {
                "model": model,
                "input": history,
                "instructions": system,
                "max_output_tokens": max_tokens,
                **params,
            }
        )

    def reply(self, final: Response) -> list[dict[str, Any]]:
        # Output items go back as input items: the answer's messages, and its calls with their ids.
        return [item.to_dict() for item in final.output if isinstance(item, Model)]

    def outcome(self, final: Response) -> Outcome:
        usage = final.usage
        details = final.incomplete_details
        ended = final.status in ("completed", "incomplete", "failed", "cancelled")
        reason = (
            (details.reason if details is not None and details.reason else final.status) if ended else None
        )
        return Outcome(
            final.id,
            final.model,
            [reason],
            None if usage is None else usage.input_tokens,
            None if usage is None else usage.output_tokens,
        )


RESPONSES = ResponsesApi()
