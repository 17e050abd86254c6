"""Issue 18's worked example: find a feature by contrast, sweep it, run the controls, and hear the judge.

Everything goes through the web app's own routes (`POST /api/contrast`, `POST /api/steer`) on a copy of the
store, so the demo store is left as it was. The feature is the top of a contrast of A (texts about files)
against B (texts about animals) unless --feature names one; its label, written by a bench user when it has
none, is the concept the judge rates. With --judge-url each row gets AxBench's concept and fluency ratings.

    python bench/steer_example.py --db runs/demo/saescope.db --sae 2 [--judge-url http://127.0.0.1:8089/v1]
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app import crud
from app.db import make_engine, session_factory
from app.main import create_app
from app.security import hash_password
from app.settings import Settings

A_TEXTS = [
    "Open the file and read every line into a list.", "The config file was missing from the folder.",
    "Save the file before you close the editor.", "He deleted the log file by mistake.",
    "The script writes its output to a file on disk.", "Rename the file to data.csv and upload it.",
    "The file is too large to attach to the email.", "Copy the file into the backup directory.",
]
B_TEXTS = [
    "The dog chased the cat across the garden.", "A horse grazed quietly in the field.",
    "The birds sang in the tall oak tree.", "Our cat sleeps on the windowsill all day.",
    "The fox crept past the sleeping hens.", "A cow stood by the fence chewing grass.",
    "The rabbit hid under the hedge.", "Two ducks swam slowly across the pond.",
]
USER, PASSWORD = "bench", "bench-password-1"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def signed_in(settings: Settings) -> tuple[TestClient, str]:
    """A client of the app on the store, signed in as an admin made for the bench; (client, CSRF token)."""
    with session_factory(make_engine(settings.database_url))() as session:
        if crud.find_user(session, name=USER) is None:
            crud.create_user(session, name=USER, password_hash=hash_password(PASSWORD), role="admin")
    client = TestClient(create_app(settings))
    token = CSRF.search(client.get("/login").text).group(1)  # type: ignore[union-attr]
    response = client.post("/login", data={"name": USER, "password": PASSWORD, "csrf_token": token},
                           follow_redirects=False)
    if response.status_code != 303:
        raise SystemExit(f"could not sign in: {response.status_code} {response.text[:200]}")
    return client, token


def post(client: TestClient, csrf: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(url, json=body, headers={"X-CSRF-Token": csrf})
    if response.status_code != 200:
        raise SystemExit(f"{url}: {response.status_code} {response.text[:400]}")
    return response.json()


def concept_of(settings: Settings, sae_id: int, feature: int, fallback: str) -> str:
    """The feature's current label, writing `fallback` as the bench user's label when it has none."""
    with session_factory(make_engine(settings.database_url))() as session:
        labels = crud.label_texts(session, sae_id=sae_id, indices=[feature])
        if feature not in labels:
            author = crud.find_user(session, name=USER)
            crud.add_label(session, sae_id=sae_id, feature_index=feature, text=fallback,
                           author_id=author.id if author else None)
            return fallback
        return labels[feature]


def show(rows: list[dict[str, Any]]) -> None:
    print("| row | strength | feature effect (mean / fired) | perplexity | KL | log p(target) | judge concept | "
          "judge fluency | text |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        effect = " ".join(f"{e['mean']:.2f}/{e['fired']:.2f}" for e in r["effects"]) or "-"
        kind = r["control"] or r["label"]
        print(f"| {kind}{' (strongest fluent)' if r['fluent_strongest'] else ''} | {r['strength']} | {effect} | "
              f"{_n(r['perplexity'])} | {_n(r['kl'], 3)} | {_n(r['target_logprob'])} | {_n(r['judge_concept'])} | "
              f"{_n(r['judge_fluency'])} | {r['text'][:90]!r} |")


def _n(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="a SQLite store (copied; the copy is used)")
    parser.add_argument("--sae", type=int, required=True, help="the SAE's store id")
    parser.add_argument("--feature", type=int, help="steer this feature instead of the contrast's top")
    parser.add_argument("--label", default="files (the word file)", help="concept written if it has no label")
    parser.add_argument("--prompt", default="Write a short story about a dog.")
    parser.add_argument("--target", default=" file")
    parser.add_argument("--strengths", default="8,16,32,64")
    parser.add_argument("--control-strength", type=float, default=16.0)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--judge-url", default="")
    parser.add_argument("--judge-model", default="smollm2")
    parser.add_argument("--judge-timeout", type=float, default=300.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store.db"
        shutil.copy(args.db, store)
        settings = Settings(database_url=f"sqlite:///{store}", secret_key="bench", judge_url=args.judge_url,
                            judge_model=args.judge_model, judge_timeout_s=args.judge_timeout)
        client, csrf = signed_in(settings)
        with client:
            feature = args.feature
            if feature is None:
                found = post(client, csrf, "/api/contrast", {"sae_id": args.sae, "a": A_TEXTS, "b": B_TEXTS, "top": 3})
                for f in found["features"]:
                    print(f"contrast: feature {f['feature']} effect {f['effect']:.2f}, fires in "
                          f"{f['fired_a']:.2f} of A and {f['fired_b']:.2f} of B; label {f['label']!r}")
                feature = found["features"][0]["feature"]
            concept = concept_of(settings, args.sae, feature, args.label)
            print(f"\nfeature {feature}, concept {concept!r}; prompt {args.prompt!r}, target {args.target!r}\n")
            base = {"sae_id": args.sae, "prompt": args.prompt, "target": args.target, "max_new_tokens": args.tokens,
                    "interventions": [{"feature": feature, "mode": "add", "value": args.control_strength}]}
            sweep = post(client, csrf, "/api/steer", base | {"strengths": [float(s) for s in args.strengths.split(",")]})
            controls = post(client, csrf, "/api/steer", base | {"controls": True})
    show(sweep["rows"] + [r for r in controls["rows"] if r["control"]])
    for name, run in (("sweep", sweep), ("controls", controls)):
        if run["judge_error"]:
            print(f"\njudge error ({name}): {run['judge_error']}")


if __name__ == "__main__":
    main()
