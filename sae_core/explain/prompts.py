"""The prompts of the explainer and of the scorers, versioned: PROMPT_VERSION is stored with every explanation,
so a score is always read beside the exact wording that produced it. Change a prompt, change the version."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

PROMPT_VERSION = "explain-v1"

Messages = list[dict[str, str]]
"""One chat conversation in the chat-completions layout: [{"role": ..., "content": ...}, ...]."""

OPEN, CLOSE = "<<", ">>"
"""How activating tokens are marked in the text a model reads (delphi's convention)."""


@dataclass(frozen=True)
class Window:
    """A window of tokens and one feature's activation on each: what a prompt shows of an example."""

    tokens: list[str]
    acts: list[float]

    @property
    def marked(self) -> list[int]:
        """Positions where the feature fires."""
        return [i for i, a in enumerate(self.acts) if a > 0]

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def trimmed(self, before: int, after: int) -> Window:
        """The window cut to `before` tokens before its peak and `after` after (the middle when it does not
        fire): prompts show the part the feature responds to, and a small model reads less."""
        fires = any(a > 0 for a in self.acts)
        peak = max(range(len(self.acts)), key=self.acts.__getitem__) if fires else len(self.acts) // 2
        lo, hi = max(0, peak - before), peak + after + 1
        return Window(self.tokens[lo:hi], self.acts[lo:hi])


def marked_text(tokens: list[str], positions: list[int]) -> str:
    """The tokens joined, with each run of marked positions wrapped in << >>."""
    marks = set(positions)
    out: list[str] = []
    for i, token in enumerate(tokens):
        if i in marks and i - 1 not in marks:
            out.append(OPEN)
        out.append(token)
        if i in marks and i + 1 not in marks:
            out.append(CLOSE)
    return "".join(out)


EXPLAINER_SYSTEM = (
    "You are an interpretability researcher. You are shown text excerpts where one feature of a language model "
    "fires; the tokens where it fires are marked like <<this>>. Say in a few words what the feature detects.")


def explainer_messages(windows: list[Window], promoted: list[str], n_common: int = 8) -> Messages:
    """The explainer's conversation: marked examples, the tokens marked most often, the promoted tokens."""
    lines = [f"Example {n}: {marked_text(w.tokens, w.marked)}" for n, w in enumerate(windows, start=1)]
    common = Counter(w.tokens[i].strip() for w in windows for i in w.marked)
    tokens = ", ".join(repr(t) for t, _ in common.most_common(n_common) if t)
    lines.append(f"Tokens marked most often: {tokens or 'none'}")
    if promoted:
        lines.append("Tokens the feature makes more likely next: " + ", ".join(repr(p.strip()) for p in promoted))
    lines.append("Describe what the feature detects in at most ten words. Answer with the description only.")
    return [{"role": "system", "content": EXPLAINER_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def describe_prompt(text: str, marked: bool) -> str:
    """The text after which a local model's likelihood of an explanation is read (LocalChatModel.judge)."""
    if marked:
        return f"Text: {text}\nThe words marked with << >> in the text are:"
    return f"Text: {text}\nThe text contains:"


JUDGE_SYSTEM = "You check text against a description. Answer with Yes or No only."


def detection_messages(explanation: str, text: str) -> Messages:
    """Does this (unmarked) text contain what the explanation describes?"""
    user = (f"Description: {explanation}\nText: {text}\n"
            "Does the text contain something that matches the description? Answer Yes or No.")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def fuzzing_messages(explanation: str, text: str) -> Messages:
    """Do the marked tokens of this text fit the explanation?"""
    user = (f"Description: {explanation}\nText, with some tokens marked like <<this>>: {text}\n"
            "Do the marked tokens match the description? Answer Yes or No.")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def clean_explanation(answer: str, max_chars: int = 200) -> str:
    """The first non-empty line of an explainer's answer, without quotes or a 'Description:' prefix."""
    line = next((ln.strip() for ln in answer.strip().splitlines() if ln.strip()), "").strip(" \"'`*")
    for prefix in ("description:", "the feature detects", "this feature detects", "feature:"):
        if line.lower().startswith(prefix):
            line = line[len(prefix):].strip()
    return line.strip(" \"'`*.")[:max_chars].strip()
