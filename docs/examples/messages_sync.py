"""Anthropic Messages from a script: stream an answer, read the whole message, force a tool call, ask at
once."""

import streamkit

MODEL = "claude-haiku-4-5"
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

with streamkit.Client() as client:  # client.messages: ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL
    stream = client.messages.create(
        model=MODEL,
        max_tokens=256,  # required by the Messages API
        system="Answer in one sentence.",
        messages=[{"role": "user", "content": "What is a server-sent event?"}],
        stream=True,
    )
    with stream:  # closes the response even if the loop is left early
        for text in stream.text_deltas():  # the text_delta of every text block, as str
            print(text, end="", flush=True)
    print()
    message = stream.get_final_message()  # message.text is the text printed above
    usage = message.usage  # message_start's, updated by message_delta
    tokens = f"{usage.input_tokens} in, {usage.output_tokens} out" if usage else "no usage"
    ttft = "-" if stream.metrics.ttft is None else f"{stream.metrics.ttft:.3f}s"  # None if no token came
    print(f"stop_reason={message.stop_reason} tokens: {tokens} ttft={ttft}")

    # A forced tool call: a tool_use block, whose input streams as JSON fragments and is parsed once.
    stream = client.messages.create(
        model=MODEL,
        max_tokens=256,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        stream=True,
    )
    message = stream.get_final_message()  # reads the stream to its end
    for block in message.content:
        if isinstance(block, streamkit.ToolUseBlock):
            print(f"tool_use {block.name}({block.input}) id={block.id} stop_reason={message.stop_reason}")

    # Without streaming, the same call returns the Message at once.
    whole = client.messages.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "Say hello."}]
    )
    print(f"stream=False: stop_reason={whole.stop_reason} {whole.text!r}")
