"""A scripted upstream answer with everything a door must carry (SPEC §5 invariant 10):
thinking with reasoning details, text citing a source (twice), a tool call in
fragments, a generated image, usage with its cost. For the fake upstream.
"""

from __future__ import annotations

import typing as t

from bench import fake_upstream as fu

THOUGHTS = ["Let me ", "think ", "about it."]
ANSWER = ["The weather ", "in Paris ", "is ", "42 ", "°C 😀."]
SOURCE = {"url": "https://src.example/a", "title": "Source A", "content": "x"}
TOOL_NAME = "weather"
TOOL_ID = "call_w1"
TOOL_ARGUMENTS = ['{"ci', 'ty": "Pa', 'ris"}']
TOOL_INPUT = {"city": "Paris"}
#: a one-pixel PNG, as image models send theirs: a data URL
IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
    "DwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 20,
    "total_tokens": 30,
    "cost": 0.00042,
    "completion_tokens_details": {"reasoning_tokens": 7},
}
MODEL = "provider/rich-model"


def steps(interval: float = 0.0) -> list[t.Any]:
    """The steps of the whole answer; ``interval`` seconds between its chunks."""
    gen = fu.new_generation_id()

    def step(delta: dict[str, t.Any], **extra: t.Any) -> fu.Chunk:
        value = fu.make_chunk("", gen_id=gen, model=MODEL)
        value["choices"][0]["delta"] = {"role": "assistant", "content": "", **delta}
        value.update(extra)
        return fu.Chunk(value)

    cite = {"type": "url_citation", "url_citation": SOURCE}
    chunks: list[t.Any] = [
        *(
            step(
                {
                    "reasoning": r,
                    "reasoning_details": [{"type": "reasoning.text", "index": 0, "text": r}],
                }
            )
            for r in THOUGHTS
        ),
        *(step({"content": a}) for a in ANSWER[:-1]),
        step({"content": ANSWER[-1], "annotations": [cite]}),
        step({"annotations": [cite]}),
        step(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": TOOL_ID,
                        "type": "function",
                        "function": {"name": TOOL_NAME, "arguments": TOOL_ARGUMENTS[0]},
                    }
                ]
            }
        ),
        *(
            step({"tool_calls": [{"index": 0, "function": {"arguments": a}}]})
            for a in TOOL_ARGUMENTS[1:]
        ),
        step({"images": [{"type": "image_url", "image_url": {"url": IMAGE}}]}),
        fu.Chunk(fu.make_chunk("", finish_reason="tool_calls", gen_id=gen, model=MODEL)),
        fu.Chunk(fu.usage_chunk(USAGE, gen_id=gen, model=MODEL)),
    ]
    out: list[t.Any] = []
    for chunk in chunks:
        out.append(chunk)
        if interval:
            out.append(fu.Pause(interval))
    return [*out, fu.Done()]
