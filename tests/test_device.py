from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch

from cifar import device
from cifar.device import cpu_has_native_bf16, default_amp

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
