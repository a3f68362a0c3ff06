"""Prompt texts for the explainer and the scorers, and the highlighting of activating tokens."""

from __future__ import annotations

import re
from collections import Counter

from autointerp.store import Example

EXPLAINER_SYSTEM = """You are a meticulous AI researcher studying one feature (latent) of a language model.
You see text examples in which the feature activates; the tokens where it activates are wrapped in << >>,
and the most common highlighted tokens are listed after the examples.
Find what the highlighted tokens have in common (their meaning, their form, or the context they occur in).
Answer with one specific explanation, under 12 words, on a final line of the form:
[EXPLANATION]: <your explanation>"""

# Contrastive: the same task, plus similar texts where the feature is silent.
CONTRAST_NOTE = """
After the examples you also see counter-examples: similar texts in which the feature does NOT
activate anywhere. Your explanation must fit the highlighted tokens and not the counter-examples:
say what distinguishes them."""

EXPLAINER_SYSTEM_COT = EXPLAINER_SYSTEM.replace(
    "Answer with one specific explanation",
    "First think step by step: what the highlighted tokens are, what they share, what surrounds them. "
    "Then answer with one specific explanation")

# Few-shot answers about features unlike the demo's: Qwen2.5-1.5B copied an earlier "rivers, lakes
# and seas" shot into unrelated explanations (measured), which made true and random explanations
# score alike. The highlighted-token list gives small explainers the evidence in one line.
FEW_SHOT = [
    ("Example 1:  the war ended in<< 1945>> after six years\n"
     "Example 2:  founded in<< 1998>> by two engineers\n"
     "Example 3:  born on 12 March<< 1867>> in Vienna\n\n"
     'Highlighted tokens: "1945", "1998", "1867"',
     '[EXPLANATION]: Four-digit years, usually after "in" or a date.'),
    ("Example 1:  she<< could not>> believe it\n"
     "Example 2:  they<< did not>> agree to the terms\n"
     "Example 3:  it<< was not>> until 1990 that\n\n"
     'Highlighted tokens: "could not", "did not", "was not"',
     '[EXPLANATION]: Negated verb phrases with "not".'),
]

DETECTION_SYSTEM = """You are an intelligent and meticulous linguistics researcher.
You will be given several numbered text examples and then an explanation of a feature of a
language model. For each example, decide whether the feature activates anywhere in it, based on the
explanation. Answer one line per example, in the form "Example 1: Yes" or "Example 1: No"."""

FUZZING_SYSTEM = """You are an intelligent and meticulous linguistics researcher.
You will be given several numbered text examples in which some tokens are wrapped in << >>, and
then an explanation of a feature of a language model. For each example, decide whether the marked
tokens are correctly marked: exactly the kind of tokens the explanation describes. Answer one line
per example, in the form "Example 1: Yes" or "Example 1: No"."""

# Intruder scoring: the answer's digit is read right after the assistant prefix "The intruder is ("
# (scorers/intruder.py); a digit right after "(" tokenizes alone in every tokenizer we use, where
# " 3" is one token in some and two in others.
INTRUDER_SYSTEM = """You are an intelligent and meticulous linguistics researcher.
You will be given several numbered text examples in which some tokens are wrapped in << >>. All but
one of the examples share a common feature: what the marked tokens are, or the context they occur
in. One example, the intruder, does not belong with the others. Answer with the number of the
intruder in parentheses, in the form "The intruder is (2)"."""

ANSWERS = (" Yes", " No")  # read right after the assistant prefix "Example i:"

# Worked examples for the simulation scorer in its own `token<TAB>activation` format, 0-9, as Bills
# et al. show theirs. Features unlike the demo's Wikipedia topics, so that a small scorer has
# nothing to copy into its predictions (the explainer's few-shots once were).
SIMULATION_FEW_SHOT = [
    ("closing brackets in code",
     [("x", 0), (" =", 0), (" max", 0), ("(", 0), ("len", 0), ("(", 0), ("items", 0), ("),", 9), (" 3", 0),
      (")", 8), ("\n", 0), ("print", 0), ("(", 0), ("x", 0), (")", 9)]),
    ("words written in capital letters for emphasis",
     [("She", 0), (" said", 0), (" it", 0), (" was", 0), (" VERY", 9), (" important", 1), (",", 0),
      (" and", 0), (" NOT", 8), (" optional", 0), (".", 0)]),
]

# Text a scorer's tokenizer would read as one of its control tokens (ChatML `<|im_end|>`, Llama 3
# `<|eot_id|>`, Gemma `<end_of_turn>`, `</s>`): corpus text is data, never the end of a turn.
_CONTROL_LIKE = re.compile(r"<(\|[^<>|\s]{1,64}\||/?s|bos|eos|pad|unk|mask|start_of_turn|end_of_turn)>")


def defuse(text: str) -> str:
    """Example text safe to paste into any prompt: control-token-like strings get ‹ › instead of
    < >, which no tokenizer maps to a special token (the text stays readable). Idempotent."""
    return _CONTROL_LIKE.sub(lambda m: f"‹{m.group(1)}›", text)


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
    return defuse("".join(out))


def plain(example: Example) -> str:
    return defuse("".join(example.tokens))


def highlighted_spans(example: Example, threshold: float = 0.3) -> list[str]:
    """The text of each run of consecutive highlighted tokens, stripped."""
    spans, current = [], []
    for tok, act in zip(example.tokens, example.acts):
        if act > 0 and act >= threshold * example.max_act:
            current.append(tok)
        elif current:
            spans.append("".join(current).strip())
            current = []
    if current:
        spans.append("".join(current).strip())
    return [s for s in spans if s]


