"""A SyncConversation on the Responses API and on Anthropic Messages: a question, a tool call, its result."""

import json
from typing import Any

import streamkit
from streamkit.protocols.responses import FunctionCallItem

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER_FUNCTION = {"type": "function", "name": "get_weather", "parameters": CITY}  # Responses' shape
WEATHER_TOOL = {"name": "get_weather", "input_schema": CITY}  # Anthropic's shape


def get_weather(city: str) -> str:
    """The tool itself: here, a fixed forecast."""
    return json.dumps({"city": city, "sky": "clear", "celsius": 21})


def show(stream: streamkit.SyncStream[Any, Any]) -> None:
    """Print an answer's text as it arrives."""
    with stream:
        for text in stream.text_deltas():
            print(text, end="", flush=True)
    print()


def on_responses(client: streamkit.Client) -> None:
    conversation = streamkit.SyncConversation(
        client,
        model="gpt-4o-mini",
        api="responses",
        system="Answer in one sentence.",  # sent as `instructions` with every request
        max_tokens=256,  # sent as `max_output_tokens`
        tools=[WEATHER_FUNCTION],
    )
    forced = {"type": "function", "name": "get_weather"}
    stream = conversation.send("Weather in Paris?", tool_choice=forced)
    response: streamkit.Response = stream.get_final()  # a function call, no text
    for item in response.output:
        if isinstance(item, FunctionCallItem):  # send the result back as a function_call_output item
            print(f"{item.name}({item.arguments})")
            result = get_weather(**json.loads(item.arguments))
            output = {"type": "function_call_output", "call_id": item.call_id, "output": result}
            show(conversation.send(output, tool_choice="none"))
    print("responses:", [item.get("type") or item["role"] for item in conversation.messages])


def on_messages(client: streamkit.Client) -> None:
    conversation = streamkit.SyncConversation(
        client,
        model="claude-haiku-4-5",
        api="messages",
        system="Answer in one sentence.",  # sent as `system` with every request
        max_tokens=256,  # required by Messages: without it, a SyncConversation asks 1024
        tools=[WEATHER_TOOL],
    )
    forced = {"type": "tool", "name": "get_weather"}
    stream = conversation.send("Weather in Paris?", tool_choice=forced)
    message: streamkit.Message = stream.get_final()  # a tool_use block, no text
    for block in message.content:
        if isinstance(block, streamkit.ToolUseBlock):  # send the result back in a user message
            print(f"{block.name}({json.dumps(block.input)})")
            result = {"type": "tool_result", "tool_use_id": block.id, "content": get_weather(**block.input)}
            reply = {"role": "user", "content": [result]}
            show(conversation.send(reply, tool_choice={"type": "none"}))
    print("messages:", [m["role"] for m in conversation.messages])


with streamkit.Client() as client:  # OPENAI_* for Responses, ANTHROPIC_* for Messages
    on_responses(client)
    on_messages(client)
