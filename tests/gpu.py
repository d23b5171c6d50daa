"""Running one test body on the CPU and, where there is one, on a CUDA GPU (the `gpu` marker)."""

import pytest
import torch

CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])
DEVICES = ["cpu", CUDA]


def on(device: str) -> list[str]:
    """train.py overrides for a run on device (after conftest.FAST, which says cpu)."""
    return ["trainer=gpu", "trainer.accelerator=gpu", "trainer.devices=1"] if device == "cuda" else ["trainer.accelerator=cpu"]
