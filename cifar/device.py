"""Device choice and the per-device speed settings (autocast in bf16 or fp16, channels_last, threads)."""

from __future__ import annotations

import contextlib
import functools
import platform
import warnings
from dataclasses import dataclass

import torch

from cifar.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp: bool
    channels_last: bool
    compile: bool = False
    amp_dtype: torch.dtype = torch.bfloat16  # float16 on CUDA GPUs without native bf16 (:func:`amp_dtype`)

    @property
    def amp_name(self) -> str:
        """``trainer.amp`` as the logs say it: bf16, fp16 or off."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype] if self.amp else "off"

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Scales the loss up before the backward pass, so that small float16 gradients do not flush to zero, and
        skips the steps whose gradients overflow; passes everything through unless autocast is in float16 (bf16
        has float32's range)."""
        enabled = self.amp and self.amp_dtype == torch.float16
        if enabled:  # a skipped step leaves the optimizer unstepped; the schedule goes on, a step a batch, as planned
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")
        return torch.amp.GradScaler(self.device.type, enabled=enabled)


def resolve_device(name: str, job_slot: int = 0, setting: str = "trainer.device") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else is taken as a torch device name.

    The GPUs are those CUDA_VISIBLE_DEVICES shows (a cluster scheduler's share of the machine);
    with several, ``auto`` gives jobs that run at once here each their own: GPU ``job_slot``
    (modulo their number). ``setting`` names the option in errors.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", job_slot % torch.cuda.device_count())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{setting}={name} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu" and device.index is not None:  # torch takes it, then cannot load what it saved
        raise ConfigError(f"{setting}={name} numbers the CPU, which torch sees as one device of all its cores "
                          f"(checkpoints saved on {name} would not load): use {setting}=cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting}={name} but CUDA is not available here: use {setting}=auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= (count := torch.cuda.device_count()):
        shown = "1 GPU, cuda:0" if count == 1 else f"{count} GPUs, cuda:0 to cuda:{count - 1}"
        raise ConfigError(f"{setting}={name} but this machine shows {shown} (numbered as CUDA_VISIBLE_DEVICES "
                          f"lists them): use one of those, or {setting}=auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{setting}={name} but MPS is not available here: use {setting}=auto or cpu")
    return device


def cpu_has_native_bf16() -> bool:
    """True where the CPU has bf16 instructions: AVX-512 BF16 or AMX on x86, Arm's BF16 extension.

    oneDNN's own check (``_is_mkldnn_bf16_supported``) also passes on x86 CPUs with plain AVX-512
    (Skylake to Ice Lake), where it emulates bf16: simplecnn then trained at half fp32's speed.
    On Arm that check does mean the BF16 instructions.
    """
    if platform.machine().lower() in ("x86_64", "amd64"):
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_has_native_bf16(device: torch.device) -> bool:
    """True for NVIDIA GPUs of compute capability 8.0 and up (Ampere: A100, RTX 30xx, and later) and AMD GPUs.

    ``torch.cuda.is_bf16_supported()`` also says yes for older NVIDIA GPUs (T4, V100), which only emulate bf16:
    cuDNN has no bf16 convolutions for them, and bf16 matrix products run slower than float32's.
    """
    return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8


def cuda_has_fp16_tensor_cores(device: torch.device) -> bool:
    """True from compute capability 7.0 (Volta: V100; Turing: T4, RTX 20xx): float16 products on tensor cores."""
    return torch.cuda.get_device_capability(device)[0] >= 7


def amp_dtype(device: torch.device) -> torch.dtype:
    """What autocast computes in: bf16, but float16 on CUDA GPUs without native bf16 (with a gradient scaler,
    :meth:`Runtime.grad_scaler`)."""
    if device.type == "cuda" and not cuda_has_native_bf16(device):
        return torch.float16
    return torch.bfloat16


def default_amp(device: torch.device) -> bool:
    """Autocast where it pays: CUDA GPUs with native bf16 or float16 tensor cores, CPUs with native bf16 (measured
    in bench/)."""
    if device.type == "cuda":
        return cuda_has_native_bf16(device) or cuda_has_fp16_tensor_cores(device)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def default_channels_last(device: torch.device) -> bool:
    """channels_last measured faster for these conv nets on CUDA and on the CPU (oneDNN)."""
    return device.type in ("cuda", "cpu")


def default_compile(device: torch.device) -> bool:
    """torch.compile pays on CUDA; on the CPU it measured 0.8x eager for simplecnn, after 38 s of compiling."""
    return device.type == "cuda"


def default_eval_batch_size(device: torch.device) -> int:
    """Evaluation batches: on the CPU, 128 evaluated simplecnn 2.3x faster than 1024 (activations that
    fit in cache; resnet18 alike at any size); on accelerators, large batches."""
    return 128 if device.type == "cpu" else 1024


@functools.cache
def torch_default_threads() -> int:
    """The threads that torch takes unless told (OMP_NUM_THREADS, else the cores of the affinity), as it had them
    before :func:`make_runtime` first set them in this process: each job of a sweep run here sets its own."""
    return torch.get_num_threads()


def make_runtime(
    device_name: str, amp: bool | None, channels_last: bool | None, compile: bool | None, threads: int | None,
    job_slot: int = 0,
) -> Runtime:
    """The device and its speed settings; each ``None`` setting takes the device's default (``threads``: torch's
    threads as they are)."""
    device = resolve_device(device_name, job_slot)
    if threads is not None:
        torch_default_threads()  # read before it is set
        torch.set_num_threads(threads)
    return Runtime(
        device=device,
        amp=default_amp(device) if amp is None else amp,
        channels_last=default_channels_last(device) if channels_last is None else channels_last,
        compile=default_compile(device) if compile is None else compile,
        amp_dtype=amp_dtype(device),
    )

