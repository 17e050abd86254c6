"""An LLM judge of steered text, as AxBench rates it: a 0-2 concept score and a 0-2 fluency score.

Any OpenAI-compatible chat endpoint serves (a local llama.cpp or vLLM server, or a hosted API), named by an
EndpointConfig and reached through the explainers' client; nothing is called unless one is configured. The
prompts follow AxBench's (Wu et al. 2025, "AxBench: Steering LLMs? Even Simple Baselines Outperform Sparse
Autoencoders"): each asks for one rating in the form "Rating: [[n]]", and the two are asked separately so that
one judgement does not colour the other. A judge that reasons but never writes the marker (the built-in SmolLM2
did so on every row) is asked once more, in the same conversation, for the digit alone. Its rating is then read
as G-Eval reads one (Liu et al. 2023, "G-Eval: NLG Evaluation using GPT-4 with Better Human Alignment"): the
digits' probabilities at the answer's first token weight them, when the endpoint reports log-probabilities;
SmolLM2 still began that answer with "The concept of", putting 1-3 % of its mass on the digits.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .explain.base import ExplainerError
from .explain.endpoint import TOP_LOGPROBS, EndpointChatModel, EndpointConfig, Reply
from .explain.prompts import Messages

CONCEPT_PROMPT = """Please act as an impartial judge and evaluate whether the specified concept is presented \
in the text fragment provided below. Focus solely on whether the concept is clearly incorporated, without \
regard for grammar or logical coherence.

Begin your evaluation by providing a short explanation of whether the concept is clearly incorporated. Point \
out references to the concept in the fragment, noting any minimal or awkward incorporations. After providing \
your explanation, rate the concept's relevance on a scale from 0 to 2, where 0 indicates the concept is not \
present at all, 1 indicates the concept is somewhat present but minimally or awkwardly incorporated, and 2 \
indicates the concept is more fully and effectively incorporated, with stronger and more natural integration. \
Provide your rating using this exact format: "Rating: [[score]]".

[Concept Start]
{concept}
[Concept End]

[Text Fragment Start]
{text}
[Text Fragment End]"""

FLUENCY_PROMPT = """Please act as an impartial judge and evaluate the fluency of the text fragment provided \
below. Focus solely on fluency, disregarding its completeness, relevance, coherence with any broader context, \
or informativeness.

Begin your evaluation by briefly describing the fluency of the sentence, noting any unnatural phrasing, \
awkward transitions, grammatical errors, or repetitive structures that may hinder readability. After providing \
your explanation, rate the sentence's fluency on a scale from 0 to 2, where 0 indicates the sentence is not \
fluent and highly unnatural (e.g., incomprehensible or repetitive), 1 indicates it is somewhat fluent but \
contains noticeable errors or awkward phrasing, and 2 indicates the sentence is fluent and almost perfect. \
Provide your rating using this exact format: "Rating: [[score]]".

[Text Fragment Start]
{text}
[Text Fragment End]"""

RATING = re.compile(r"Rating:\s*\[\[\s*([0-2](?:\.\d+)?)\s*\]\]")
DIGIT = re.compile(r"(?<!\d)(?<!\d\.)([0-2])(?!\.?\d)")
FOLLOW_UP = "Give your rating now, as one digit only: 0, 1 or 2."
FOLLOW_UP_TOKENS = 4


class JudgeError(RuntimeError):
    """The endpoint could not be reached or gave no rating; the message says which."""


@dataclass(frozen=True)
class Verdict:
    """One text's ratings; concept is None when there was no concept to judge against."""

    concept: float | None
    fluency: float


def rating(answer: str) -> float | None:
    """The last "Rating: [[n]]" of an answer (0 to 2), or None when it has none."""
    found = RATING.findall(answer)
    return float(found[-1]) if found else None


def digit(answer: str) -> float:
    """The first lone digit 0-2 of a follow-up answer."""
    found = DIGIT.search(answer)
    if found is None:
        raise JudgeError(f"the judge gave no 'Rating: [[n]]', nor a digit when asked again: {answer[:120]!r}")
    return float(found.group(1))


def weighted_digit(reply: Reply) -> float:
    """A follow-up's rating: the probability-weighted mean of the digits 0-2 among its first token's likeliest
    alternatives (G-Eval), or, when the endpoint reported none of them, the first lone digit of its text."""
    mass: dict[int, float] = {}
    for token, logprob in reply.first_top.items():
        if token.strip() in ("0", "1", "2"):
            mass[int(token.strip())] = mass.get(int(token.strip()), 0.0) + math.exp(logprob)
    if not mass:
        return digit(reply.text)
    return sum(d * p for d, p in mass.items()) / sum(mass.values())


ANSWER_TOKENS = 256
"""The longest answer asked for: AxBench's rater writes a short reason, then "Rating: [[n]]". Left to the
endpoint, SmolLM2 on llama.cpp's server rambled past the 60 s timeout on every row of a sweep."""


def ask(config: EndpointConfig, messages: Messages, max_tokens: int, top_logprobs: int = 0) -> Reply:
    """One chat completion at temperature 0. Sent through the explainers' client (sae_core.explain.endpoint), so
    the judge gets its retries, backoff and timeouts."""
    try:
        return EndpointChatModel(config).replies([messages], max_tokens, top_logprobs)[0]
    except ExplainerError as err:
        raise JudgeError(f"the judge at {config.url} did not answer: {err}") from err


def rate(config: EndpointConfig, prompt: str) -> float:
    """The rating a prompt gets: from the answer's marker, else from a follow-up asking for the digit alone."""
    messages: Messages = [{"role": "user", "content": prompt}]
    answer = ask(config, messages, ANSWER_TOKENS).text
    found = rating(answer)
    if found is not None:
        return found
    follow_up = [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": FOLLOW_UP}]
    return weighted_digit(ask(config, follow_up, FOLLOW_UP_TOKENS, TOP_LOGPROBS))


def judge(config: EndpointConfig, text: str, concept: str | None) -> Verdict:
    """Rate a text's fluency, and how present the concept is when one is given."""
    concept_score = rate(config, CONCEPT_PROMPT.format(concept=concept, text=text)) if concept else None
    return Verdict(concept_score, rate(config, FLUENCY_PROMPT.format(text=text)))
