"""``swift sft --external_plugins THIS --callbacks builtin_spy``: what the first decoder layer gets on a run with
ms-swift's built-in ``--neftune_noise_alpha`` (transformers' hook on the embedding output), measured against the
clean embedding lookup, one ``support.spy.Pass`` per training pass in ``$NEFT_SPY_DIR/rank<RANK>.jsonl``.

The spy of ``support.spy`` measures what neft-plugins adds at the block's input; the built-in adds its noise before
the block, so the clean reference here is the embedding table's rows for the call's ``input_ids`` (a Llama's
embeddings go to its first layer unchanged)."""

import os
from pathlib import Path

import torch
from swift.callbacks import callbacks_map
from transformers import TrainerCallback

from support.spy import SPY_DIR, Pass, first_direction, hidden_states_of, segments_of

PAD_ID = 0


class BuiltinSpy(TrainerCallback):
    def __init__(self, args, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        model = self.trainer.model
        block = next(module for name, module in model.named_modules() if name.endswith("layers.0"))
        embedding = model.get_input_embeddings()
        path = Path(os.environ[SPY_DIR]) / f"rank{os.environ.get('RANK', '0')}.jsonl"
        seen = []

        def ids_of(module, args):
            seen[:] = [args[0].detach()]

        def record(module, args, kwargs):
            if not seen or not (model.training and torch.is_grad_enabled()):
                return
            ids = seen.pop()
            noise = (hidden_states_of(args, kwargs).detach() - embedding.weight.detach()[ids]).float().cpu()
            mask = (ids != PAD_ID).long().cpu()  # the tiny tokenizer's <pad>; no real token has its id
            each = Pass(
                rank=int(os.environ.get("RANK", "0")),
                training=True,
                grad_enabled=True,
                input_ids=ids.cpu(),
                segments=segments_of({"attention_mask": mask}, tuple(noise.shape[:2])),
                noise_square=noise.double().square().sum(-1),
                first_noise=first_direction(noise),
                mask_shape=list(mask.shape),
                mask_dtype=str(mask.dtype),
            )
            with path.open("a") as file:
                file.write(each.to_json() + "\n")

        # Hooks on the embedding module and the block only: a hook on ms-swift's model call broke its loss.
        embedding.register_forward_pre_hook(ids_of)
        block.register_forward_pre_hook(record, with_kwargs=True)


callbacks_map["builtin_spy"] = BuiltinSpy
