"""The measures of the NEFTune paper's Section 5, for any two sets of generations.

Pure Python apart from `rouge_score` and `sacrebleu`, which are imported lazily, so this module can
be imported (and its helpers tested) without the ``demo`` extra.

Definitions (each one is written into every report, see :data:`DEFINITIONS`):

- *whitespace tokens*: ``text.split()``.
- *answer length*: mean characters and mean whitespace tokens per answer.
- *n-gram repetition rate* over a fixed-length prefix: every answer is cut to its first ``prefix``
  whitespace tokens; rep_n = 1 - (sum over answers of distinct n-grams in the answer) / (sum over
  answers of n-grams in the answer). Counting is per answer (an n-gram shared by two answers is not a
  repetition), pooled over answers so that short answers weigh less than long ones.
- *log-diversity*: diversity = prod_{n=2..4} (1 - rep_n); log-diversity = -ln(1 - diversity)
  (Kirchenbauer et al., 2023, as used by the NEFTune paper), floored at 1e-12 inside the log.
- *ROUGE-L*: mean F-measure of `rouge_score`'s rougeL (stemming on) of each answer against its reference.
- *BLEU*: `sacrebleu` corpus BLEU (default 13a tokenisation) of the answers against their references.
- *paired bootstrap*: resample examples with replacement (same indices for both arms), recompute the
  statistic on each arm, take the difference B - A; report the mean of the observed difference, the
  2.5/97.5 percentiles and the share of resamples with B > A.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

DEFAULT_PREFIX_TOKENS = 64
DEFAULT_BOOTSTRAP = 2000

DEFINITIONS = {
    "whitespace tokens": "text.split()",
    "answer length": "mean characters / mean whitespace tokens per answer",
    "rep-2": "1 - sum(distinct 2-grams per answer) / sum(2-grams per answer), each answer cut to its "
    "first PREFIX whitespace tokens",
    "log-diversity": "-ln(1 - prod_{n=2..4}(1 - rep-n)) over the same prefixes (floored at 1e-12)",
    "ROUGE-L": "mean rougeL F-measure (rouge_score, stemmer on) of each answer against its reference",
    "BLEU": "sacrebleu corpus BLEU (13a) of the answers against their references",
    "loss": "mean over examples of the mean next-token cross-entropy on the answer tokens, noise off",
    "paired bootstrap": "resample examples with replacement, same indices for both arms; difference "
    "B - A with its 2.5-97.5 percentile interval; P(B>A) = share of resamples with B > A",
}


def whitespace_tokens(text: str) -> list[str]:
    return text.split()


def mean(values: Sequence[float]) -> float:
    if not values:
        return float("nan")
    return math.fsum(values) / len(values)


def nanmean(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN (nan if none is)."""
    return mean([v for v in values if not math.isnan(v)])


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); 0.0 for a single value, nan for none."""
    n = len(values)
    if n == 0:
        return float("nan")
    if n == 1:
        return 0.0
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1))


def char_lengths(texts: Sequence[str]) -> list[float]:
    return [float(len(t)) for t in texts]


def word_lengths(texts: Sequence[str]) -> list[float]:
    return [float(len(whitespace_tokens(t))) for t in texts]


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def ngram_counts(texts: Sequence[str], n: int, prefix: int = DEFAULT_PREFIX_TOKENS) -> tuple[int, int]:
    """(distinct n-grams summed over answers, n-grams summed over answers), each cut to `prefix` words."""
    distinct = total = 0
    for text in texts:
        grams = _ngrams(whitespace_tokens(text)[:prefix], n)
        distinct += len(set(grams))
        total += len(grams)
    return distinct, total


def repetition_rate(texts: Sequence[str], n: int = 2, prefix: int = DEFAULT_PREFIX_TOKENS) -> float:
    """Pooled n-gram repetition rate in [0, 1]; nan if no answer has n words."""
    distinct, total = ngram_counts(texts, n, prefix)
    if total == 0:
        return float("nan")
    return 1.0 - distinct / total


def diversity(texts: Sequence[str], prefix: int = DEFAULT_PREFIX_TOKENS) -> float:
    out = 1.0
    for n in (2, 3, 4):
        rep = repetition_rate(texts, n, prefix)
        if math.isnan(rep):
            return float("nan")
        out *= 1.0 - rep
    return out


def log_diversity(texts: Sequence[str], prefix: int = DEFAULT_PREFIX_TOKENS) -> float:
    div = diversity(texts, prefix)
    if math.isnan(div):
        return div
    return -math.log(max(1.0 - div, 1e-12))


def rouge_l_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Per-example ROUGE-L F-measure."""
    _check_pairs(predictions, references)
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [
        scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=False)
    ]


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100) with one reference per prediction."""
    _check_pairs(predictions, references)
    if not predictions:
        return float("nan")
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


@dataclass
class Difference:
    """B - A for one measure, with its paired-bootstrap interval."""

    name: str
    a: float
    b: float
    diff: float
    low: float
    high: float
    p_b_greater: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def verdict(self) -> str:
        """Plain words that never call noise an effect."""
        if any(math.isnan(v) for v in (self.diff, self.low, self.high)):
            return "n/a"
        if not self.excludes_zero:
            return "within noise (95% CI includes 0)"
        direction = "higher" if self.diff > 0 else "lower"
        return (
            f"B {direction}; 95% CI excludes 0 over these {self.n} examples (one run: seed noise not covered)"
        )

    def as_dict(self) -> dict:
        out = asdict(self)
        out["verdict"] = self.verdict()
        return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100], of already sorted values."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(sorted_values[lo])
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def paired_bootstrap(
    name: str,
    items_a: Sequence,
    items_b: Sequence,
    statistic: Callable[[Sequence], float] = mean,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Difference:
    """Paired bootstrap of statistic(B) - statistic(A) over examples (the same indices for both arms)."""
    if len(items_a) != len(items_b):
        raise ValueError(
            f"{name}: paired bootstrap needs equal lengths, got {len(items_a)} and {len(items_b)}"
        )
    n = len(items_a)
    a = statistic(items_a)
    b = statistic(items_b)
    if n == 0:
        nan = float("nan")
        return Difference(name, nan, nan, nan, nan, nan, nan, 0)
    rng = random.Random(seed)
    diffs = []
    for _ in range(n_boot):
        idx = [rng.randrange(n) for _ in range(n)]
        d = statistic([items_b[i] for i in idx]) - statistic([items_a[i] for i in idx])
        if not math.isnan(d):
            diffs.append(d)
    diffs.sort()
    greater = sum(1 for d in diffs if d > 0) / len(diffs) if diffs else float("nan")
    return Difference(name, a, b, b - a, percentile(diffs, 2.5), percentile(diffs, 97.5), greater, n)


def compare_generations(
    heldout_a: Sequence[str] | None = None,
    heldout_b: Sequence[str] | None = None,
    train_a: Sequence[str] | None = None,
    train_b: Sequence[str] | None = None,
    references: Sequence[str] | None = None,
    prefix: int = DEFAULT_PREFIX_TOKENS,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> list[Difference]:
    """All generation measures, each as a paired-bootstrap difference B - A.

    `heldout_*`: answers to held-out instructions (length, repetition, diversity).
    `train_*` with `references`: answers to training prompts against the training answers (ROUGE-L, BLEU).
    """
    out: list[Difference] = []
    if train_a is not None and train_b is not None and references is not None:
        _check_pairs(train_a, references)
        _check_pairs(train_b, references)
        out.append(
            paired_bootstrap(
                "ROUGE-L vs training answers",
                rouge_l_scores(train_a, references),
                rouge_l_scores(train_b, references),
                n_boot=n_boot,
                seed=seed,
            )
        )
        pairs_a = list(zip(train_a, references, strict=False))
        pairs_b = list(zip(train_b, references, strict=False))

        def _bleu(pairs: Sequence[tuple[str, str]]) -> float:
            return bleu([p for p, _ in pairs], [r for _, r in pairs])

        # BLEU is a corpus statistic: each resample recomputes it (fewer resamples: it is slower).
        out.append(
            paired_bootstrap(
                "BLEU vs training answers", pairs_a, pairs_b, _bleu, n_boot=min(n_boot, 500), seed=seed
            )
        )
    if heldout_a is not None and heldout_b is not None:
        for unit, lengths in (("chars", char_lengths), ("words", word_lengths)):
            out.append(
                paired_bootstrap(
                    f"answer length ({unit})",
                    lengths(heldout_a),
                    lengths(heldout_b),
                    n_boot=n_boot,
                    seed=seed,
                )
            )
        out.append(
            paired_bootstrap(
                f"rep-2 (first {prefix} words)",
                list(heldout_a),
                list(heldout_b),
                lambda texts: repetition_rate(texts, 2, prefix),
                n_boot=n_boot,
                seed=seed,
            )
        )
        out.append(
            paired_bootstrap(
                f"log-diversity (first {prefix} words)",
                list(heldout_a),
                list(heldout_b),
                lambda texts: log_diversity(texts, prefix),
                n_boot=min(n_boot, 1000),
                seed=seed,
            )
        )
    return out
