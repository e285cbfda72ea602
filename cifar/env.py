"""``python -m cifar.env [OVERRIDES...]``: can this machine train? Versions, devices, data and a test step.

    python -m cifar.env                          # the default config: trainer.device=auto, data/raw
    python -m cifar.env trainer.device=cuda data.path=/data/cifar10

Prints the versions of Python and the stack, the devices torch finds, whether the configured
data and its decoded cache are present, the MLflow store and, for an Optuna sweep
(``hparams_search=...``), the study storage, with whether their database drivers are installed
and their servers answer, then runs a small matmul and one training step of the configured model
on the configured device, and ends with a verdict. Exits 1 when something required is missing or fails
(a package, the device, the data with data.download=false, a store's driver or server).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

# The stack, by distribution name; alternatives (mlflow-skinny on slim images) after a "|".
PACKAGES = ("torch", "torchvision", "hydra-core", "hydra-optuna-sweeper", "omegaconf", "optuna",
            "mlflow|mlflow-skinny", "dvc")
# What training does without (a GPU node that only trains, say): a warning where they are missing.
OPTIONAL = {"dvc": "the data pipeline (dvc repro, dvc exp run)"}
OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    topic: str
    status: str  # OK, WARN or FAIL
    detail: str


def package_versions() -> list[Check]:
    checks = []
    for names in PACKAGES:
        for name in names.split("|"):
            try:
                checks.append(Check(name, OK, importlib.metadata.version(name)))
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        else:
            name = names.split("|")[0]
            if name in OPTIONAL:
                checks.append(Check(name, WARN, f"not installed: only {OPTIONAL[name]} needs it (`uv sync`)"))
            else:
                checks.append(Check(name, FAIL, "not installed: run `uv sync`"))
    return checks


def torchvision_ops() -> Check:
    """torchvision's compiled ops load only with the torch build they were made for."""
    import torch
    import torchvision

    try:
        torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except (RuntimeError, AttributeError) as err:
        return Check("torchvision ops", FAIL, f"{err}: install the torchvision that matches torch {torch.__version__}")
    return Check("torchvision ops", OK, f"load with torch {torch.__version__}")


def torch_bytecode_path() -> Path:
    """Where Python looks for the bytecode of torch's ``__init__`` (``sys.pycache_prefix`` included)."""
    return Path(importlib.util.cache_from_source(importlib.util.find_spec("torch").origin))


def torch_bytecode_cached() -> bool:
    return torch_bytecode_path().exists()


def bytecode() -> Check:
    """Whether a run starts from torch's cached bytecode or compiles the stack's sources again."""
    if torch_bytecode_cached():
        return Check("bytecode", OK, "cached (runs start without compiling the stack's sources)")
    if sys.dont_write_bytecode:
        return Check("bytecode", WARN, "none cached, and PYTHONDONTWRITEBYTECODE keeps Python from writing it: "
                                       "every run compiles the stack's sources again (about 10 s on 2 cores); "
                                       "run `uv sync --compile-bytecode`")
    return Check("bytecode", OK, "not cached yet: Python writes it on the first run")


def devices(threads: int | None, hydra_cfg) -> list[Check]:
    """The CPU, with the torch threads of a run with ``trainer.threads=threads`` (failed where a run would refuse
    them), and the accelerators."""
    import torch

    from cifar.device import cpu_has_native_bf16, torch_default_threads
    from cifar.errors import ConfigError
    from cifar.parallel import check_threads, cpu_cores, threads_per_job

    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16 (amp off by default)"
    run_threads = threads or threads_per_job(hydra_cfg, torch_default_threads())
    cores = cpu_cores()
    cpu = f"{_cpu_name()}: {cores} core{'s' * (cores != 1)}, {run_threads} torch threads, {bf16}"
    try:
        check_threads(threads)
        checks = [Check("CPU", OK, cpu)]
    except ConfigError as err:
        checks = [Check("CPU", FAIL, f"{cpu}: {err}")]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            checks.append(Check(f"cuda:{index}", OK, f"{props.name} (compute capability {props.major}.{props.minor}), "
                                                     f"{props.total_memory / 2**30:.1f} GiB, {_gpu_amp(index)}"))
    else:
        checks.append(Check("CUDA", OK, f"not available (torch {torch.__version__})"))
    checks.append(Check("MPS", OK, "available" if torch.backends.mps.is_available() else "not available"))
    return checks


