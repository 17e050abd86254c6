"""Sets of SAEs: the dictionaries of one model at several sites, which the SAE list groups and attribution reads."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from sae_core.sites import SiteError, parse_site

from ..models import Sae, SaeSet
from .base import Conflict, NotFound, add_unique


@dataclass(frozen=True)
class SaeGroup:
    """SAEs listed together: the members of one set (in forward order), or, with `sae_set` None, those of none."""

    sae_set: SaeSet | None
    saes: list[Sae]

    @property
    def sites(self) -> list[str]:
        return [sae.site for sae in self.saes]


def create_sae_set(session: Session, *, name: str, model_name: str) -> SaeSet:
    """A new, empty set of SAEs of `model_name` under a unique name."""
    return add_unique(session, _new_set(name, model_name), f"a set of SAEs named {name!r} already exists")


def find_sae_set(session: Session, *, ref: str | int) -> SaeSet:
    """A set by id or by name."""
    found = session.get(SaeSet, int(ref)) if isinstance(ref, int) or str(ref).isdigit() else None
    found = found or session.scalar(select(SaeSet).where(SaeSet.name == str(ref)))
    if found is None:
        raise NotFound(f"no set of SAEs {ref!r} in the store (saescope import --set NAME makes one)")
    return found


def set_to_join(session: Session, *, name: str, model_name: str, site: str, sae_name: str,
                sae_id: int | None = None) -> SaeSet:
    """The set an SAE of `model_name` at `site` is about to join: the existing one (checked), or a new one added
    to the session but not committed, so the SAE's own commit saves both or neither."""
    existing = session.scalar(select(SaeSet).where(SaeSet.name == name))
    if existing is not None:
        refuse_member(session, existing, model_name=model_name, site=site, sae_name=sae_name, sae_id=sae_id)
        return existing
    new = _new_set(name, model_name)
    session.add(new)
    session.flush()
    return new


def add_to_set(session: Session, *, sae: Sae, set_name: str) -> SaeSet:
    """Make a stored SAE a member of the set `set_name` (made on first use), checked as refuse_member says; a
    refusal commits nothing."""
    try:
        sae_set = set_to_join(session, name=set_name, model_name=sae.model_name, site=sae.site, sae_name=sae.name,
                              sae_id=sae.id)
    except (Conflict, ValueError):
        session.rollback()
        raise
    sae.set_id = sae_set.id
    session.commit()
    return sae_set


def refuse_member(session: Session, sae_set: SaeSet, *, model_name: str, site: str, sae_name: str,
                  sae_id: int | None = None) -> None:
    """Conflict unless an SAE so described may join the set: the set's model, a site, one SAE per site."""
    if model_name != sae_set.model_name:
        raise Conflict(f"SAE {sae_name!r} reads {model_name!r} but the set {sae_set.name!r} holds SAEs of "
                       f"{sae_set.model_name!r}: a set holds the SAEs of one model")
    if not site:
        raise Conflict(f"SAE {sae_name!r} names no site, so it cannot join a set of SAEs at several sites")
    taken = session.scalar(select(Sae).where(Sae.set_id == sae_set.id, Sae.site == site, Sae.id != (sae_id or -1)))
    if taken is not None:
        raise Conflict(f"the set {sae_set.name!r} already has SAE {taken.name!r} at {site}: one SAE per site")


def set_members(session: Session, *, sae_set: SaeSet) -> list[Sae]:
    """The set's SAEs in forward order (earliest site first), the order attribution walks them."""
    return sorted(session.scalars(select(Sae).where(Sae.set_id == sae_set.id)), key=_forward_order)


def saes_by_set(session: Session) -> list[SaeGroup]:
    """Every SAE, grouped: each set (by name) with its members in forward order, then the SAEs of no set."""
    saes = list(session.scalars(select(Sae).order_by(Sae.model_name, Sae.site, Sae.name)))
    groups = [SaeGroup(s, sorted((sae for sae in saes if sae.set_id == s.id), key=_forward_order))
              for s in session.scalars(select(SaeSet).order_by(SaeSet.name))]
    loose = [sae for sae in saes if sae.set_id is None]
    return groups + ([SaeGroup(None, loose)] if loose else [])


def _new_set(name: str, model_name: str) -> SaeSet:
    if not name.strip():
        raise ValueError("a set of SAEs needs a name")
    return SaeSet(name=name.strip(), model_name=model_name)


def _forward_order(sae: Sae) -> tuple[int, int]:
    """An SAE's place in the forward by its site; a site name saescope cannot parse (an imported SAE's) sorts last."""
    try:
        return parse_site(sae.site).depth
    except SiteError:
        return (1 << 30, 0)
