from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch

from cifar import device
from cifar.device import Runtime, cpu_has_native_bf16, default_amp

CPU = torch.device("cpu")


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(platform.machine() != "x86_64" or not Path("/proc/cpuinfo").exists(),
                    reason="reads the x86 CPU flags of Linux")
def test_native_bf16_is_what_the_cpu_flags_say():
    flags = _cpu_flags()
    assert cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)
    assert default_amp(CPU) == cpu_has_native_bf16()


def _simulate(monkeypatch, machine: str, onednn_bf16: bool, avx512_bf16: bool = False, amx: bool = False) -> None:
    monkeypatch.setattr(device.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn_bf16)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


def test_plain_avx512_cpus_train_in_fp32_though_onednn_would_emulate_bf16(monkeypatch):
    _simulate(monkeypatch, "x86_64", onednn_bf16=True)  # Skylake to Ice Lake: AVX-512 BW/VL/DQ, no BF16
    assert not default_amp(CPU)


@pytest.mark.parametrize("avx512_bf16, amx", [(True, False), (False, True), (True, True)])
def test_x86_cpus_with_bf16_instructions_train_in_bf16(monkeypatch, avx512_bf16, amx):
    _simulate(monkeypatch, "x86_64", onednn_bf16=True, avx512_bf16=avx512_bf16, amx=amx)
    assert default_amp(CPU)


@pytest.mark.parametrize("onednn_bf16", [True, False])
def test_arm_cpus_follow_onednn_which_checks_the_bf16_extension(monkeypatch, onednn_bf16):
    _simulate(monkeypatch, "aarch64", onednn_bf16=onednn_bf16)
    assert default_amp(CPU) == onednn_bf16


def _gpu(monkeypatch, capability: tuple[int, int], hip: str | None = None) -> torch.device:
    """A CUDA GPU of ``capability`` as torch would report it (``hip``: a ROCm build's version)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.version, "hip", hip)
    return torch.device("cuda", 0)


@pytest.mark.parametrize("capability", [(8, 0), (8, 9), (9, 0), (10, 0)])
def test_gpus_with_native_bf16_autocast_in_bf16(monkeypatch, capability):
    gpu = _gpu(monkeypatch, capability)  # A100, RTX 40xx, H100, B200
    runtime = Runtime(gpu, amp=default_amp(gpu), channels_last=True, amp_dtype=device.amp_dtype(gpu))
    assert runtime.amp and runtime.amp_dtype == torch.bfloat16 and runtime.amp_name == "bf16"


@pytest.mark.parametrize("capability", [(7, 0), (7, 5)])
def test_gpus_that_only_emulate_bf16_autocast_in_fp16(monkeypatch, capability):
    """V100 and T4 (Colab's) have fp16 tensor cores; torch.cuda.is_bf16_supported() says yes for them too, but
    cuDNN has no bf16 convolutions there: before, training on them in bf16 failed or crawled."""
    gpu = _gpu(monkeypatch, capability)
    runtime = Runtime(gpu, amp=default_amp(gpu), channels_last=True, amp_dtype=device.amp_dtype(gpu))
    assert runtime.amp and runtime.amp_dtype == torch.float16 and runtime.amp_name == "fp16"


def test_older_gpus_train_in_fp32_unless_told_and_amd_gpus_in_bf16(monkeypatch):
    gpu = _gpu(monkeypatch, (6, 1))  # Pascal: a GTX 1080 runs fp16 at a fraction of fp32's rate
    assert not default_amp(gpu) and device.amp_dtype(gpu) == torch.float16  # with trainer.amp=true
    assert Runtime(gpu, amp=False, channels_last=True, amp_dtype=torch.float16).amp_name == "off"
    gpu = _gpu(monkeypatch, (9, 0), hip="6.4")  # an MI300X, as ROCm reports it
    assert default_amp(gpu) and device.amp_dtype(gpu) == torch.bfloat16
    assert device.amp_dtype(CPU) == torch.bfloat16


@pytest.mark.parametrize("dtype, scaled", [(torch.float16, True), (torch.bfloat16, False)])
def test_only_fp16_autocast_scales_the_loss(dtype, scaled):
    assert Runtime(CPU, amp=True, channels_last=False, amp_dtype=dtype).grad_scaler().is_enabled() == scaled
    assert not Runtime(CPU, amp=False, channels_last=False, amp_dtype=dtype).grad_scaler().is_enabled()
