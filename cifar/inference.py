"""A trained model as an image classifier: normalisation, the model (with its flip TTA) and softmax in one module.

This is what ``cifar.predict`` runs and what each run logs to MLflow as its model. It takes
images as they are decoded from files and stored in the data cache, (N, 32, 32, 3) uint8, and
returns class probabilities, (N, 10) float32, in the order of :data:`cifar.data.CLASSES`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from omegaconf import OmegaConf
from torch import nn

from cifar import checkpoint
from cifar.batches import normalization
from cifar.data import CLASSES
from cifar.engine import TTA, predict_logits
from cifar.errors import CheckpointError, UserError, first_line
from cifar.files import BEST
from cifar.models import build_model

SPEC = "inference"  # in both checkpoints: what turns their weights into a Classifier
MODELS_URI = "models:/"
RUNS_URI = "runs:/"
LOGGED_MODEL_ID_PREFIX = "m-"  # MLflow's ids of logged models: models:/m-0123...
RUN_ID = re.compile(r"[0-9a-f]{32}")


class Classifier(nn.Module):
    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], tta: TTA):
        super().__init__()
        self.model = model
        self.tta = tta
        scale, shift = normalization(mean, std)  # as in training
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() * self.scale + self.shift
        return predict_logits(self.model, x, self.tta).softmax(1)


def spec(model_cfg: Any, mean: Sequence[float], std: Sequence[float], tta: TTA) -> dict[str, Any]:
    """What a checkpoint holds besides the weights so that it can classify images on its own."""
    return {
        "model": OmegaConf.to_container(model_cfg, resolve=True),
        "mean": list(mean),
        "std": list(std),
        "tta_flip": tta.flip,
        "tta_translate": tta.translate,
        "classes": list(CLASSES),
    }


def from_checkpoint(path: Path) -> Classifier:
    """The Classifier of a ``best.pt`` or ``last.pt`` (or of the run dir holding them: its best.pt), on the CPU."""
    if path.is_dir():
        from cifar.output_dirs import latest_below  # Hydra: only for a dir without its best.pt
        from cifar.tracking import sweep_near

        if not (path / BEST).exists() and (near := sweep_near(path, "--model") or
                                           latest_below(path, BEST, "run", "--model")):
            raise UserError(near)
        path = path / BEST
    try:
        state = checkpoint.load(path)
    except CheckpointError as err:
        raise UserError(f"--model {err}: give a best.pt or last.pt") from err
    if not isinstance(state, dict) or SPEC not in state:
        raise UserError(f"--model {path} is not a checkpoint of cifar.train with its model config: give a best.pt or "
                        "last.pt written by cifar.train, or an MLflow run id")
    model_spec = state[SPEC]
    model = build_model(OmegaConf.create(model_spec["model"]))
    model.load_state_dict(state["model"])
    tta = TTA(model_spec["tta_flip"], model_spec.get("tta_translate", False))  # earlier versions wrote no translate
    return Classifier(model, model_spec["mean"], model_spec["std"], tta).eval()


def load(source: str, tracking_uri: str | None = None) -> nn.Module:
    """The classifier at ``source``: a checkpoint path, an MLflow run id, or a ``models:/``/``runs:/`` URI.

    A run id gives the model the run logged, or, for a run that logged none, the ``best.pt`` in its
    output dir. A sweep, by its dir or its parent run's id, gives its best job's. MLflow sources come from
    ``tracking_uri`` (default: ``MLFLOW_TRACKING_URI``, then a sweep dir's own store, then ``sqlite:///mlflow.db``).
    """
    run_id, sweep = run_named_by(source)
    if run_id is None and Path(source).exists():
        return from_checkpoint(Path(source))
    if not (run_id or source.startswith((MODELS_URI, RUNS_URI))):
        raise UserError(f"--model {source} is not a checkpoint file, an MLflow run id or a models:/NAME/VERSION "
                        "URI: check the path or id")
    from cifar.tracking import chosen_store, existing_store  # Hydra and the Optuna sweeper: for MLflow sources only

    tracking_uri = existing_store(chosen_store(tracking_uri, sweep))
    if run_id is None:
        return _load_logged(source, tracking_uri)
    return _load_run(run_id, tracking_uri, f"{source} (the sweep of MLflow parent run {run_id})" if sweep else run_id)


def run_named_by(source: str) -> tuple[str | None, dict | None]:
    """The MLflow run id that ``--model`` ``source`` gives (a run's id, or a sweep's dir: its parent run's), and the
    sweep of such a dir; None for another path (a checkpoint) or a URI."""
    path = Path(source)
    if (sweep := _sweep_in(path)) is not None:
        return sweep["parent_run_id"], sweep
    return (source if RUN_ID.fullmatch(source) and not path.exists() else None), None


def best_job(run, named: str) -> str | None:
    """The id of the best job of ``run`` where it is a sweep's parent run; None for another run."""
    from cifar.tracking import BEST_RUN_TAG, SWEEP_DIR_TAG

    if SWEEP_DIR_TAG not in run.data.tags:
        return None
    if (job := run.data.tags.get(BEST_RUN_TAG)) is None:
        raise UserError(f"--model {named}: the sweep has no best job (it still runs, or none of its jobs "
                        "finished): give one of its jobs' run ids")
    return job


def _sweep_in(path: Path) -> dict | None:
    """The sweep whose dir ``path`` is (:func:`cifar.tracking.read_sweep`), None for any other path."""
    if not path.is_dir() or (path / BEST).exists():
        return None
    from cifar.tracking import read_sweep

    return read_sweep(path)


def _load_logged(uri: str, tracking_uri: str) -> nn.Module:
    import mlflow

    from cifar.tracking import store_errors

    try:
        # MLflow copies a model it does not find as a local file (runs:/ URIs, remote artifact stores)
        # into a new temp dir that it never removes; the loaded model no longer needs its files.
        with tempfile.TemporaryDirectory(prefix="cifar-model-") as download, _global_store(tracking_uri):
            return mlflow.pytorch.load_model(uri, dst_path=download, map_location="cpu")  # an exported graph: eval mode
    except (*store_errors(), OSError) as err:
        raise UserError(f"--model {uri} cannot be loaded from {tracking_uri} ({first_line(err)}): {_fix_for(uri)}, "
                        "or --tracking-uri") from err


@contextlib.contextmanager
def _global_store(tracking_uri: str) -> Iterator[None]:
    """MLflow's global store (tracking and registry) set to ``tracking_uri`` within, for ``load_model``, which reads
    it, and unset after. Setting it sets ``MLFLOW_TRACKING_URI`` too, which then chose the store of the next
    ``--model``: a sweep dir's own store was left unread."""
    import mlflow

    from cifar.tracking import STORE_VAR

    variables = {name: os.environ.get(name) for name in (STORE_VAR, "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _fix_for(uri: str) -> str:
    """What to check in a ``runs:/`` or ``models:/`` URI that MLflow did not find. ``models:/NAME`` alone is a
    logged model's id to MLflow ("Logged model with ID 'NAME' not found"): a registered name needs its version."""
    if uri.startswith(RUNS_URI):
        return "check the run id"
    name = uri.removeprefix(MODELS_URI)
    if not any(mark in name for mark in "/@") and not name.startswith(LOGGED_MODEL_ID_PREFIX):
        return f"give a registered model's version too, as {uri}/1, {uri}/latest or {uri}@ALIAS"
    return "check the name and version"


def _load_run(run_id: str, tracking_uri: str, named: str) -> nn.Module:
    """The model logged by run ``run_id``, else the best.pt in its output dir; a sweep's parent run's best job's.
    ``named``: the run as the user gave it, in errors."""
    from mlflow.tracking import MlflowClient

    from cifar.registry import logged_model_uri  # it imports this module
    from cifar.tracking import BEST_CHECKPOINT_TAG, OUTPUT_DIR_TAG, existing_run, store_errors, unreadable_store
    from cifar.dvc_exp import EXP_NAME_TAG
    from cifar.versioning import file_md5

    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        run = existing_run(client, run_id)
    except store_errors() as err:
        raise UserError(f"--model {named}: {unreadable_store(tracking_uri, err)}") from err
    if run is None:
        raise UserError(f"--model {named}: no such MLflow run in {tracking_uri}: check the id, "
                        "or --tracking-uri / MLFLOW_TRACKING_URI")
    if (job := best_job(run, named)) is not None:
        return _load_run(job, tracking_uri, job)
    model_uri = logged_model_uri(client, run.info.experiment_id, run_id)
    if model_uri is not None:
        return _load_logged(model_uri, tracking_uri)
    output_dir = run.data.tags.get(OUTPUT_DIR_TAG)
    best = Path(output_dir) / BEST if output_dir else None
    experiment = run.data.tags.get(EXP_NAME_TAG)  # a DVC experiment's run: DVC keeps its best.pt
    restore = f"restore it with dvc exp apply {experiment}" if experiment else None
    if best is None or not best.exists():
        where = f"{restore} (or give its path)" if restore else "give its path"
        raise UserError(f"--model {named}: the run logged no model and its best.pt is not on this machine: {where}, "
                        "or train with mlflow.log_model=true")
    trained = run.data.tags.get(BEST_CHECKPOINT_TAG)  # absent for a run stopped before it ended
    if trained is not None and file_md5(best) != trained:
        raise UserError(f"--model {named}: the run logged no model, and {best} is no longer the one it trained "
                        f"(another run into the same dir, or a dvc checkout, wrote over it): "
                        f"{restore or 'train the run again'}, or train with mlflow.log_model=true to keep its "
                        "model in MLflow")
    return from_checkpoint(best)
