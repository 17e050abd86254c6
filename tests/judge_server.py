"""A stand-in OpenAI-compatible chat endpoint on a free local port, for testing the steering judge offline."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def judge_server(concept: str = "Rating: [[2]]", fluency: str = "Rating: [[1]]", busy: int = 0,
                 follow_up: str = "", follow_up_top: dict[str, float] | None = None) -> Iterator[tuple[str, list[dict]]]:
    """(base URL, the request bodies received); answers the concept prompt and the fluency prompt as given,
    a conversation that already holds an answer (the judge asking again for the digit) with `follow_up` (and
    `follow_up_top` as its first token's top log-probabilities, when given), after answering
    the first `busy` requests 503 (an endpoint still loading its model)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(body | {"path": self.path, "auth": self.headers.get("Authorization")})
            prompt = body["messages"][0]["content"]
            asked_again = any(m["role"] == "assistant" for m in body["messages"])
            answer = follow_up if asked_again else concept if "[Concept Start]" in prompt else fluency
            status = 503 if len(received) <= busy else 200
            choice: dict = {"message": {"role": "assistant", "content": answer}}
            if asked_again and follow_up_top is not None:
                top = [{"token": t, "logprob": lp} for t, lp in follow_up_top.items()]
                choice["logprobs"] = {"content": [{"token": top[0]["token"], "logprob": top[0]["logprob"],
                                                   "top_logprobs": top}]}
            data = json.dumps({"choices": [choice]} if status == 200
                              else {"error": {"message": "loading model"}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", received
    finally:
        server.shutdown()
        thread.join(5)
