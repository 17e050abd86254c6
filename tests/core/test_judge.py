"""The steering judge against a stand-in OpenAI-compatible endpoint: prompts, ratings and failures."""

import math

import pytest

from sae_core.explain import EndpointConfig
from sae_core.explain.endpoint import TOP_LOGPROBS, Reply
from sae_core.judge import ANSWER_TOKENS, FOLLOW_UP, FOLLOW_UP_TOKENS, JudgeError, Verdict, digit, judge, rating, weighted_digit
from tests.judge_server import judge_server
from tests.spawn import free_port


def test_the_judge_asks_for_concept_and_fluency_separately():
    with judge_server() as (url, received):
        verdict = judge(EndpointConfig(url, "judge-model", api_key="k"), "cats everywhere", "cats")
    assert verdict == Verdict(2.0, 1.0)
    assert [r["path"] for r in received] == ["/v1/chat/completions"] * 2
    assert all(r["model"] == "judge-model" and r["temperature"] == 0 and r["auth"] == "Bearer k" for r in received)
    assert all(r["max_tokens"] == ANSWER_TOKENS for r in received)  # a small judge can ramble to its context's end
    assert "[Concept Start]\ncats\n[Concept End]" in received[0]["messages"][0]["content"]
    assert "cats everywhere" in received[1]["messages"][0]["content"]


def test_without_a_concept_only_fluency_is_asked():
    with judge_server() as (url, received):
        assert judge(EndpointConfig(url, "m"), "text", None) == Verdict(None, 1.0)
    assert len(received) == 1


@pytest.mark.parametrize("answer,score", [("Rating: [[0]]", 0.0), ("first [[2]] then Rating: [[1.5]]", 1.5),
                                          ("Rating: [[ 2 ]]", 2.0)])
def test_ratings_are_read_from_the_last_marker(answer, score):
    assert rating(answer) == score


@pytest.mark.parametrize("answer", ["It reads well.", "Rating: [[3]]", "Rating: 2"])
def test_an_answer_without_a_valid_marker_has_no_rating(answer):
    assert rating(answer) is None


@pytest.mark.parametrize("answer,score", [("2", 2.0), (" 1.", 1.0), ("0\n", 0.0), ("I'd say 1", 1.0)])
def test_a_follow_up_is_read_for_its_first_lone_digit(answer, score):
    assert digit(answer) == score


@pytest.mark.parametrize("answer", ["5", "10", "1.5x", "none"])
def test_a_follow_up_without_a_lone_digit_from_0_to_2_is_a_judge_error(answer):
    with pytest.raises(JudgeError, match="nor a digit"):
        digit(answer)


def test_a_judge_that_reasons_without_the_marker_is_asked_again_in_the_same_conversation():
    answer = 'The concept of "cats" is indeed present throughout.'
    with judge_server(concept=answer, fluency="Rating: [[1]]", follow_up="2") as (url, received):
        assert judge(EndpointConfig(url, "m"), "cats everywhere", "cats") == Verdict(2.0, 1.0)
    assert len(received) == 3
    again = received[1]
    assert [m["role"] for m in again["messages"]] == ["user", "assistant", "user"]
    assert again["messages"][1]["content"] == answer and again["messages"][2]["content"] == FOLLOW_UP
    assert again["max_tokens"] == FOLLOW_UP_TOKENS


def test_a_follow_ups_digits_are_weighted_by_their_probabilities_at_the_first_token():
    # SmolLM2's own first-token alternatives on llama.cpp's server: "The" first, the digits far behind
    top = {"The": -0.72, "R": -1.97, "0": -4.15, "1": -4.58, " 1": -6.0, "10": -5.0}
    p0, p1 = math.exp(-4.15), math.exp(-4.58) + math.exp(-6.0)
    assert weighted_digit(Reply("The", top)) == pytest.approx(p1 / (p0 + p1))
    assert weighted_digit(Reply("2", {"The": -0.1})) == 2.0  # no digit among them: the text's own digit
    with pytest.raises(JudgeError, match="nor a digit"):
        weighted_digit(Reply("The", {"The": -0.1}))


def test_the_follow_up_asks_for_the_first_tokens_alternatives_and_weighs_them():
    answer = 'The concept of "cats" is indeed present throughout.'
    with judge_server(concept=answer, follow_up="The", follow_up_top={"The": -0.5, "2": -2.0, "0": -2.0}) \
            as (url, received):
        assert judge(EndpointConfig(url, "m"), "cats everywhere", "cats") == Verdict(1.0, 1.0)
    assert received[1]["logprobs"] is True and received[1]["top_logprobs"] == TOP_LOGPROBS
    assert "logprobs" not in received[0] and "logprobs" not in received[2]  # only the follow-up asks for them


def test_an_answer_without_a_rating_or_an_endpoint_that_is_down_is_a_judge_error():
    with judge_server(fluency="I like it", follow_up="I like it") as (url, _), pytest.raises(JudgeError, match="no 'Rating"):
        judge(EndpointConfig(url, "m"), "text", None)
    with pytest.raises(JudgeError, match="did not answer"):
        judge(EndpointConfig(f"http://127.0.0.1:{free_port()}/v1", "m", timeout_s=2), "text", None)


def test_the_judge_retries_a_busy_endpoint_through_the_shared_client():
    with judge_server(busy=2) as (url, received):
        assert judge(EndpointConfig(url, "m", backoff_s=0.01), "text", None) == Verdict(None, 1.0)
    assert len(received) == 3


def test_a_refusal_names_the_endpoints_reason_and_an_explainer_key_is_not_sent(monkeypatch):
    monkeypatch.setenv("SAESCOPE_EXPLAINER_API_KEY", "explainer-secret")
    with judge_server() as (url, received):
        judge(EndpointConfig(url, "m", api_key_env=""), "text", None)
    assert received[0]["auth"] is None
    with judge_server(busy=9) as (url, _), pytest.raises(JudgeError, match=r"did not answer: .*\(503\): loading model"):
        judge(EndpointConfig(url, "m", retries=1, backoff_s=0.01), "text", None)
