"""Screenshots of the pages the README and the issues show, taken in Chromium from a running server.

The server may be any checkout's (`saescope serve --db ...`), so the same script takes before and after
pictures of a change. It logs in as a labeller (the pages then show their editors), opens a feature page at
1400 px, the feature list at 390 px and the steering page with one run of the feature at 1400 px.
Run: .venv/bin/python bench/screenshots.py --url http://127.0.0.1:8000 --sae 1 --feature 125 \
         --user lea --password ... --out /work/shots/NAME-  [--only feature]
The README's picture is the feature page as a visitor sees it (not logged in), its top 1280 x 1500 px:
     .venv/bin/python bench/screenshots.py --url ... --sae 2 --feature 3764 --only readme --out docs/feature-page.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
RUN_TIMEOUT_MS = 600_000
"""A steering run on a server that has not loaded its model yet waits for the load (half a minute on 2 cores)."""


def log_in(page: Page, user: str, password: str) -> None:
    page.goto("/login")
    page.fill("input[name=name]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def feature_page(page: Page, sae: int, feature: int, out: Path) -> None:
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"/saes/{sae}/features/{feature}")
    page.screenshot(path=f"{out}feature-1400.png", full_page=True)


def readme_picture(page: Page, sae: int, feature: int, out: Path) -> None:
    page.set_viewport_size({"width": 1280, "height": 1500})
    page.goto(f"/saes/{sae}/features/{feature}")
    page.screenshot(path=out)


def feature_list(page: Page, sae: int, out: Path) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"/saes/{sae}/features?sort=max_act&desc=true")
    page.screenshot(path=f"{out}list-390.png", full_page=True)


def steering(page: Page, sae: int, feature: int, out: Path, prompt: str) -> None:
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"/saes/{sae}/steer?feature={feature}")
    page.fill("#steer-form textarea[name=prompt]", prompt)
    page.fill("#steer-form input[name=max_new_tokens]", "24")
    page.click("#steer-run")
    page.wait_for_function("() => /^done/.test(document.getElementById('steer-status').textContent)",
                           timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=f"{out}steer-1400.png", full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--sae", type=int, required=True)
    parser.add_argument("--feature", type=int, required=True)
    parser.add_argument("--user", help="A labeller to log in as (not needed for the README's picture).")
    parser.add_argument("--password")
    parser.add_argument("--out", type=Path, required=True, help="Path prefix of the PNG files (readme: the file).")
    parser.add_argument("--prompt", default="Tell me about your day.")
    parser.add_argument("--only", choices=("feature", "list", "steer", "readme"), help="Take this one picture only.")
    args = parser.parse_args()
    if args.only != "readme" and not (args.user and args.password):
        parser.error("--user and --password name the labeller these pictures are taken as")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_context(base_url=args.url).new_page()
        if args.only == "readme":
            readme_picture(page, args.sae, args.feature, args.out)
        else:
            log_in(page, args.user, args.password)
        if args.only in (None, "feature"):
            feature_page(page, args.sae, args.feature, args.out)
        if args.only in (None, "list"):
            feature_list(page, args.sae, args.out)
        if args.only in (None, "steer"):
            steering(page, args.sae, args.feature, args.out, args.prompt)
        browser.close()


if __name__ == "__main__":
    main()
