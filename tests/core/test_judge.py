"""The steering judge against a stand-in OpenAI-compatible endpoint: prompts, ratings and failures."""

import pytest

from sae_core.judge import JudgeConfig, JudgeError, Verdict, judge, rating
from tests.judge_server import judge_server
from tests.spawn import free_port


def test_the_judge_asks_for_concept_and_fluency_separately():
    with judge_server() as (url, received):
        verdict = judge(JudgeConfig(url, "judge-model", api_key="k"), "cats everywhere", "cats")
    assert verdict == Verdict(2.0, 1.0)
    assert [r["path"] for r in received] == ["/v1/chat/completions"] * 2
    assert all(r["model"] == "judge-model" and r["temperature"] == 0 and r["auth"] == "Bearer k" for r in received)
    assert "[Concept Start]\ncats\n[Concept End]" in received[0]["messages"][0]["content"]
    assert "cats everywhere" in received[1]["messages"][0]["content"]


def test_without_a_concept_only_fluency_is_asked():
    with judge_server() as (url, received):
        assert judge(JudgeConfig(url, "m"), "text", None) == Verdict(None, 1.0)
    assert len(received) == 1


@pytest.mark.parametrize("answer,score", [("Rating: [[0]]", 0.0), ("first [[2]] then Rating: [[1.5]]", 1.5),
                                          ("Rating: [[ 2 ]]", 2.0)])
def test_ratings_are_read_from_the_last_marker(answer, score):
    assert rating(answer) == score


def test_an_answer_without_a_rating_or_an_endpoint_that_is_down_is_a_judge_error():
    with judge_server(fluency="I like it") as (url, _), pytest.raises(JudgeError, match="no 'Rating"):
        judge(JudgeConfig(url, "m"), "text", None)
    with pytest.raises(JudgeError, match="did not answer"):
        judge(JudgeConfig(f"http://127.0.0.1:{free_port()}/v1", "m", timeout_s=2), "text", None)