def _gpu_amp(index: int) -> str:
    """What autocast computes in on CUDA GPU ``index`` by default (:func:`cifar.device.default_amp`)."""
    import torch

    from cifar.device import amp_dtype, default_amp

    gpu = torch.device("cuda", index)
    if not default_amp(gpu):
        return "no native bf16 nor fp16 tensor cores (amp off by default)"
    if amp_dtype(gpu) == torch.float16:
        return "no native bf16: amp in fp16, with loss scaling"
    return "native bf16"


def _cpu_name() -> str:
    """The CPU's model name where Linux tells it, else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def data_presence(cfg_data) -> list[Check]:
    """The configured source and its decoded cache, and the run's split of it where it is decoded; missing
    data fails only where it will not be downloaded."""
    from cifar.data import cache_file_for, locate_source
    from cifar.errors import DataError

    path = Path(cfg_data.path)
    if path.suffix == ".npz":
        if not path.is_file():
            return [Check("data", FAIL, f"{path} does not exist: run `dvc repro prepare` or point data.path at the "
                                        "raw data")]
        return [Check("data", OK, f"decoded file {path}"), split(cfg_data)]
    try:
        source = locate_source(path, download=False)
    except DataError as err:
        if cfg_data.download:
            return [Check("data", WARN, f"no data in {path}: the first run downloads it (data.download=true)")]
        return [Check("data", FAIL, str(err))]
    cache = cache_file_for(source, cfg_data.cache_dir)
    if not cache.exists():
        return [Check("data", OK, f"source {source}"),
                Check("cache", WARN, f"{cache} not decoded yet: the first run decodes it once")]
    return [Check("data", OK, f"source {source}"), Check("cache", OK, f"{cache}"), split(cfg_data)]


def split(cfg_data) -> Check:
    """The images that a run trains, validates and tests on, read from the decoded data (called only where it is
    decoded: decoding is the first run's job); a split that :func:`cifar.data.check_split` refuses fails."""
    from cifar.data import load_cifar10, split_indices
    from cifar.errors import UserError

    try:
        data = load_cifar10(cfg_data.path, cfg_data.cache_dir, download=False)
        train, val, test = split_indices(len(data.train_labels), len(data.test_labels), cfg_data, seed=0)
    except UserError as err:
        return Check("split", FAIL, str(err))
    return Check("split", OK, f"{len(train):,} train / {len(val):,} validation / {len(test):,} test images")


def tracking_store(cfg_mlflow) -> list[Check]:
    """The MLflow store that runs log to, with its driver and whether its server answers, and where it is a
    SQLite file that exists, the run's experiment in it. A new SQLite file is not opened (that would create it),
    nor a server's store (that would need its credentials)."""
    from cifar.stores import sqlite_file
    from cifar.tracking import store_uri

    uri = store_uri(cfg_mlflow)
    store = _store("MLflow store", uri)
    database = sqlite_file(uri)
    if store.status == FAIL or database is None or not database.exists():
        return [store]
    return [store, experiment(uri, cfg_mlflow.experiment)]


def experiment(uri: str, name: str) -> Check:
    """The experiment ``name`` in the store ``uri``: failed where a run would refuse it (deleted) or could not
    read it (a database that MLflow must upgrade first, say)."""
    from mlflow.tracking import MlflowClient

    from cifar.errors import ConfigError, first_line
    from cifar.tracking import refuse_deleted

    try:
        found = MlflowClient(uri).get_experiment_by_name(name)
        if found is None:
            return Check("experiment", OK, f"{name}: new, made by the first run")
        refuse_deleted(found, uri)
    except ConfigError as err:
        return Check("experiment", FAIL, str(err))
    except Exception as err:  # stores fail with many error types (sqlalchemy, MLflow, OS)
        return Check("experiment", FAIL, f"{name} cannot be read from {uri} ({type(err).__name__}: {first_line(err)})")
    return Check("experiment", OK, f"{name} (id {found.experiment_id})")


def study_storage(hydra_cfg) -> list[Check]:
    """The study storage of an Optuna sweep (``hparams_search=...``); none for other configs."""
    from cifar.sweeper import is_optuna_sweep, storage_url

    if not is_optuna_sweep(hydra_cfg):
        return []
    if hydra_cfg.sweeper.storage is None:
        return [Check("Optuna storage", OK, "a SQLite file in the sweep dir (hydra.sweeper.storage not set)")]
    return [_store("Optuna storage", storage_url(hydra_cfg.sweeper.storage, hydra_cfg.sweep.dir))]


def _store(topic: str, url: str) -> Check:
    """``url``, its password left out, failed where its database driver is not installed or its server
    does not answer."""
    from cifar.credentials import without_passwords
    from cifar.stores import unusable

    if reason := unusable(url):
        return Check(topic, FAIL, f"{without_passwords(url)}: {reason}")
    return Check(topic, OK, without_passwords(url))


def timed(topic: str, run: Callable[[], str]) -> Check:
    start = time.perf_counter()
    try:
        detail = run()
    except Exception as err:  # any failure of the device or the stack is the finding
        return Check(topic, FAIL, f"{type(err).__name__}: {err}")
    return Check(topic, OK, f"{detail} ({time.perf_counter() - start:.2f} s)")


def matmul(device) -> str:
    """A 256x256 matmul on ``device``, checked against the CPU's result."""
    import torch

    a, b = torch.randn(256, 256), torch.randn(256, 256)
    result = (a.to(device) @ b.to(device)).cpu()
    if not torch.allclose(result, a @ b, rtol=1e-2, atol=1e-2):
        raise RuntimeError(f"the result on {device} differs from the CPU's")
    return f"on {device}"


def training_step(cfg) -> str:
    """One training step of the configured model on random images, with the run's settings: the runs' own
    (:func:`cifar.engine.train_epoch`, on one batch)."""
    import torch

    from cifar.batches import Normalizer
    from cifar.device import make_runtime
    from cifar.engine import train_epoch
    from cifar.models import build_model
    from cifar.optim import build_optimizer

    runtime = make_runtime(cfg.trainer.device, cfg.trainer.amp, cfg.trainer.channels_last, False, None)
    model = build_model(cfg.model).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optimizer, model, runtime.device)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, device=runtime.device)
    labels = torch.randint(0, 10, (8,), device=runtime.device)
    normalize = Normalizer.from_stats((0.5,) * 3, (0.25,) * 3, runtime.device, runtime.channels_last)
    step = train_epoch(model, [(images, labels)], normalize, optimizer, None, torch.nn.CrossEntropyLoss(), runtime,
                       runtime.grad_scaler(), max_grad_norm=cfg.trainer.grad_clip_norm)  # a NaN loss: DivergedError
    return (f"{cfg.model.name}, batch 8, on {runtime.device} (amp={runtime.amp_name}, "
            f"channels_last={runtime.channels_last}): loss {step.loss:.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar.env", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides, as for cifar.train")
    args = parser.parse_args(argv)

    from cifar.config import compose_with_hydra
    from cifar.errors import UserError
    from cifar.train import USER_ERRORS, describe

    checks = [Check("Python", OK, f"{platform.python_version()} ({sys.executable})"), *package_versions()]
    _print(checks)
    if any(c.status == FAIL for c in checks):
        return _verdict(checks, None)
    try:
        cfg, hydra_cfg = compose_with_hydra(args.overrides)
    except USER_ERRORS as err:
        print(f"cifar.env: error: {describe(err, sweeps=False)}", file=sys.stderr)
        return 2
    from cifar.device import resolve_device

    more = [torchvision_ops(), bytecode(), *devices(cfg.trainer.threads, hydra_cfg), *data_presence(cfg.data),
            *tracking_store(cfg.mlflow), *study_storage(hydra_cfg)]
    try:
        device = resolve_device(cfg.trainer.device)
    except UserError as err:
        more.append(Check("device", FAIL, str(err)))
        device = None
    if device is not None:
        more += [timed("matmul", lambda: matmul(device)), timed("training step", lambda: training_step(cfg))]
    _print(more)
    return _verdict(checks + more, device)


def _print(checks: list[Check]) -> None:
    for check in checks:
        print(f"{check.status:>4}  {check.topic:<21} {check.detail}")


def _verdict(checks: list[Check], device) -> int:
    failed = [c.topic for c in checks if c.status == FAIL]
    if failed:
        print(f"\nNOT READY: {', '.join(failed)} failed (see above)")
        return 1
    warned = [c.topic for c in checks if c.status == WARN]
    print(f"\nREADY to train on {device}" + (f" ({', '.join(warned)}: see above)" if warned else ""))
    return 0


if __name__ == "__main__":
    from cifar.errors import exit_with_status_of

    exit_with_status_of(main)
