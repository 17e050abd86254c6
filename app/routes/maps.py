"""The feature map: its page, cluster pages with cluster labels, selections from the map, the feature page's
co-activation section, and the JSON API of points and clusters."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from .. import crud
from ..deps import CsrfChecked, FeatureIndex, LabellerDep, LabelText, ReaderDep, SaeId, SessionDep, Storable, render
from ..map_schemas import ClusterDetailOut, ClusterOut, FeatureMapOut, MapPointOut, SelectionOut
from ..presenters.feature_map import cluster_detail, cluster_out, coact_context, map_context

router = APIRouter(tags=["pages"], include_in_schema=False)
api = APIRouter(prefix="/api", tags=["api"])
ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "No such SAE, map or cluster"},
                                           422: {"description": "Bad parameters"}}
Cluster = Annotated[int, Path(ge=0, lt=2**31, description="Number of the cluster in the SAE's map.")]
MAX_SELECTION = 20_000


@router.get("/saes/{sae_id}/map", response_class=HTMLResponse)
def feature_map(request: Request, session: SessionDep, user: ReaderDep, sae_id: SaeId):
    return render(request, "map.html", map_context(session, sae_id, user))


@router.get("/saes/{sae_id}/clusters/{cluster}", response_class=HTMLResponse)
def cluster_page(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId, cluster: Cluster):
    sae = crud.find_sae(session, ref=sae_id)
    return render(request, "cluster.html", {"sae": sae, "c": cluster_detail(session, sae.id, cluster)})


@router.post("/saes/{sae_id}/clusters/{cluster}/label", dependencies=[CsrfChecked])
def label_cluster(session: SessionDep, user: LabellerDep, sae_id: SaeId, cluster: Cluster, text: LabelText):
    try:
        crud.add_cluster_label(session, sae_id=sae_id, cluster=cluster, text=text, author_id=user.id)
    except ValueError as err:  # a blank label
        raise HTTPException(422, f"text: {err}") from None
    return RedirectResponse(f"/saes/{sae_id}/clusters/{cluster}", status_code=303)


@router.get("/saes/{sae_id}/clusters/{cluster}/next-unlabelled")
def next_unlabelled(session: SessionDep, _user: ReaderDep, sae_id: SaeId, cluster: Cluster,
                    after: Annotated[int, Query(ge=-1, lt=2**31)] = -1):
    """The cluster's next member nobody has labelled (wrapping round), or the cluster page when none is left."""
    crud.find_cluster(session, sae_id=sae_id, cluster=cluster)
    index = crud.next_unlabelled_in_cluster(session, sae_id=sae_id, cluster=cluster, after=after)
    target = f"/saes/{sae_id}/features/{index}" if index is not None else f"/saes/{sae_id}/clusters/{cluster}?done=1"
    return RedirectResponse(target, status_code=303)


Features = Annotated[str, Form(min_length=1, max_length=200_000, pattern=r"^\d+(,\d+)*$",
                               description="Comma-separated feature indices."), Storable]


@router.post("/saes/{sae_id}/map/selection", response_model=SelectionOut, dependencies=[CsrfChecked])
def add_selection(session: SessionDep, user: LabellerDep, sae_id: SaeId, features: Features,
                  list_id: Annotated[int | None, Form(ge=1, lt=2**31)] = None,
                  tag: Annotated[str, Form(max_length=64), Storable] = ""):
    """Add the features selected on the map to one of the user's bookmark lists, or put a tag on them all."""
    sae = crud.find_sae(session, ref=sae_id)
    indices = sorted({int(i) for i in features.split(",")})
    if len(indices) > MAX_SELECTION or indices[-1] >= sae.d_sae:
        raise HTTPException(422, f"features: indices must lie in 0..{sae.d_sae - 1}, at most {MAX_SELECTION}")
    if (list_id is None) == (not tag.strip()):
        raise HTTPException(422, "list_id or tag: give exactly one of them")
    if list_id is not None:
        target = crud.find_bookmark_list(session, list_id=list_id, owner_id=user.id).name
        for i in indices:
            crud.add_bookmark(session, list_id=list_id, sae_id=sae.id, feature_index=i)
        return SelectionOut(added=len(indices), target=f"list {target!r}")
    for i in indices:
        crud.tag_feature(session, sae_id=sae.id, feature_index=i, tag=tag, author_id=user.id)
    return SelectionOut(added=len(indices), target=f"tag {tag.strip()!r}")


@router.get("/saes/{sae_id}/features/{feature_index}/coactive", response_class=HTMLResponse)
def coactive(request: Request, session: SessionDep, _user: ReaderDep, sae_id: SaeId, feature_index: FeatureIndex):
    """The feature page's "fires together with" section and map thumbnail (loaded by htmx after the page)."""
    return render(request, "_feature_coact_body.html", coact_context(session, sae_id, feature_index))


@api.get("/saes/{sae_id}/map", response_model=FeatureMapOut, responses=ERRORS)
def map_points(session: SessionDep, _user: ReaderDep, sae_id: SaeId):
    """The SAE's feature map: how it was made and every live feature's point, cluster, density, label and top tokens."""
    run = crud.find_map(session, sae_id=sae_id)
    points = [MapPointOut(**vars(p)) for p in crud.map_points(session, sae_id=sae_id)]
    return FeatureMapOut(sae_id=run.sae_id, config=run.config, n_clusters=run.n_clusters, n_noise=run.n_noise,
                         n_dead=run.n_dead, seconds=run.seconds, created_at=run.created_at, points=points)


@api.get("/saes/{sae_id}/clusters", response_model=list[ClusterOut], responses=ERRORS)
def clusters(session: SessionDep, _user: ReaderDep, sae_id: SaeId):
    """The clusters of the SAE's map, largest first, with their members' commonest top tokens and current label."""
    crud.find_map(session, sae_id=sae_id)
    labels = crud.cluster_label_texts(session, sae_id=sae_id)
    return [cluster_out(row, labels.get(row.cluster)) for row in crud.map_clusters(session, sae_id=sae_id)]


@api.get("/saes/{sae_id}/clusters/{cluster}", response_model=ClusterDetailOut, responses=ERRORS)
def cluster(session: SessionDep, _user: ReaderDep, sae_id: SaeId, cluster: Cluster):
    """One cluster with its label history and its members."""
    return cluster_detail(session, sae_id, cluster)
