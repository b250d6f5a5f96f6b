"""The measures against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from neft_plugins.demo import measures as m


def test_lengths_by_hand():
    texts = ["one two three", "a  b", ""]
    assert m.char_lengths(texts) == [13.0, 4.0, 0.0]
    assert m.word_lengths(texts) == [3.0, 2.0, 0.0]
    assert m.mean(m.word_lengths(texts)) == pytest.approx(5 / 3)


def test_mean_and_std_by_hand():
    assert m.std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == pytest.approx(math.sqrt(32 / 7))
    assert m.std([3.0]) == 0.0
    assert math.isnan(m.mean([]))


def test_repetition_rate_by_hand():
    # "a b a b a": 2-grams ab ba ab ba -> 4 total, 2 distinct -> rep-2 = 0.5
    assert m.repetition_rate(["a b a b a"], 2) == pytest.approx(0.5)
    # pooled over answers, counted per answer: "x y" + "x y" -> 2 total, 2 distinct (no repetition)
    assert m.repetition_rate(["x y", "x y"], 2) == 0.0
    # pooled: (2 distinct of 4) + (1 of 1) -> 1 - 3/5
    assert m.repetition_rate(["a b a b a", "c d"], 2) == pytest.approx(0.4)
    # prefix: only the first 3 words "a b a" -> ab ba -> no repetition
    assert m.repetition_rate(["a b a b a b a b"], 2, prefix=3) == 0.0
    assert math.isnan(m.repetition_rate(["one"], 2))


def test_log_diversity_by_hand():
    text = "a b a b a"
    # rep2 = 1 - 2/4 = .5 ; 3-grams aba bab aba -> 1 - 2/3 ; 4-grams abab baba -> 0
    div = (1 - 0.5) * (2 / 3) * 1.0
    assert m.diversity([text]) == pytest.approx(div)
    assert m.log_diversity([text]) == pytest.approx(-math.log(1 - div))
    # no repetition at all: diversity 1, log-diversity floored at -ln(1e-12)
    assert m.log_diversity(["p q r s t"]) == pytest.approx(-math.log(1e-12))


def test_rouge_l_by_hand():
    # LCS("the cat sat", "the cat ran") = 2 -> P = R = 2/3 -> F = 2/3
    assert m.rouge_l_scores(["the cat sat"], ["the cat ran"]) == [pytest.approx(2 / 3)]
    # LCS("a b c d", "a c") = 2 -> P = 2/2, R = 2/4 -> F = 2/3
    assert m.rouge_l_scores(["a c"], ["a b c d"])[0] == pytest.approx(2 / 3)
    assert m.rouge_l_scores(["same words here"], ["same words here"]) == [pytest.approx(1.0)]


def test_bleu_by_hand():
    text = "the quick brown fox jumps over the lazy dog"
    assert m.bleu([text], [text]) == pytest.approx(100.0)
    # no 4-gram in common -> BLEU 0 (sacrebleu's default: no smoothing of zero counts is 'exp')
    assert m.bleu(["completely different words here"], [text]) == pytest.approx(0.0, abs=1e-6)
    # hand computation: hyp "a b c d e" vs ref "a b c d f": p1=4/5 p2=3/4 p3=2/3 p4=1/2, BP = 1
    expected = 100 * math.exp((math.log(4 / 5) + math.log(3 / 4) + math.log(2 / 3) + math.log(1 / 2)) / 4)
    assert m.bleu(["a b c d e"], ["a b c d f"]) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        m.bleu(["a"], [])


def test_percentile_by_hand():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert m.percentile(values, 0) == 1.0
    assert m.percentile(values, 50) == 3.0
    assert m.percentile(values, 100) == 5.0
    assert m.percentile(values, 12.5) == pytest.approx(1.5)


def test_paired_bootstrap_constant_shift_is_certain():
    a = [1.0, 2.0, 3.0, 4.0]
    b = [x + 0.5 for x in a]
    d = m.paired_bootstrap("x", a, b, n_boot=200)
    # every resample sees the same +0.5 shift, so the interval collapses on it
    assert d.diff == pytest.approx(0.5)
    assert d.low == pytest.approx(0.5) and d.high == pytest.approx(0.5)
    assert d.p_b_greater == 1.0
    assert d.excludes_zero and "excludes 0" in d.verdict()


def test_paired_bootstrap_symmetric_noise_includes_zero():
    a = [0.0] * 20
    b = [1.0, -1.0] * 10
    d = m.paired_bootstrap("x", a, b, n_boot=500, seed=3)
    assert d.diff == 0.0
    assert d.low < 0 < d.high
    assert not d.excludes_zero
    assert d.verdict() == "within noise (95% CI includes 0)"


def test_paired_bootstrap_is_paired():
    # large between-example spread, small constant within-pair difference: paired CI stays tight
    a = [1.0, 100.0, 1000.0, 5.0, 50.0]
    b = [x + 1.0 for x in a]
    d = m.paired_bootstrap("x", a, b, n_boot=300)
    assert d.low == pytest.approx(1.0) and d.high == pytest.approx(1.0)


def test_paired_bootstrap_rejects_unpaired():
    with pytest.raises(ValueError, match="equal lengths"):
        m.paired_bootstrap("x", [1.0], [1.0, 2.0])


def test_compare_generations_names_every_measure():
    refs = ["the cat sat on the mat today", "a dog ran in the park"]
    train_a = ["the cat sat on the mat today", "a dog ran"]
    train_b = ["the cat sat", "a dog ran in the park"]
    held_a = ["short answer", "another short answer here"]
    held_b = ["a much longer answer with more words in it", "and this one is long too, really"]
    out = m.compare_generations(held_a, held_b, train_a, train_b, refs, prefix=8, n_boot=50)
    names = [d.name for d in out]
    assert names == [
        "ROUGE-L vs training answers",
        "BLEU vs training answers",
        "answer length (chars)",
        "answer length (words)",
        "rep-2 (first 8 words)",
        "log-diversity (first 8 words)",
    ]
    lengths = out[3]
    assert lengths.a == pytest.approx(3.0) and lengths.b == pytest.approx(8.0)  # (9 + 7) / 2
    assert all(set(d.as_dict()) >= {"name", "a", "b", "diff", "low", "high", "verdict"} for d in out)


def test_nanmean_skips_missing_values():
    assert m.nanmean([1.0, float("nan"), 3.0]) == 2.0
    assert math.isnan(m.nanmean([float("nan")]))
