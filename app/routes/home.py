"""The SAEs in the store (`/`) and one SAE's overview (`/saes/{sae_id}`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from .. import charts, crud
from ..deps import ReaderDep, SaeId, SessionDep, render
from ..models import Sae
from ..presenters.explain_jobs import explain_section
from ..presenters.metrics import METRICS

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def index(request: Request, session: SessionDep, _user: ReaderDep):
    return render(request, "index.html", {"groups": crud.saes_by_set(session)})


@router.get("/saes/{sae_id}", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep, user: ReaderDep, sae_id: SaeId):
    sae = crud.find_sae(session, ref=sae_id)
    explain = explain_section(session, request.app.state.explain, sae_id=sae.id, user=user)
    return render(request, "sae.html", {"sae": sae, "labelled": crud.labelled_count(session, sae_id=sae.id),
                                        "loss_chart": loss_chart(sae), "density_chart": density_chart(sae),
                                        "metric_names": METRICS} | explain)


def loss_chart(sae: Sae) -> Markup:
    """Training loss against tokens seen, from the training log recorded beside the SAE."""
    points = [(entry.get("tokens", entry.get("step", 0)), entry["loss"])
              for entry in sae.training_log if isinstance(entry.get("loss"), int | float)]
    return charts.line(points, title=f"training loss of {sae.name}", x_label="tokens trained",
                       y_label="loss", log_y=True)


def density_chart(sae: Sae) -> Markup:
    """How many features fire at each density (log10 bins), over features that fire at all."""
    hist = sae.density_histogram or {}
    return charts.bars(hist.get("log10_edges", []), hist.get("counts", []), title=f"feature densities of {sae.name}",
                       x_label="density (fraction of tokens it fires on)", y_label="features",
                       edge_text=lambda e: charts.short_number(10**e))
