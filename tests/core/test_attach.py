"""Attaching through wrappers, noising training passes only, and leaving nothing behind."""

import copy

import pytest
import torch

from neft_plugins import NEFTuneAttachError, NEFTuneConflictError, NEFTuneInputError, attach, neftune
from neft_plugins.engine.structure import find_input_embeddings
from support.spy import first_block_input
from support.tiny import make_llama, make_lora


def training_embeddings(model, wrapper=None, **inputs):
    """What the first decoder layer receives in one training forward pass through ``wrapper`` (default: the
    model): a Llama's token embeddings, plus the noise."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return first_block_input(base.model.layers[0], lambda: (wrapper or model)(**inputs))


def module_traces(model):
    """Everything a hook or an attribute could leave behind on any submodule."""
    return [
        (
            name,
            sorted(vars(module)),
            len(module._forward_hooks),
            len(module._forward_pre_hooks),
            sorted(name for name, _ in module.named_buffers(recurse=False)),
        )
        for name, module in model.named_modules()
    ]


def neft_traces(model):
    """Hooks, attributes and buffers of ours on any submodule (the trainer adds its own, which we ignore)."""
    traces = []
    for name, module in model.named_modules():
        hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
        traces += [
            (name, hook) for hook in hooks if getattr(hook, "__module__", "").startswith("neft_plugins")
        ]
        traces += [(name, key) for key in vars(module) if "neft" in key]
        traces += [(name, key) for key, _ in module.named_buffers(recurse=False) if "neft" in key]
    return traces


def test_detach_leaves_no_hook_attribute_or_buffer():
    model = make_llama().train()
    before = module_traces(model)
    state = copy.deepcopy(model.state_dict())
    with neftune(model, neftune_alpha=5, neftune_seed=3):
        model(input_ids=torch.randint(4, 60, (2, 8)))
        assert module_traces(model) != before
        assert len(neft_traces(model)) == 4  # model pre/post, embeddings, first block
    assert module_traces(model) == before
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())


def test_exception_inside_the_block_detaches():
    model = make_llama().train()
    before = module_traces(model)
    with pytest.raises(RuntimeError, match="boom"), neftune(model, neftune_alpha=5):
        raise RuntimeError("boom")
    assert module_traces(model) == before


def test_eval_mode_and_no_grad_passes_are_bit_identical():
    model = make_llama()
    input_ids = torch.randint(4, 60, (2, 12))
    model.eval()
    with torch.no_grad():
        reference = model(input_ids=input_ids).logits
    with neftune(model, neftune_alpha=15):
        with torch.no_grad():
            assert torch.equal(model(input_ids=input_ids).logits, reference)  # eval mode
        model.train()
        with torch.no_grad():
            train_mode_no_grad = model(input_ids=input_ids).logits  # a reference pass in train mode
        with torch.inference_mode():
            inference = model(input_ids=input_ids).logits
        noised = model(input_ids=input_ids).logits
    model.eval()
    with torch.no_grad():
        clean_train_mode = model.train()(input_ids=input_ids).logits
    assert torch.equal(train_mode_no_grad, clean_train_mode)
    assert torch.equal(inference, clean_train_mode)
    assert not torch.equal(noised.detach(), clean_train_mode)


def test_generate_in_train_mode_is_untouched():
    model = make_llama()
    prompt = torch.randint(4, 60, (2, 6))
    kwargs = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    model.train()
    expected = model.generate(prompt, **kwargs)
    with neftune(model, neftune_alpha=15):
        assert torch.equal(model.generate(prompt, **kwargs), expected)


def test_ddp_wrapper_is_seen_through(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = make_llama().train()
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        mask = torch.tensor([[1, 1, 1, 0, 0]])
        input_ids = torch.randint(4, 60, (1, 5))
        with neftune(wrapped, neftune_alpha=5) as handle:
            assert handle.embeddings is model.get_input_embeddings()
            noisy = training_embeddings(model, wrapped, input_ids=input_ids, attention_mask=mask)
        with torch.no_grad():
            noise = noisy - model.get_input_embeddings()(input_ids)
        assert torch.count_nonzero(noise[0, 3:]) == 0, "the mask passed to DDP was read"
        assert torch.count_nonzero(noise[0, :3]) == 3 * 64
    finally:
        dist.destroy_process_group()


class DeepSpeedEngine(torch.nn.Module):
    """The structure DeepSpeed's engine has: the model in `.module`, no get_input_embeddings of its own."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_deepspeed_fsdp_and_compile_structures_are_unwrapped():
    model = make_llama()
    embeddings = model.get_input_embeddings()
    assert find_input_embeddings(DeepSpeedEngine(model))[0] is embeddings
    assert find_input_embeddings(DeepSpeedEngine(DeepSpeedEngine(model)))[0] is embeddings
    assert find_input_embeddings(torch.compile(model))[0] is embeddings
    assert find_input_embeddings(model)[1] == "LlamaForCausalLM.model.embed_tokens"


