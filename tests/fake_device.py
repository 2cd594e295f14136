"""A second device on a CPU-only machine, with CUDA's rules for mixing devices.

`on_fake_device()` is a dispatch mode under which `torch.device("lazy")` behaves like a
GPU that holds real values: moving a tensor there (`.to(device)`, `module.to(device)`, a
factory with `device=`) gives a `DeviceTensor` that reports device `lazy` and keeps a CPU
copy of its data underneath, so a whole training round computes real numbers. Every
operation that mixes a `DeviceTensor` with an ordinary CPU tensor fails as it would on a
GPU ("Expected all tensors to be on the same device"), except where CUDA allows it:
0-dimensional CPU tensors (scalars), CPU index tensors, and copies between devices.
`.numpy()` on a device tensor fails too, as on a GPU, so a missing `.cpu()` is caught.
Under `torch.use_deterministic_algorithms(True)` the operations that CUDA refuses then
(grid_sample's backward and the rest of its documented list) fail here as well, and
`TRANSFERS` counts the copies between the device and the host, by direction.

PyTorch's plain `meta` device cannot run a round (it has no values, so `float(loss)` or a
bincount of assignments fail, and `load_state_dict` into meta parameters does nothing);
this keeps the values and borrows the name of the `lazy` device, which every PyTorch
build knows (autograd and optimisers accept it) and which nothing in fuss-ray uses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

DEVICE = torch.device("lazy")
aten = torch.ops.aten

# Operations that move data between devices (allowed to mix, as on CUDA).
_TRANSFERS = {aten.copy_.default, aten._to_copy.default}
# Index arguments may stay on the CPU when the indexed tensor is on a GPU.
_INDEXING = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default}


# What CUDA refuses under `torch.use_deterministic_algorithms(True)` (its documented list):
# the backward passes that accumulate with atomics, and a few forward ops.
_NONDETERMINISTIC_ON_CUDA = {
    getattr(aten, name).default
    for name in (
        "grid_sampler_2d_backward",
        "grid_sampler_3d_backward",
        "upsample_bilinear2d_backward",
        "upsample_bicubic2d_backward",
        "upsample_linear1d_backward",
        "upsample_trilinear3d_backward",
        "_adaptive_avg_pool2d_backward",
        "adaptive_max_pool2d_backward",
        "avg_pool3d_backward",
        "reflection_pad1d_backward",
        "reflection_pad2d_backward",
        "reflection_pad3d_backward",
        "nll_loss2d_forward",
        "histc",
        "put_",
        "max_unpool2d",
    )
    if hasattr(aten, name)
}


# Copies between the fake device and the host, counted by direction ("to_host", "to_device")
# while the mode is on: a step loop that waits on the host shows up here.
TRANSFERS: Counter[str] = Counter()


class DeviceMismatch(RuntimeError):
    """What CUDA raises when an operation meets tensors on two devices."""


class DeviceTensor(torch.Tensor):
    """A tensor 'on the other device': reports `lazy`, computes on its CPU copy."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> DeviceTensor:
        out = torch.Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls,
            inner.size(),
            strides=inner.stride(),
            storage_offset=inner.storage_offset(),
            dtype=inner.dtype,
            layout=inner.layout,
            device=DEVICE,
            requires_grad=inner.requires_grad,
        )
        out.inner = inner
        return out  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"DeviceTensor({self.inner!r})"

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return _run(func, args, kwargs or {})


def _is_plain_cpu(x: Any) -> bool:
    return (
        isinstance(x, torch.Tensor) and not isinstance(x, DeviceTensor) and x.device.type == "cpu"
    )


def _flat(tree: Any) -> list[Any]:
    out: list[Any] = []
    tree_map(out.append, tree)
    return out


def _check(func: Any, args: Any, kwargs: Any) -> None:
    if func in _TRANSFERS:
        return
    pieces = _flat((args, kwargs))
    if not any(isinstance(x, DeviceTensor) for x in pieces):
        return
    if func in _NONDETERMINISTIC_ON_CUDA and torch.are_deterministic_algorithms_enabled():
        raise RuntimeError(
            f"{func} does not have a deterministic implementation on CUDA, but you set "
            "'torch.use_deterministic_algorithms(True)'"
        )
    candidates = pieces
    if func in _INDEXING:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", [])
        ignored = {id(i) for i in _flat(indices) if isinstance(i, torch.Tensor)}
        candidates = [x for x in pieces if id(x) not in ignored]
    for x in candidates:
        if _is_plain_cpu(x) and x.dim() > 0:
            raise DeviceMismatch(
                f"Expected all tensors to be on the same device, but found at least two "
                f"devices, lazy (the fake GPU) and cpu! ({func}, cpu tensor of shape "
                f"{tuple(x.shape)})"
            )


def _unwrap(x: Any) -> Any:
    return x.inner if isinstance(x, DeviceTensor) else x


def _count(func: Any, args: Any, kwargs: dict[str, Any]) -> None:
    """Tally a transfer: a device value read on the host, or host data copied over."""
    if func is aten._local_scalar_dense.default:
        TRANSFERS["to_host"] += 1
    elif func is aten._to_copy.default:
        target = kwargs.get("device")
        if isinstance(args[0], DeviceTensor) and target is not None and target.type == "cpu":
            TRANSFERS["to_host"] += 1
        elif _is_plain_cpu(args[0]) and target == DEVICE:
            TRANSFERS["to_device"] += 1
    elif func is aten.copy_.default:
        dst, src = args[0], args[1]
        if _is_plain_cpu(dst) and isinstance(src, DeviceTensor):
            TRANSFERS["to_host"] += 1
        elif isinstance(dst, DeviceTensor) and _is_plain_cpu(src) and src.dim() > 0:
            TRANSFERS["to_device"] += 1


def _run(func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    """Run `func` on the CPU copies; results land on the fake device if an input was there."""
    _check(func, args, kwargs)
    _count(func, args, kwargs)
    to_device = kwargs.get("device") == DEVICE or any(
        isinstance(x, DeviceTensor) for x in _flat((args, kwargs))
    )
    if func is aten._to_copy.default:
        target = kwargs.get("device")
        if target is not None and target.type == "cpu":
            to_device = False
    kwargs = {
        k: (torch.device("cpu") if k == "device" and v == DEVICE else v) for k, v in kwargs.items()
    }
    out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
    # In-place operations return their (unwrapped) first argument: hand back the wrapper.
    by_inner = {id(a.inner): a for a in _flat(args) if isinstance(a, DeviceTensor)}

    def wrap(x: Any) -> Any:
        if not isinstance(x, torch.Tensor) or isinstance(x, DeviceTensor):
            return x
        if id(x) in by_inner:
            return by_inner[id(x)]
        return DeviceTensor(x) if to_device else x

    return tree_map(wrap, out)


class _FakeDeviceMode(TorchDispatchMode):
    """Routes plain tensors headed for the device (transfers, factories) onto it."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if any(isinstance(x, DeviceTensor) for x in _flat((args, kwargs))) or (
            kwargs.get("device") == DEVICE
        ):
            return _run(func, args, kwargs)
        return func(*args, **kwargs)


@contextmanager
def on_fake_device() -> Iterator[torch.device]:
    """Within the block, `torch.device('lazy')` is a device with values and CUDA's rules."""
    with _FakeDeviceMode():
        yield DEVICE
