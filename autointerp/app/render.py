"""HTML for activating examples. Corpus text is untrusted: every token is escaped here, the only
place examples become HTML."""

from __future__ import annotations

import html

from autointerp.store import Example


def _visible(token: str) -> str:
    return token.replace("\n", "↵")


def example_html(example: Example, scale: float | None = None) -> str:
    """Tokens as spans, background alpha ∝ activation / scale, the value in the hover title."""
    scale = scale or example.max_act or 1.0
    spans = []
    for tok, act in zip(example.tokens, example.acts):
        text = html.escape(_visible(tok))
        if act > 0:
            alpha = min(1.0, act / scale)
            spans.append(f'<span class="ai-tok ai-act" style="background: rgba(255,120,0,{alpha:.2f})" '
                         f'title="{act:.3f}">{text}</span>')
        else:
            spans.append(f'<span class="ai-tok">{text}</span>')
    return ('<div class="ai-example" style="font-family: monospace; white-space: pre-wrap; line-height: 1.7; '
            'margin-bottom: 0.4em">' + "".join(spans) + "</div>")


def examples_html(examples: list[Example], scale: float | None = None) -> str:
    """Several examples on one colour scale (default: the strongest of them)."""
    scale = scale or max((e.max_act for e in examples), default=1.0) or 1.0
    return "".join(example_html(e, scale) for e in examples)
