"""Ask a question and print the answer as it arrives, from a script."""

import streamkit

with streamkit.Client() as client:  # OPENAI_API_KEY, OPENAI_BASE_URL
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What is a server-sent event?"}],
        stream=True,
    )
    with stream:  # closes the response even if the loop is left early
        for text in stream.text_deltas():
            print(text, end="", flush=True)
    print()
    final = stream.get_final_completion()
    ttft = "-" if stream.metrics.ttft is None else f"{stream.metrics.ttft:.3f}s"  # None if no token came
    print(f"finish_reason={final.choices[0].finish_reason} ttft={ttft}")