def test_lora_model_is_noised_at_the_base_embeddings():
    from peft import get_peft_model

    model = get_peft_model(make_llama(), make_lora()).train()
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    input_ids = torch.randint(4, 60, (2, 6))
    with neftune(model, neftune_alpha=5) as handle:
        assert handle.embeddings is model.get_base_model().get_input_embeddings()
        noisy = training_embeddings(model, input_ids=input_ids, attention_mask=mask)
    with torch.no_grad():
        clean = model.get_input_embeddings()(input_ids)
    assert torch.count_nonzero((noisy - clean)[0, 4:]) == 0
    assert torch.count_nonzero((noisy - clean)[0, :4]) == 4 * 64


def test_model_without_input_embeddings_is_a_clear_error():
    with pytest.raises(NEFTuneAttachError, match=r"Sequential has no input embeddings"):
        attach(torch.nn.Sequential(torch.nn.Linear(2, 2)), neftune_alpha=5)


class PooledEmbeddings(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.EmbeddingBag(10, 4)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids):
        return self.embed(input_ids)


def test_embedding_output_that_is_not_3d_is_a_clear_error():
    model = PooledEmbeddings().train()
    with neftune(model, neftune_alpha=5), pytest.raises(NEFTuneInputError, match=r"returned \(2, 4\)"):
        model(torch.randint(0, 10, (2, 3)))


def test_never_twice():
    model = make_llama()
    with neftune(model, neftune_alpha=5), pytest.raises(NEFTuneConflictError, match="already attached"):
        attach(model, neftune_alpha=5)
    model.get_input_embeddings().neftune_noise_alpha = 5.0  # what transformers' built-in sets
    with pytest.raises(NEFTuneConflictError, match=r"neftune_noise_alpha: got 5\.0"):
        attach(model, neftune_alpha=5)


def test_seeded_noise_ignores_the_global_rng_and_differs_per_rank(monkeypatch):
    model = make_llama().train()
    input_ids = torch.randint(4, 60, (2, 9))

    def seeded_noise(global_seed):
        torch.manual_seed(global_seed)
        training_embeddings(model, input_ids=input_ids)
        unattached_next = torch.rand(1)
        torch.manual_seed(global_seed)
        with neftune(model, neftune_alpha=5, neftune_seed=7):
            noisy = training_embeddings(model, input_ids=input_ids)
        assert torch.equal(torch.rand(1), unattached_next), "seeded noise must not consume the global RNG"
        return noisy

    rank0 = seeded_noise(1)
    assert torch.equal(seeded_noise(2), rank0)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not torch.equal(seeded_noise(1), rank0)


def test_generator_state_continues_exactly():
    model = make_llama().train()
    input_ids = torch.randint(4, 60, (2, 9))
    with neftune(model, neftune_alpha=5, neftune_seed=11) as handle:
        training_embeddings(model, input_ids=input_ids)
        state = handle.rng_state().clone()
        expected = training_embeddings(model, input_ids=input_ids)
    with neftune(model, neftune_alpha=5, neftune_seed=11) as handle:
        handle.set_rng_state(state)
        assert torch.equal(training_embeddings(model, input_ids=input_ids), expected)
