"""Train the TransformerRegressor with FlashAttention on packed hits, in bf16 on CUDA.

The same CLI and the same training loop as ``training.py``; only two defaults differ:
``--attention flash`` (varlen FlashAttention on packed hits, no padding; the exact SDPA
fallback with a one-line notice where no kernel can run) and ``--precision bf16``
(autocast on CUDA; fp32 on a CPU). Multi-GPU: ``torchrun --nproc_per_node=4
training_flash.py ...``. See ``script_train.sh`` for examples.
"""

from __future__ import annotations

from data_processing.errors import run_cli
from training import TrainConfig, main

FLASH_DEFAULTS = TrainConfig(attention="flash", precision="bf16")

if __name__ == "__main__":
    run_cli(lambda argv: main(argv, defaults=FLASH_DEFAULTS))
