"""Train one SAE with one tool on the benchmark's activations, evaluate it on held-out rows, print JSON.

`bench/train.py` runs this once per tool in a fresh process: saescope and the plain reference under
saescope's Python, SAELens and sparsify under the peer environment's (`bench/setup_peers.sh`). Each tool
trains with its own trainer class and its own defaults (optimiser, learning rate, initialisation), fed the
same batches in the same order; its SAE is then evaluated through that tool's own encode and decode.

    python bench/run_trainer.py TOOL --train T.npy --heldout H.npy --tokens N --out result.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # common.py and reference_topk.py, under either interpreter

from common import EncodeDecode, StepClock, TimedIterator, batches, evaluate, steps  # noqa: E402


@dataclass(frozen=True)
class Setup:
    """One benchmark run's data and configuration, the same for every tool."""

    train_ND: np.ndarray
    """Training activations, float32."""
    tokens: int
    """Training budget in rows."""
    batch_size: int
    """Rows per optimiser step."""
    d_sae: int
    """Dictionary size."""
    k: int
    """Active features per row."""
    seed: int
    """Seeds initialisation and the batch order."""
    workdir: Path
    """Scratch directory for whatever a tool writes to disk."""

    @property
    def d_in(self) -> int:
        return self.train_ND.shape[1]

    def timed_batches(self, clock: StepClock) -> TimedIterator:
        return TimedIterator(batches(self.train_ND, self.batch_size, self.tokens, self.seed), clock)


