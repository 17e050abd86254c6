"""The chat-completions client against real HTTP servers on this machine: a scripted one for retries, refusals and
keys, and llama-cpp-python's server on the built-in SmolLM2 GGUF for the protocol itself."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from sae_core.explain import EndpointChatModel, EndpointConfig, ExplainerError
from sae_core.explain.endpoint import yes_of
from sae_core.judge import judge as steering_judge


class Scripted(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions from the server's `script`: a list of (status, body) consumed in turn,
    the last repeated; records each request's body and Authorization header."""

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        self.server.seen.append((json.loads(self.rfile.read(length)), self.headers.get("Authorization")))
        status, body = self.server.script[min(len(self.server.seen) - 1, len(self.server.script) - 1)]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def answer(text: str) -> tuple[int, dict]:
    return 200, {"choices": [{"message": {"role": "assistant", "content": text}}]}


@pytest.fixture()
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.script, server.seen = [answer("Yes")], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def client(server, **kw) -> EndpointChatModel:
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    return EndpointChatModel(EndpointConfig(url, "test-model", backoff_s=0.01, **kw))


def test_requests_carry_the_model_messages_and_greedy_settings(scripted):
    assert client(scripted).generate([[{"role": "user", "content": "hi"}]], max_tokens=5) == ["Yes"]
    body, auth = scripted.seen[0]
    assert body == {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                    "temperature": 0}
    assert auth is None


def test_a_thread_that_already_runs_an_event_loop_can_ask_too(scripted):
    """As in a notebook, or beside Playwright's sync API: asyncio.run alone refuses to start there."""

    async def from_a_running_loop():
        return client(scripted).generate([[{"role": "user", "content": "hi"}]], max_tokens=5)

    answers: list = []
    # A fresh thread of its own: pytest's main thread may already hold the browser tests' loop.
    asker = threading.Thread(target=lambda: answers.append(asyncio.run(from_a_running_loop())))
    asker.start()
    asker.join(30)
    assert answers == [["Yes"]]


def test_a_busy_or_failing_endpoint_is_retried_with_backoff(scripted):
    scripted.script = [(503, {"error": {"message": "loading"}}), (429, {"error": "slow down"}), answer("No")]
    assert client(scripted).judge("digits", ["1 2 3"], marked=False) == [0.0]
    assert len(scripted.seen) == 3


def test_a_refusal_stops_with_the_endpoints_own_message(scripted):
    scripted.script = [(401, {"error": {"message": "Invalid API key"}})]
    with pytest.raises(ExplainerError, match=r"refused the request \(401\): Invalid API key"):
        client(scripted).generate([[{"role": "user", "content": "hi"}]], 5)
    assert len(scripted.seen) == 1  # not retried


def test_an_endpoint_that_keeps_failing_gives_up_after_the_retries(scripted):
    scripted.script = [(500, {"error": {"message": "boom"}})]
    with pytest.raises(ExplainerError, match=r"\(500\): boom"):
        client(scripted, retries=2).generate([[{"role": "user", "content": "hi"}]], 5)
    assert len(scripted.seen) == 3


def test_the_key_comes_from_the_named_environment_variable(scripted, monkeypatch):
    monkeypatch.setenv("MY_TEST_KEY", "sekrit")
    client(scripted, api_key_env="MY_TEST_KEY").generate([[{"role": "user", "content": "hi"}]], 5)
    assert scripted.seen[0][1] == "Bearer sekrit"


def test_a_malformed_answer_is_a_clear_error(scripted):
    scripted.script = [(200, {"nothing": True})]
    with pytest.raises(ExplainerError, match=r"without choices\[0\]\.message\.content"):
        client(scripted).generate([[{"role": "user", "content": "hi"}]], 5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_endpoint_that_is_down_is_named_in_the_error():
    model = EndpointChatModel(EndpointConfig(f"http://127.0.0.1:{free_port()}/v1", "m", retries=1, backoff_s=0.01))
    with pytest.raises(ExplainerError, match=r"unreachable after 2 tries: ConnectError"):
        model.generate([[{"role": "user", "content": "hi"}]], 5)


def test_concurrency_is_bounded(scripted):
    active, peak = [0], [0]
    lock = threading.Lock()
    original = Scripted.do_POST

    def slow(self):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        original(self)
        with lock:
            active[0] -= 1

    Scripted.do_POST = slow
    try:
        client(scripted, concurrency=3).generate([[{"role": "user", "content": str(i)}] for i in range(12)], 5)
    finally:
        Scripted.do_POST = original
    assert len(scripted.seen) == 12 and 1 < peak[0] <= 3


@pytest.mark.parametrize(("text", "value"), [("Yes.", 1.0), (" no, it does not", 0.0), ("Maybe", 0.5),
                                             ("The answer is yes", 1.0)])
def test_yes_or_no_is_read_from_the_answer(text, value):
    assert yes_of(text) == value


# llama-cpp-python's server: the real protocol. Building its wheel compiles llama.cpp (minutes), so `make llama-server`
# builds it once into the wheel cache (WHEELS_DIR) and installs it from there; without the package the test skips
# and says why, except under SAESCOPE_REQUIRE_LLAMA_SERVER=1 (CI), where it fails.


@pytest.fixture(scope="module")
def llama_server():
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        reason = "llama-cpp-python[server] is not installed (make llama-server builds its wheel once into the wheel cache)"
        if os.environ.get("SAESCOPE_REQUIRE_LLAMA_SERVER") == "1":
            pytest.fail(f"{reason} and SAESCOPE_REQUIRE_LLAMA_SERVER=1")
        pytest.skip(reason)
    from sae_core.lm import embedded_gguf_path

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path("smollm2")),
                                "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                                "--model_alias", "smollm2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail("llama-cpp-python's server did not answer within 120 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_real_llama_cpp_server_explains_and_judges(llama_server):
    model = EndpointChatModel(EndpointConfig(llama_server, "smollm2", concurrency=4, timeout_s=120))
    answers = model.generate([[{"role": "user", "content": "Say hello."}]] * 2, max_tokens=8)
    assert len(answers) == 2 and all(a.strip() for a in answers)
    judged = model.judge("digits", ["The year 1999 had 365 days.", "A cat sat on the mat."], marked=False)
    assert len(judged) == 2 and set(judged) <= {0.0, 0.5, 1.0}
    # the steering judge: SmolLM2 never writes "Rating: [[n]]", so each rating comes from the follow-up's
    # first-token probabilities, which llama.cpp's server reports
    verdict = steering_judge(EndpointConfig(llama_server, "smollm2", timeout_s=300), "I saved the file to disk.", "files")
    assert verdict.concept is not None and 0 <= verdict.concept <= 2 and 0 <= verdict.fluency <= 2
