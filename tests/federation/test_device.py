"""Where clients train, and the GPU memory cap of actors that share a GPU (mocked CUDA)."""

import pytest
import torch

from fuss_ray.errors import UserError
from fuss_ray.federation.client import training_device


def test_auto_uses_the_cpu_when_no_gpu_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device("auto", 0.25, None) == torch.device("cpu")
    assert training_device("cpu", 1.0, None) == torch.device("cpu")


def test_asking_for_cuda_without_a_gpu_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"federation\.device: 'cuda' but this process sees no GPU"):
        training_device("cuda", 0.0, None)


@pytest.mark.parametrize(
    ("num_gpus", "fraction", "cap"),
    [(0.25, None, 0.25), (0.125, None, 0.125), (1.0, None, None), (0.5, 0.3, 0.3), (2.0, 0.9, 0.9)],
)
def test_a_shared_gpu_caps_each_process_at_its_share(
    monkeypatch: pytest.MonkeyPatch, num_gpus: float, fraction: float | None, cap: float | None
) -> None:
    calls: list[tuple[float, int]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, d))
    )
    assert training_device("auto", num_gpus, fraction) == torch.device("cuda", 0)
    assert calls == ([] if cap is None else [(cap, 0)])
