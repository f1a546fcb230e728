"""`n`, `stop`, `max_tokens` and `finish_reason`; `suffix` on the legacy completions endpoint; from a
script."""

import streamkit

with streamkit.Client() as client:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Name a colour."}],
        n=2,  # two answers, interleaved in one stream, told apart by choice.index
        stop=["\n"],  # cut before the first new line; finish_reason "stop"
        max_tokens=8,  # cut after 8 tokens; finish_reason "length"
        stream=True,
    )
    final = stream.get_final_completion()  # reads the stream to its end
    for choice in final.choices:
        print(f"[{choice.index}] {choice.finish_reason:6} {choice.message.content!r}")

    legacy = client.completions.create(
        model="gpt-4o-mini",  # a model that serves /v1/completions, such as gpt-3.5-turbo-instruct
        prompt="def add(a, b):\n",
        suffix="\n    return result\n",  # the text to fill in before
        max_tokens=16,
        stream=True,
    )
    with legacy:
        for text in legacy.text_deltas():
            print(text, end="", flush=True)
    print()
    completion = legacy.get_final_completion()
    print(f"finish_reason={completion.choices[0].finish_reason}")