def train_reference(s: Setup, clock: StepClock, bf16: bool = False) -> tuple[EncodeDecode, dict]:
    """The plain fp32 TopK loop of bench/reference_topk.py; with `bf16`, under bf16 autocast with fused Adam."""
    from reference_topk import ReferenceTopK, ReferenceTrainer

    torch.manual_seed(s.seed)
    sae = ReferenceTopK(s.d_in, s.d_sae, s.k, seed=s.seed)
    trainer = ReferenceTrainer(sae, fused=bf16)
    trainer.init_b_dec(torch.from_numpy(s.train_ND[:16384]))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for x_ND in s.timed_batches(clock):
            trainer.step(x_ND)

    def run(x_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f_NF = sae.encode(x_ND)
        return sae.decode(f_NF), f_NF

    return run, {"lr": trainer.lr, "dtype": "bfloat16" if bf16 else "float32"}


def train_saescope(s: Setup, clock: StepClock) -> tuple[EncodeDecode, dict]:
    """saescope's library trainer with its defaults (bf16 autocast, sparse kernels, input scaling)."""
    sys.path.insert(0, str(BENCH.parent))
    from sae_core.activations import open_activations
    from sae_core.saes import SAEConfig
    from sae_core.train import TrainConfig, Trainer

    path = s.workdir / "train_ordered.npy"
    np.save(path, s.train_ND)
    cfg = TrainConfig(tokens=s.tokens, batch_size=s.batch_size, seed=s.seed, progress=False,
                      checkpoint_every_s=1e9, checkpoint_every_tokens=0)
    sae_cfg = SAEConfig(architecture="topk", d_in=s.d_in, d_sae=s.d_sae, k=s.k)
    trainer = Trainer(sae_cfg, cfg, open_activations(path), s.workdir / "saescope")
    clock.tick()
    sae = trainer.run(on_step=lambda _step: clock.tick())

    def run(x_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f_NF = sae.encode(x_ND)
        return sae.decode(f_NF), f_NF

    return run, {"lr": trainer.lr, "dtype": cfg.dtype, "sparse_kernels": cfg.sparse_kernels}


def train_saelens(s: Setup, clock: StepClock) -> tuple[EncodeDecode, dict]:
    """SAELens's SAETrainer and TopKTrainingSAE with their defaults, fed batches from memory."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(s.seed)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=s.d_in, d_sae=s.d_sae, k=s.k, dtype="float32", device="cpu"))
    cfg = SAETrainerConfig(total_training_samples=steps(s.tokens, s.batch_size) * s.batch_size,
                           train_batch_size_samples=s.batch_size, device="cpu",
                           lr_end=3e-5)  # LanguageModelSAERunnerConfig's default, lr / 10 (unused: constant lr)
    trainer = SAETrainer(cfg, sae, s.timed_batches(clock))
    sae = trainer.fit().eval()

    def run(x_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f_NF = sae.encode(x_ND)
        return sae.decode(f_NF), f_NF

    return run, {"lr": cfg.lr}


class ReplayLM(torch.nn.Module):
    """Stands in for sparsify's language model: 'token ids' are row numbers into the activation table.

    sparsify's Trainer only trains from a model's forward hooks; this module's one layer outputs the
    stored activations of the rows it is given, so the Trainer's own loop runs unchanged on our data.
    """

    def __init__(self, table_ND: torch.Tensor, clock: StepClock):
        super().__init__()
        self.register_buffer("table_ND", table_ND, persistent=False)
        self.layers = torch.nn.ModuleList([torch.nn.Identity()])
        self.config = type("Config", (), {"num_hidden_layers": 1})()
        self.clock = clock

    @property
    def base_model(self) -> torch.nn.Module:
        return self

    @property
    def device(self) -> torch.device:
        return self.table_ND.device

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.zeros(1, 1, dtype=torch.long)}

    def forward(self, input_ids: torch.Tensor, **_: object) -> torch.Tensor:
        self.clock.tick()
        return self.layers[0](self.table_ND[input_ids])


def train_sparsify(s: Setup, clock: StepClock) -> tuple[EncodeDecode, dict]:
    """EleutherAI sparsify's Trainer with its defaults (signum, FVU loss), on replayed activations."""
    from common import row_order
    from sparsify import SparseCoder, SparseCoderConfig, TrainConfig, Trainer

    seq = 128
    n_steps = steps(s.tokens, s.batch_size)
    order_BT = torch.from_numpy(row_order(len(s.train_ND), n_steps * s.batch_size, s.seed)).view(-1, seq)
    dataset = [{"input_ids": row_T} for row_T in order_BT]
    cfg = TrainConfig(SparseCoderConfig(num_latents=s.d_sae, k=s.k), batch_size=s.batch_size // seq,
                      hookpoints=["layers.0"], init_seeds=[s.seed], log_to_wandb=False,
                      save_every=10**9, save_dir=str(s.workdir / "sparsify"))
    trainer = Trainer(cfg, dataset, ReplayLM(torch.from_numpy(s.train_ND), clock))
    clock.stamps.clear()  # the Trainer's width probe ran a forward; only training steps count
    trainer.fit()
    clock.tick()
    sae = SparseCoder.load_from_disk(s.workdir / "sparsify" / "unnamed" / "layers.0")

    def run(x_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = sae(x_ND)
        f_NF = torch.zeros(len(x_ND), s.d_sae).scatter_(-1, out.latent_indices, out.latent_acts.float())
        return out.sae_out, f_NF

    return run, {"lr": trainer.optimizers[0].param_groups[0]["lr"], "optimizer": cfg.optimizer}


TOOLS: dict[str, Callable[[Setup, StepClock], tuple[EncodeDecode, dict]]] = {
    "saescope": train_saescope,
    "reference": train_reference,
    "reference-bf16": partial(train_reference, bf16=True),
    "saelens": train_saelens,
    "sparsify": train_sparsify,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tool", choices=sorted(TOOLS))
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--heldout", type=Path, required=True)
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--features", type=int, default=8192)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--segment-steps", type=int, default=5)
    parser.add_argument("--allocator", choices=("keep", "default"), default="default",
                        help="keep: glibc keeps freed memory, as saescope's CLI sets it (sae_core/allocator.py)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.allocator == "keep":
        sys.path.insert(0, str(BENCH.parent))
        from sae_core.allocator import keep_freed_memory  # ctypes only: imports under the peers' Python too

        keep_freed_memory()

    train_ND = np.load(args.train)
    clock = StepClock()
    with tempfile.TemporaryDirectory(prefix=f"bench-{args.tool}-") as tmp:
        setup = Setup(train_ND, args.tokens, args.batch_size, args.features, args.k, args.seed, Path(tmp))
        started = time.perf_counter()
        encode_decode, info = TOOLS[args.tool](setup, clock)
        wall = time.perf_counter() - started
        result = {
            "tool": args.tool,
            "tokens": steps(args.tokens, args.batch_size) * args.batch_size,
            "wall_s": wall,
            "tokens_per_s": clock.tokens_per_s(args.batch_size, args.warmup_steps, args.segment_steps),
            **evaluate(encode_decode, np.load(args.heldout)),
            "torch_threads": torch.get_num_threads(),
            **info,
        }
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
