"""The arms of ``benchmarks/reproduce.py``: the grid, the files workers share it through, each arm's metrics.

A finished arm is the JSON record ``<out>/arms/<ident>.json``: ``spec`` (a GridArm), per-example
``losses``, ``generations``, trainer ``log_history`` and the ``metrics`` below.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from neft_plugins.demo import measures
from neft_plugins.demo.pipeline import Arm

ALPHAS = (5.0, 10.0, 15.0)


class Measure(NamedTuple):
    key: str
    label: str
    paper_direction: int | None  # NEFTune vs none in the paper: +1 up, -1 down, 0 equal or down


MEASURES = (
    Measure("loss/train", "training loss (noise off)", +1),
    Measure("loss/heldback", "held-back alpaca loss", 0),
    Measure("loss/heldout", "AlpacaEval loss", 0),
    Measure("rougeL", "ROUGE-L vs training answers", -1),
    Measure("bleu", "BLEU vs training answers", -1),
    Measure("len_chars", "answer length (chars)", +1),
    Measure("len_words", "answer length (words)", +1),
    Measure("rep2", "rep-2", None),
    Measure("logdiv", "log-diversity", None),
    Measure("neft/noise_norm", "logged noise norm / (alpha/sqrt3)", None),
)
# Metrics that are the mean of one value per example: their differences get a pooled paired bootstrap.
PER_EXAMPLE = ("loss/train", "loss/heldback", "loss/heldout", "rougeL", "len_chars", "len_words")

ArmRecord = dict[str, Any]  # a finished arm, as read from its JSON file


@dataclass(frozen=True)
class GridArm:
    kind: str  # "none", "ours" (NEFTuneCallback) or "builtin" (transformers' neftune_noise_alpha)
    alpha: float
    distribution: str
    packing: bool
    seed: int

    @property
    def ident(self) -> str:
        base = "none" if self.alpha == 0 else f"{self.kind}-a{self.alpha:g}-{self.distribution}"
        return f"{base}-{'packed' if self.packing else 'padded'}-s{self.seed}"

    def arm(self) -> Arm:
        return Arm(
            self.ident,
            alpha=self.alpha,
            distribution=self.distribution,
            builtin=self.kind == "builtin",
            packing=self.packing,
            seed=self.seed,
        )

    def spec(self) -> dict[str, Any]:
        return asdict(self)


def full_grid(seeds: list[int]) -> list[GridArm]:
    """Uniform noise (ours, built-in) seed by seed, then gaussian: a run cut short loses gaussian seeds first."""
    uniform, gaussian = [], []
    for seed in seeds:
        for packing in (False, True):
            uniform.append(GridArm("none", 0.0, "uniform", packing, seed))
            for kind in ("ours", "builtin"):
                uniform += [GridArm(kind, alpha, "uniform", packing, seed) for alpha in ALPHAS]
            gaussian += [GridArm("ours", alpha, "gaussian", packing, seed) for alpha in ALPHAS]
    return uniform + gaussian


def reduced_grid() -> list[GridArm]:
    """Priority order: what answers the paper's directions first, then packing, then the rest."""

    def arm(
        kind: str, alpha: float, seed: int, packing: bool = False, distribution: str = "uniform"
    ) -> GridArm:
        return GridArm(kind, alpha, distribution, packing, seed)

    arms = []
    for seed in (0, 1):
        arms += [arm("none", 0.0, seed), arm("ours", 5.0, seed), arm("builtin", 5.0, seed)]
    arms += [arm("none", 0.0, 0, True), arm("ours", 5.0, 0, True), arm("builtin", 5.0, 0, True)]
    arms += [arm("ours", 15.0, 0), arm("ours", 15.0, 1), arm("ours", 5.0, 0, distribution="gaussian")]
    arms += [arm("none", 0.0, 2), arm("ours", 5.0, 2), arm("builtin", 5.0, 2)]
    arms += [arm("builtin", 15.0, 0), arm("ours", 10.0, 0), arm("builtin", 10.0, 0)]
    return arms


def write_whole(path: Path, payload: object) -> None:
    """Written to a side file and renamed: another worker may be reading the folder for its summary."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(payload, indent=2) + "\n")
    partial.replace(path)


def claim(path: Path) -> bool:
    """Take `path`'s claim file for this process; False while another live worker holds it."""
    claim_file = path.with_suffix(".claim")
    try:
        fd = os.open(claim_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        holder = claim_file.read_text().strip()
        if not holder or _alive(int(holder)):  # empty: the holder is writing its pid right now
            return False
        claim_file.unlink(missing_ok=True)  # left by a worker that died
        return claim(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(str(os.getpid()))
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def per_example(record: ArmRecord, key: str, references: list[str] | None) -> list[float] | None:
    """The per-example values behind a metric in PER_EXAMPLE (the metric is their mean), else None."""
    if key.startswith("loss/"):
        return record["losses"][key.removeprefix("loss/")]
    if key == "rougeL" and references is not None:
        answers = record["generations"]["train"]
        return measures.rouge_l_scores(answers, references[: len(answers)])
    if key == "len_chars":
        return measures.char_lengths(record["generations"]["heldout"])
    if key == "len_words":
        return measures.word_lengths(record["generations"]["heldout"])
    return None


def arm_metrics(record: ArmRecord, references: list[str], prefix_tokens: int) -> dict[str, float | None]:
    """The ``metrics`` of a finished arm from its losses, generations and logs."""
    generations = record["generations"]
    noise = [h["neft/noise_norm"] for h in record["log_history"] if "neft/noise_norm" in h]
    alpha = record["spec"]["alpha"]
    return {
        **{key: measures.nanmean(per_example(record, key, references)) for key in PER_EXAMPLE},
        "bleu": measures.bleu(generations["train"], references),
        "rep2": measures.repetition_rate(generations["heldout"], 2, prefix_tokens),
        "logdiv": measures.log_diversity(generations["heldout"], prefix_tokens),
        "neft/noise_norm": (measures.mean(noise) / (alpha / math.sqrt(3))) if noise else None,
    }
