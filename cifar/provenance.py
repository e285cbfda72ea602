"""Where a model given by ``--model`` comes from: the MLflow run that trained it, and the data it trained on.

``cifar.evaluate`` names each model by its run and, without ``--data``, scores it on the data it trained on. The
run is the one given by its id, a sweep's (its best job), or the one that logged a ``runs:/`` or ``models:/`` URI's
model; a checkpoint file's is not looked up, which would cost a search of the MLflow store. The data is
``data.path`` (and ``data.cache_dir``) of the run's output dir's ``.hydra/config.yaml``, from the folder the run
started in (``.hydra/hydra.yaml``), where it is on this machine: the checkpoint's own dir, or the dir that a run's
``hydra.output_dir`` tag names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cifar.inference import MODELS_URI, RUNS_URI, best_job, run_named_by

HYDRA_DIR = ".hydra"  # in a run's output dir: the config it ran (config.yaml) and Hydra's own (hydra.yaml)


@dataclass(frozen=True)
class TrainingData:
    path: Path  # the source, as data.path gives it, absolute
    cache_dir: Path


@dataclass(frozen=True)
class Provenance:
    run_name: str | None = None  # the MLflow run that trained the model
    data: TrainingData | None = None  # what it trained on, where this machine has it


def provenance(source: str, tracking_uri: str | None = None) -> Provenance:
    """Where the model that :func:`cifar.inference.load` gives for ``source`` (which it has loaded) comes from."""
    run_id, sweep = run_named_by(source)
    logged = run_id is None and source.startswith((MODELS_URI, RUNS_URI))
    if run_id is None and not logged:
        path = Path(source)
        return Provenance(data=training_data(path if path.is_dir() else path.parent)) if path.exists() else Provenance()
    from mlflow.tracking import MlflowClient  # for an MLflow source only, which has imported them

    from cifar.tracking import OUTPUT_DIR_TAG, chosen_store, existing_run

    store = chosen_store(tracking_uri, sweep)
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    if logged and not (run_id := _run_that_logged(client, source)):
        return Provenance()
    if (run := existing_run(client, run_id)) is None:  # a URI's run, deleted for good (mlflow gc): its model stays
        return Provenance()
    if (job := best_job(run, source)) is not None:
        run = client.get_run(job)
    output_dir = run.data.tags.get(OUTPUT_DIR_TAG)
    return Provenance(run.info.run_name, training_data(Path(output_dir)) if output_dir else None)


def _run_that_logged(client, uri: str) -> str | None:
    """The id of the run that logged the model of a ``runs:/`` or ``models:/`` URI (a registered version, by its
    number, alias, stage or ``latest``, or a logged model's id); None (or "") for a version registered from no run."""
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    if uri.startswith(RUNS_URI):
        return RunsArtifactRepository.parse_runs_uri(uri)[0]
    match get_model_name_and_version(client, uri):
        case (model_id,):
            return client.get_logged_model(model_id).source_run_id
        case (name, version):
            return client.get_model_version(name, version).run_id


def training_data(run_dir: Path) -> TrainingData | None:
    """The data that the run in ``run_dir`` trained on, where its config says so and the data is on this machine."""
    try:
        config = OmegaConf.load(run_dir / HYDRA_DIR / "config.yaml")
        started_in = Path(OmegaConf.load(run_dir / HYDRA_DIR / "hydra.yaml").hydra.runtime.cwd)
        data = TrainingData(started_in / config.data.path, started_in / config.data.cache_dir)
    except (OSError, OmegaConfBaseException, TypeError):  # no such files, or not a run's; a key unset or unresolved
        return None
    return data if data.path.exists() else None
