"""Shapes of the steering API: the request a playground form or a script sends, and saved experiments.

Bounds that depend on the server (prompt length, the max_new_tokens cap, rows per batch) are checked by
sae_core's Limits, which say the limit in their message; the bounds here only keep input sane.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from sae_core.contrast import MIN_TEXTS
from sae_core.generation import Sampling
from sae_core.steering import DIRECTION_MODES, Direction, Intervention, Mode, Positions, Steering, Trigger
from sae_core.steering_measures import RowMeasures

from .contrast_schemas import MAX_TEXTS, Text
from .deps import StoredText
from .models import SteeringDirection, SteeringExperiment

Strength = Annotated[float, Field(ge=-1e4, le=1e4)]
"""An intervention's operand, given or swept: bounded (a sweep strength of 1e70 overflowed float32, a 500)."""


class InterventionIn(BaseModel):
    """One feature's change, or a saved direction's (give feature or direction, not both)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    feature: int | None = Field(default=None, ge=0, lt=2**31, description="Index of the SAE feature.")
    direction: int | None = Field(default=None, ge=1, lt=2**31, description="Id of a saved steering direction of this "
                                  "SAE (GET /api/saes/{id}/directions); it takes add, cap or rescale.")
    mode: Mode = Field(description="clamp (set to value), add (add value), scale (multiply by value), ablate; "
                       "cap (limit the component along the unit decoder direction to value), rescale (multiply "
                       "that component by value).")
    value: Strength = Field(0.0, description="The mode's operand; ignored by ablate.")

    @model_validator(mode="after")
    def _one_target(self) -> InterventionIn:
        if (self.feature is None) == (self.direction is None):
            raise ValueError("give a feature index or a saved direction's id, not both or neither")
        if self.direction is not None and self.mode not in DIRECTION_MODES:
            raise ValueError(f"a direction takes {', '.join(DIRECTION_MODES)}, not {self.mode}")
        return self

    def target(self, directions: Mapping[int, Direction]) -> int | Direction:
        """The feature index or the direction's vector (`directions` holds every id the request names)."""
        return self.feature if self.feature is not None else directions[cast(int, self.direction)]


class TriggerIn(BaseModel):
    """Conditional steering: intervene only where this feature's activation exceeds the threshold."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    feature: int = Field(ge=0, lt=2**31, description="Index of the trigger feature.")
    threshold: float = Field(0.0, ge=-1e6, le=1e6, description="The activation the trigger must exceed.")
    stop: bool = Field(False, description="End a row at the first token drawn after the trigger fires on its "
                                          "latest token (the row finishes with \"trigger\").")


class SteerIn(BaseModel):
    """One steering request: a baseline row and one steered row, or one row per strength of a sweep."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    sae_id: int = Field(ge=1, lt=2**31)
    prompt: StoredText = Field(min_length=1, max_length=20_000)
    raw: bool = Field(False, description="Feed the prompt as raw text instead of a chat-template user turn.")
    interventions: list[InterventionIn] = Field(min_length=1, max_length=32)
    positions: Positions = "all"
    strengths: list[Strength] = Field([], max_length=64, description="A sweep: every intervention's value set "
                                   "to each strength in turn, each generated beside the baseline.")
    target: StoredText | None = Field(None, max_length=2000, description="Text whose log-probability every row "
                                      "measures.")
    trigger: TriggerIn | None = Field(None, description="Steer only where a trigger feature fires.")
    controls: bool = Field(False, description="Add two control rows beside the steered one: the same run along "
                           "random directions of the same norms, and with the sign flipped.")
    perplexity_factor: float = Field(2.0, gt=1, le=1e4, description="A sweep marks its strongest strength whose "
                                     "perplexity is at most this many times the baseline's.")
    max_new_tokens: int = Field(48, ge=1, le=100_000)
    temperature: float = Field(0.7, ge=0, le=100)
    top_p: float = Field(0.9, gt=0, le=1)
    seed: int = Field(0, ge=0, lt=2**63)
    save: bool = Field(False, description="Store the finished run as an experiment with a permalink.")
    name: StoredText = Field("", max_length=200)

    @field_validator("controls")
    @classmethod
    def _controls_without_sweep(cls, controls: bool, info: ValidationInfo) -> bool:
        if controls and info.data.get("strengths"):
            raise ValueError("controls go beside one steered run; leave strengths empty or untick controls")
        return controls

    def steering(self, directions: Mapping[int, Direction] | None = None) -> Steering:
        """The library's steering, with saved directions' vectors by id; raises SteeringError (a feature twice,
        a sweep of ablations)."""
        trigger = Trigger(self.trigger.feature, self.trigger.threshold, self.trigger.stop) if self.trigger else None
        interventions = tuple(Intervention(i.target(directions or {}), i.mode, i.value) for i in self.interventions)
        return Steering(interventions, self.positions, trigger, control_seed=self.seed)

    def direction_ids(self) -> list[int]:
        return [i.direction for i in self.interventions if i.direction is not None]

    def range_errors(self, n_features: int, directions: Mapping[int, object]) -> list[dict[str, Any]]:
        """Each feature index the SAE does not have and each direction id it has not saved, as a validation
        error at its field (for a 422)."""
        named: list[tuple[tuple[str | int, ...], int | None]] = [
            (("interventions", k, "feature"), i.feature) for k, i in enumerate(self.interventions)]
        if self.trigger:
            named.append((("trigger", "feature"), self.trigger.feature))
        errors = [{"type": "value_error", "loc": ("body", *loc), "input": f,
                   "msg": f"feature {f} is out of range: this SAE has features 0..{n_features - 1}"}
                  for loc, f in named if f is not None and f >= n_features]
        return errors + [{"type": "value_error", "loc": ("body", "interventions", k, "direction"), "input": i.direction,
                          "msg": f"this SAE has no saved direction {i.direction}"}
                         for k, i in enumerate(self.interventions)
                         if i.direction is not None and i.direction not in directions]

    def sampling(self) -> Sampling:
        return Sampling(self.max_new_tokens, self.temperature, self.top_p, self.seed)

    def params(self) -> dict[str, Any]:
        """Everything but the prompt and interventions, as an experiment stores it."""
        return self.model_dump(include={"raw", "positions", "strengths", "target", "trigger", "controls",
                                        "perplexity_factor", "max_new_tokens", "temperature", "top_p", "seed"})

    def experiment_fields(self, rows: list[RowOut]) -> dict[str, Any]:
        """What crud.save_steering stores: the request, and every row's output and effect in params["rows"]."""
        return {"sae_id": self.sae_id, "prompt": self.prompt, "name": self.name,
                "interventions": [i.model_dump() for i in self.interventions],
                "params": self.params() | {"rows": [r.model_dump() for r in rows]},
                "baseline_text": rows[0].text, "steered_text": None if self.strengths else rows[1].text}


