"""No op of the noise path makes the host wait for the device, on any batch layout (counted with the dispatch-mode
counter of ``benchmarks/op_count.py``, which also finds the two that transformers' built-in hook makes)."""

import pytest
from op_count import EmbeddingAndBlock, OpCounter, count

from neft_plugins import neftune
from support.layouts import layouts


@pytest.fixture(scope="module")
def counted():
    return count(tokens=128, vocab=100, dim=16)


def test_every_layout_is_read_noised_and_recorded_without_a_host_sync(counted):
    assert set(counted) == set(layouts(128, 100))
    for layout, arms in counted.items():
        assert arms["ours"]["added"] > 0, f"{layout}: nothing of ours ran"
        assert arms["ours"]["host_syncs"] == {}, layout


def test_the_counter_sees_the_builtin_hooks_host_syncs(counted):
    for arms in counted.values():
        assert arms["builtin"]["host_syncs"] == {"aten._local_scalar_dense.default": 2}


# neftune_length: padded noises every position, so it takes scope all only.
@pytest.mark.parametrize(
    ("length", "scope"), [("padded", "all"), ("sequence", "prompt"), ("sequence", "response")]
)
def test_other_settings_do_not_sync_either(length, scope):
    model = EmbeddingAndBlock(100, 16).train()
    batch = {
        key: value for key, value in layouts(128, 100)["padded (attention_mask)"].items() if value is not None
    }
    batch["labels"][:, :4] = -100  # a prompt to scope to
    with neftune(model, neftune_alpha=5, neftune_length=length, neftune_scope=scope, neftune_seed=0):
        model(**batch)
        counter = OpCounter()
        with counter:
            model(**batch)
    assert counter.ops, "nothing counted"
    assert counter.host_syncs() == {}
