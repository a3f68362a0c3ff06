"""Prompt texts for the explainer and the scorers, and the highlighting of activating tokens."""

from __future__ import annotations

from autointerp.store import Example

EXPLAINER_SYSTEM = """You are a meticulous AI researcher studying one feature (latent) of a language model.
You see text examples in which the feature activates. Tokens where it activates are wrapped in << >>.
Look at the highlighted tokens and the words around them, and find what they have in common.
Give one short explanation (a phrase, under 15 words) of what makes the feature activate.
Do not list the examples and do not mention the << >> markers.
End your answer with a final line of the form:
[EXPLANATION]: <your explanation>"""

EXPLAINER_SYSTEM_COT = EXPLAINER_SYSTEM.replace(
    "Give one short explanation",
    "First think step by step: list the highlighted tokens, then what they share, then the context. "
    "Then give one short explanation")

FEW_SHOT = [
    ("Example 1:  and he was over the <<moon>> to find\n"
     "Example 2:  we'll be laughing <<till the cows come home>>! Pro\n"
     "Example 3:  thought Scotland was boring, but really there's more <<than meets the eye>>! I'd",
     "[EXPLANATION]: Common idioms in text conveying positive sentiment."),
    ("Example 1:  the <<Danube>> flows through ten countries\n"
     "Example 2:  fishing on <<Lake Geneva>> in summer\n"
     "Example 3:  ships crossed the <<Baltic>> Sea",
     "[EXPLANATION]: Names of rivers, lakes and seas."),
]

DETECTION_SYSTEM = """You are an intelligent and meticulous linguistics researcher.
You will be given an explanation of a feature of a language model and several numbered text
examples. For each example, decide whether the feature activates anywhere in it, based on the
explanation. Answer one line per example, in the form "Example 1: Yes" or "Example 1: No"."""

FUZZING_SYSTEM = """You are an intelligent and meticulous linguistics researcher.
You will be given an explanation of a feature of a language model and several numbered text
examples in which some tokens are wrapped in << >>. For each example, decide whether the marked
tokens are correctly marked: exactly the kind of tokens the explanation describes. Answer one line
per example, in the form "Example 1: Yes" or "Example 1: No"."""

ANSWERS = (" Yes", " No")  # read right after the assistant prefix "Example i:"


def highlight(example: Example, threshold: float = 0.3, max_act: float | None = None,
              positions: set[int] | None = None) -> str:
    """The example's text with activating tokens wrapped in << >>, consecutive ones merged.
    A token is activating when its activation exceeds threshold x max_act (default: the example's
    own maximum); `positions` overrides that (fuzzing's mis-placed highlights)."""
    top = max_act if max_act is not None else example.max_act
    marked = positions if positions is not None else {
        i for i, a in enumerate(example.acts) if a > 0 and a >= threshold * top}
    out, open_ = [], False
    for i, tok in enumerate(example.tokens):
        if i in marked and not open_:
            out.append("<<")
            open_ = True
        elif i not in marked and open_:
            out.append(">>")
            open_ = False
        out.append(tok)
    if open_:
        out.append(">>")
    return "".join(out)


def plain(example: Example) -> str:
    return "".join(example.tokens)


def explainer_messages(examples: list[Example], threshold: float = 0.3, show_activations: bool = False,
                       cot: bool = False) -> list[dict]:
    lines = []
    for i, e in enumerate(examples, 1):
        lines.append(f"Example {i}: {highlight(e, threshold)}")
        if show_activations:
            acts = [f"({t.strip() or repr(t)}, {round(a / (e.max_act or 1) * 10)})"
                    for t, a in zip(e.tokens, e.acts) if a > 0 and a >= threshold * e.max_act]
            lines.append("Activations: " + ", ".join(acts))
    messages = [{"role": "system", "content": EXPLAINER_SYSTEM_COT if cot else EXPLAINER_SYSTEM}]
    for shot, answer in FEW_SHOT:
        messages += [{"role": "user", "content": shot}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": "\n".join(lines)})
    return messages


def scorer_messages(system: str, explanation: str, texts: list[str]) -> list[dict]:
    shown = "\n".join(f"Example {i}: {t}" for i, t in enumerate(texts, 1))
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Explanation: {explanation}\n\n{shown}\n\n"
                                        f"Answer for each of the {len(texts)} examples."}]
