"""An LLM judge of steered text, as AxBench rates it: a 0-2 concept score and a 0-2 fluency score.

Any OpenAI-compatible chat endpoint serves (a local llama.cpp or vLLM server, or a hosted API), named by an
EndpointConfig and reached through the explainers' client; nothing is called unless one is configured. The
prompts follow AxBench's (Wu et al. 2025, "AxBench: Steering LLMs? Even Simple Baselines Outperform Sparse
Autoencoders"): each asks for one rating in the form "Rating: [[n]]", and the two are asked separately so that
one judgement does not colour the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .explain.base import ExplainerError
from .explain.endpoint import EndpointChatModel, EndpointConfig

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


class JudgeError(RuntimeError):
    """The endpoint could not be reached or gave no rating; the message says which."""


@dataclass(frozen=True)
class Verdict:
    """One text's ratings; concept is None when there was no concept to judge against."""

    concept: float | None
    fluency: float


def rating(answer: str) -> float:
    """The last "Rating: [[n]]" of an answer (0 to 2)."""
    found = RATING.findall(answer)
    if not found:
        raise JudgeError(f"the judge gave no 'Rating: [[n]]': {answer[:120]!r}")
    return float(found[-1])


ANSWER_TOKENS = 256
"""The longest answer asked for: AxBench's rater writes a short reason, then "Rating: [[n]]". Left to the
endpoint, SmolLM2 on llama.cpp's server rambled past the 60 s timeout on every row of a sweep."""


def ask(config: EndpointConfig, prompt: str) -> str:
    """One chat completion at temperature 0, at most ANSWER_TOKENS long; the answer's text. Sent through the
    explainers' client (sae_core.explain.endpoint), so the judge gets its retries, backoff and timeouts."""
    try:
        return EndpointChatModel(config).generate([[{"role": "user", "content": prompt}]],
                                                  max_tokens=ANSWER_TOKENS)[0]
    except ExplainerError as err:
        raise JudgeError(f"the judge at {config.url} did not answer: {err}") from err


def judge(config: EndpointConfig, text: str, concept: str | None) -> Verdict:
    """Rate a text's fluency, and how present the concept is when one is given."""
    concept_score = rating(ask(config, CONCEPT_PROMPT.format(concept=concept, text=text))) if concept else None
    return Verdict(concept_score, rating(ask(config, FLUENCY_PROMPT.format(text=text))))