def highlighted_summary(examples: list[Example], threshold: float = 0.3, top: int = 12) -> str:
    """The most common highlighted spans over the examples, with counts: `"much" (12), "Much" (8)`."""
    counts = Counter(s for e in examples for s in highlighted_spans(e, threshold))
    return ", ".join(f'"{s}" ({n})' if n > 1 else f'"{s}"' for s, n in counts.most_common(top))


def explainer_messages(examples: list[Example], threshold: float = 0.3, show_activations: bool = False,
                       cot: bool = False, contrast: list[Example] | None = None) -> list[dict]:
    """The explainer's prompt; with `contrast` (silent windows) the contrastive variant."""
    lines = []
    for i, e in enumerate(examples, 1):
        lines.append(f"Example {i}: {highlight(e, threshold)}")
        if show_activations:
            acts = [f"({t.strip() or repr(t)}, {round(a / (e.max_act or 1) * 10)})"
                    for t, a in zip(e.tokens, e.acts) if a > 0 and a >= threshold * e.max_act]
            lines.append("Activations: " + ", ".join(acts))
    lines.append("\nHighlighted tokens: " + highlighted_summary(examples, threshold))
    if contrast:
        lines.append("\nCounter-examples (the feature is silent in all of them):")
        lines += [f"Counter-example {i}: {plain(e)}" for i, e in enumerate(contrast, 1)]
    system = EXPLAINER_SYSTEM_COT if cot else EXPLAINER_SYSTEM
    messages = [{"role": "system", "content": system + (CONTRAST_NOTE if contrast else "")}]
    for shot, answer in FEW_SHOT:
        messages += [{"role": "user", "content": shot}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": defuse("\n".join(lines))})  # summary and activations too
    return messages


OUTPUT_EXPLAINER_SYSTEM = """You are a meticulous AI researcher studying one feature (latent) of a language model.
The feature was amplified while the model continued some texts. For each text you see how the model
continued it normally (Clean) and with the feature amplified (Steered).
Find what the steered continuations have in common that the clean ones lack: a topic, a kind of word,
a language, a style. Describe the feature's effect on the output in under 12 words, on a final line of
the form:
[EXPLANATION]: <your explanation>"""

# Effects unlike the demo's Wikipedia features (as for FEW_SHOT), so a small explainer has no
# topic to copy; the answers name the effect ("makes the model ..."), not the prompts' topics.
OUTPUT_FEW_SHOT = [
    ("Text 1: The meeting was moved to Tuesday because\n"
     "  Clean: the manager was out of the office\n"
     "  Steered: the cat knocked the kitten off the\n"
     "Text 2: To install the package, run\n"
     "  Clean: the following command in a terminal\n"
     "  Steered: the kitten's whiskers and purring\n",
     "[EXPLANATION]: Makes the model talk about cats and kittens."),
    ("Text 1: The results of the survey show that\n"
     "  Clean: most people prefer the new design\n"
     "  Steered: !!! WOW!!! it is AMAZING!!!\n"
     "Text 2: He opened the door and\n"
     "  Clean: walked into the kitchen slowly\n"
     "  Steered: SCREAMED!!! WHAT!!!\n",
     "[EXPLANATION]: Makes the model shout: capital letters and exclamation marks."),
]


def output_explainer_messages(samples: list[tuple[str, str, str]]) -> list[dict]:
    """The output explainer's prompt from (prompt, clean continuation, steered continuation)
    triples; the prompt's last 120 characters are enough context and keep the prompt short."""
    lines = []
    for i, (prompt, clean, steered) in enumerate(samples, 1):
        lines += [f"Text {i}: {prompt[-120:].strip()}", f"  Clean: {clean}", f"  Steered: {steered}"]
    messages = [{"role": "system", "content": OUTPUT_EXPLAINER_SYSTEM}]
    for shot, answer in OUTPUT_FEW_SHOT:
        messages += [{"role": "user", "content": shot}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": defuse("\n".join(lines))})
    return messages


# The explanation that describes nothing: calibration's reference and validity's floor.
NEUTRAL_EXPLANATION = "Ordinary words in ordinary text"


def scorer_messages(system: str, explanation: str, texts: list[str]) -> list[dict]:
    """Examples first, explanation last: prompts that differ only in the explanation (a latent's own,
    a random one, the neutral one) then share the examples as a prefix that is computed once."""
    shown = "\n".join(f"Example {i}: {defuse(t)}" for i, t in enumerate(texts, 1))
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"{shown}\n\nExplanation: {defuse(explanation)}\n\n"
                                        f"Answer for each of the {len(texts)} examples."}]


def intruder_messages(system: str, texts: list[str]) -> list[dict]:
    """The intruder prompt: numbered examples "(1) ...", then the question."""
    shown = "\n".join(f"({i}) {defuse(t)}" for i, t in enumerate(texts, 1))
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"{shown}\n\nWhich of the {len(texts)} examples is the intruder?"}]


def simulation_line(token: str, value: str) -> str:
    """One `token<TAB>value` line of the simulation layout (newlines in a token written as \\n)."""
    return defuse(token).replace("\n", "\\n") + "\t" + value + "\n"


def simulation_messages(system: str, explanation: str) -> list[dict]:
    """The simulation prompt up to the scored text: the worked examples, then the explanation."""
    def ask(text: str) -> dict:
        return {"role": "user",
                "content": f"Neuron explanation: {defuse(text)}\nPredict the activation of each token."}

    messages = [{"role": "system", "content": system}]
    for explanation_, shot in SIMULATION_FEW_SHOT:
        answer = "<start>\n" + "".join(simulation_line(t, str(a)) for t, a in shot) + "<end>"
        messages += [ask(explanation_), {"role": "assistant", "content": answer}]
    return messages + [ask(explanation)]
