"""The Responses API from a script: stream an answer, read the whole response, force a function call, ask
at once."""

import json

import streamkit
from streamkit.protocols.responses import FunctionCallItem

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

with streamkit.Client() as client:  # OPENAI_API_KEY, OPENAI_BASE_URL
    stream = client.responses.create(
        model="gpt-4o-mini",
        input="What is a server-sent event?",
        instructions="Answer in one sentence.",
        max_output_tokens=64,
        stream=True,
    )
    with stream:  # closes the response even if the loop is left early
        for text in stream.text_deltas():  # the output text deltas, as str
            print(text, end="", flush=True)
    print()
    response = stream.get_final_response()  # response.output_text is the text printed above
    usage = response.usage  # from the terminal event, response.completed
    tokens = f"{usage.input_tokens} in, {usage.output_tokens} out" if usage else "no usage"
    ttft = "-" if stream.metrics.ttft is None else f"{stream.metrics.ttft:.3f}s"  # None if no token came
    print(f"status={response.status} tokens: {tokens} ttft={ttft}")

    # A forced function call: the output is a function_call item, its arguments a JSON string.
    stream = client.responses.create(
        model="gpt-4o-mini",
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        stream=True,
    )
    response = stream.get_final_response()  # reads the stream to its end
    for item in response.output:
        if isinstance(item, FunctionCallItem):
            print(f"function_call {item.name}({json.loads(item.arguments)}) call_id={item.call_id}")

    # Without streaming, the same call returns the Response at once.
    whole = client.responses.create(model="gpt-4o-mini", input="Say hello.", max_output_tokens=16)
    print(f"stream=False: status={whole.status} {whole.output_text!r}")
