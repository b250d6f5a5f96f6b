"""`axolotl train` started from the repository root, as someone trying `example_configs/axolotl/` does.

Axolotl's default launcher runs `accelerate launch -m axolotl.cli.train`; `-m` puts the working directory first
on `sys.path`, so there the source folder `neft_plugins/` is what Python imports. It must hold the
integrations too, or Axolotl logs "Failed to load plugin" and trains on without noise.
"""

from __future__ import annotations

from support.logs import ATTACHED
from support.matrix import on_newest
from support.noise import assert_near_paper_norm


@on_newest("axolotl")
def test_axolotl_train_from_the_repository_root_noises_the_embeddings(train_example):
    run = train_example("lora")  # the default launcher, with the repository root as working directory
    assert run.returncode == 0, run.describe()
    assert "Failed to load plugin" not in run.text, run.describe()
    assert ATTACHED in run.text
    assert_near_paper_norm(run.metric("neft/noise_norm"), 5.0, rel=0.05, context=run.describe()[-2000:])
