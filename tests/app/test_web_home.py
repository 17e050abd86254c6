"""The SAE list page and the app skeleton: static files, base template, nothing at import time."""

from __future__ import annotations

import importlib
import pkgutil


def test_index_lists_the_saes(client, stored_sae, session):
    stored_sae.eval_metrics = {"fvu": 0.123456, "ce_loss_recovered": 0.875}
    session.commit()
    page = client.get("/")
    assert page.status_code == 200
    assert f'href="/saes/{stored_sae.id}"' in page.text
    assert "tiny-sae" in page.text and "layers.1.resid_post" in page.text and "relu" in page.text
    assert '<script src="/static/htmx.min.js"' in page.text
    assert "<td>0.123</td><td>87.5%</td>" in page.text


def test_index_without_saes_says_how_to_add_one(client):
    page = client.get("/")
    assert page.status_code == 200 and "saescope import" in page.text


def test_static_files_are_served(client):
    assert "htmx" in client.get("/static/htmx.min.js").text
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


def test_importing_the_app_builds_nothing():
    """No module of the app holds an app, engine, settings or model cache made at import time."""
    from fastapi import FastAPI
    from sqlalchemy.engine import Engine

    import app
    from app.services.inference import ModelCache
    from app.settings import Settings

    modules = [importlib.import_module(info.name) for info in pkgutil.walk_packages(app.__path__, "app.")
               if not info.name.endswith("__main__")]  # that one runs the CLI
    assert "app.main" in {module.__name__ for module in modules}
    built = [f"{module.__name__}.{name}" for module in modules for name, value in vars(module).items()
             if isinstance(value, (FastAPI, Engine, Settings, ModelCache))]
    assert built == []


def test_the_sae_pages_metrics_are_named_in_words_with_what_each_measures(client, stored_sae, session):
    stored_sae.eval_metrics = {"fvu": 0.2, "ce_zero": 9.5, "my_metric": 1.5}
    session.commit()
    html = client.get(f"/saes/{stored_sae.id}").text
    assert '<div class="name">variance unexplained</div>' in html and 'title="fvu: fraction of the' in html
    assert '<div class="name">CE loss, site zeroed</div>' in html
    assert '<div class="name">my_metric</div>' in html  # a key the page does not know is shown as written
