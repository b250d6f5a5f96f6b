"""``neft-mlx``: ``lora ARGS`` (``mlx_lm.lora`` with neft-plugins' NEFTune) and ``version``.

``lora`` takes every argument of ``mlx_lm.lora`` and every key of its ``--config`` YAML, plus our keys
(``--neftune_alpha 5``, or ``neftune_alpha: 5`` in the YAML; the command line wins, as in MLX-LM), checked before
any model loads. Two processes: ``mlx.launch -n 2 $(which neft-mlx) lora ...``. Usage, versions and errors:
:mod:`..launcher`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neft_plugins.integrations.launcher import Launcher


def lora(argv: Sequence[str]) -> int:
    import mlx_lm.lora as mlx_lora

    from neft_plugins.errors import NEFTuneConfigError
    from neft_plugins.integrations.arguments import split_argv, split_config
    from neft_plugins.mlx import train
    from neft_plugins.mlx.handle import check_config
    from neft_plugins.versions import missing_hook_point

    if not hasattr(mlx_lora, "train") or not hasattr(mlx_lora, "build_parser"):
        raise missing_hook_point("mlx-lm", ["mlx_lm.lora.train", "mlx_lm.lora.build_parser"], "neft-mlx lora")
    # MLX-LM spells its flags with dashes: --neftune-alpha is taken as --neftune_alpha.
    ours, rest = split_argv([_underscored(item) for item in argv])
    if any(item in ("-h", "--help") for item in rest):
        print(LAUNCHER.usage())
    parsed, _ = mlx_lora.build_parser().parse_known_args(rest)
    from_yaml = _yaml_config(parsed.config, mlx_lora.yaml_loader)
    config, _ = split_config({**from_yaml, **ours})  # bad keys stop here, before MLX-LM loads a model
    check_config(config)
    mask_prompt = parsed.mask_prompt or from_yaml.get("mask_prompt")
    if config.enabled and config.neftune_scope != "all" and not mask_prompt:
        raise NEFTuneConfigError(
            f"neftune_scope: got {config.neftune_scope!r} without --mask-prompt; MLX-LM tells prompt from response "
            "only with mask_prompt: set --mask-prompt (mask_prompt: true), or neftune_scope: 'all'"
        )
    resume = parsed.resume_adapter_file or from_yaml.get("resume_adapter_file")
    original = mlx_lora.train
    mlx_lora.train = functools.partial(train, config=config, resume_adapter_file=resume)
    sys.argv = ["mlx_lm.lora", *rest]
    try:
        mlx_lora.main()
    finally:
        mlx_lora.train = original
    return 0


def _underscored(item: str) -> str:
    if item.startswith("--neftune-"):
        name, equals, value = item.partition("=")
        return "--" + name[2:].replace("-", "_") + equals + value
    return item


def _yaml_config(path: str | None, loader: Any) -> dict[str, Any]:
    import yaml

    if not path:
        return {}
    return yaml.load(Path(path).read_text(), loader) or {}


LAUNCHER = Launcher(
    prog="neft-mlx",
    framework="mlx-lm",
    module="neft_plugins.integrations.mlx.cli",
    commands={"lora": lora},
    synopsis=[("lora [--config CONFIG.yaml] [--key value ...]", "`mlx_lm.lora` with neft-plugins' NEFTune")],
    keys_how="--key value, or key: value in the --config YAML",
    others="mlx_lm",
)
main = LAUNCHER.main

if __name__ == "__main__":
    sys.exit(main())
