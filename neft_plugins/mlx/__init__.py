"""NEFTune for MLX-LM, without torch: ``neft_plugins.mlx.train`` is ``mlx_lm.tuner.train`` with our keys added
(``neft-mlx lora`` is ``mlx_lm.lora`` with them); ``attach`` is the lower level, for a loop of one's own.
See docs/mlx.md."""

from neft_plugins.mlx.handle import MLXNEFTune, attach
from neft_plugins.mlx.training import NEFTuneReports, train

__all__ = ["MLXNEFTune", "NEFTuneReports", "attach", "train"]