class EffectOut(BaseModel):
    feature: int
    mean: float = Field(description="Mean activation over the row's continuation, read with no intervention.")
    fired: float = Field(description="Fraction of the continuation's tokens where the feature is above zero.")


class RowOut(BaseModel):
    row: int
    label: str
    strength: float | None
    control: str | None = Field(None, description="random or flipped for a control row.")
    text: str
    token_ids: list[int]
    finished: str | None
    kl: float | None = Field(None, description="Mean per-token KL(unsteered || steered) along the continuation.")
    kl_tokens: list[float] = Field([], description="That KL at each continuation token.")
    perplexity: float | None = Field(None, description="Perplexity of the continuation under the unsteered model.")
    effects: list[EffectOut] = Field([], description="Each steered or trigger feature on the continuation.")
    target_logprob: float | None = None
    fluent_strongest: bool = Field(False, description="The sweep's strongest strength whose perplexity stays "
                                   "within perplexity_factor of the baseline's.")

    @classmethod
    def measured(cls, measures: RowMeasures, **fields: Any) -> RowOut:
        """A row with its measures."""
        return cls(**fields, kl=measures.kl, kl_tokens=list(measures.kl_tokens), perplexity=measures.perplexity,
                   effects=[EffectOut(feature=e.feature, mean=e.mean, fired=e.fired) for e in measures.effects],
                   target_logprob=measures.target_logprob)


class SteerOut(BaseModel):
    """A whole steering run, for clients that ask for JSON instead of an event stream."""

    prompt_tokens: int
    rows: list[RowOut]
    strongest_fluent: float | None = Field(None, description="A sweep's strongest strength whose perplexity stays "
                                           "within perplexity_factor of the baseline's; None if none does.")
    experiment_url: str | None = None


class ExperimentOut(BaseModel):
    id: int
    sae_id: int
    name: str
    author: str | None
    created_at: datetime
    prompt: str
    interventions: list[dict[str, Any]]
    params: dict[str, Any]
    rows: list[RowOut]
    url: str

    @classmethod
    def of(cls, experiment: SteeringExperiment, author: str | None) -> ExperimentOut:
        return cls(id=experiment.id, sae_id=experiment.sae_id, name=experiment.name, author=author,
                   created_at=experiment.created_at, prompt=experiment.prompt,
                   interventions=experiment.interventions,
                   params={k: v for k, v in experiment.params.items() if k != "rows"},
                   rows=experiment.params.get("rows", []), url=experiment_url(experiment.sae_id, experiment.id))

    def request(self) -> SteerIn:
        """The request that reruns this experiment (it gives the same outputs: generation is seeded)."""
        return SteerIn.model_validate({"sae_id": self.sae_id, "prompt": self.prompt,
                                       "interventions": self.interventions, "name": self.name, **self.params})


def experiment_url(sae_id: int, experiment_id: int) -> str:
    """The permalink of a saved experiment."""
    return f"/saes/{sae_id}/steer/experiments/{experiment_id}"


class DirectionIn(BaseModel):
    """A raw steering direction to save: the mean site activation of prompts A minus that of prompts B."""

    model_config = ConfigDict(extra="forbid")
    name: StoredText = Field(min_length=1, max_length=200)
    a: list[Text] = Field(min_length=MIN_TEXTS, max_length=MAX_TEXTS)
    b: list[Text] = Field(min_length=MIN_TEXTS, max_length=MAX_TEXTS)


class DirectionOut(BaseModel):
    id: int
    sae_id: int
    name: str
    norm: float = Field(description="Length of the vector; add with value 1 adds it whole.")
    d_in: int
    created_at: datetime
    steer_url: str

    @classmethod
    def of(cls, direction: SteeringDirection) -> DirectionOut:
        return cls(id=direction.id, sae_id=direction.sae_id, name=direction.name, norm=direction.norm,
                   d_in=len(direction.vector), created_at=direction.created_at,
                   steer_url=f"/saes/{direction.sae_id}/steer?direction={direction.id}")
