"""Using a trained model: cifar.predict on files, the logged MLflow model, the registry, and diagnostics.

One run (module fixture) trains on the fake data with everything on: model logged and registered,
flip and translate TTA, EMA, diagnostics at epoch 2. The tests read what it left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import ANY

import numpy as np
import pytest
import torch
from PIL import Image

from cifar import engine, evaluate, inference, predict
from cifar.batches import Normalizer
from cifar.credentials import without_passwords
from cifar.data import CLASSES, load_cifar10
from cifar.device import make_runtime
from cifar.engine import TTA
from cifar.provenance import provenance
from tests import fakedata
from tests.conftest import (
    FAST, REFUSING_DATABASE, all_runs, assert_tags_are_the_runs_own, client_for, sweep_parent_and_children,
    unlistable, unreadable_database, with_overrides,
)

MODEL_NAME = "predict-tests"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, official_dir):
    """A run that logged and registered its model, in a store of its own: where the module's tests do not run
    one after another (a run of the tests in another order), the fixture is made again, as the first time."""
    tmp = tmp_path_factory.mktemp("trained")
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    overrides = with_overrides(FAST, (
        f"data.path={official_dir}", f"data.cache_dir={tmp / 'cache'}", f"hydra.run.dir={tmp / 'run'}",
        "mlflow.experiment=predict-tests", "mlflow.log_model=true", "mlflow.register_model=true",
        f"mlflow.model_name={MODEL_NAME}", "trainer.tta_flip=true", "trainer.tta_translate=true",
        "trainer.ema_decay=0.9",
        "diagnostics=all", "diagnostics.epochs=[2]", "diagnostics.samples=16",
    ))
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    subprocess.run([sys.executable, "-m", "cifar.train", *overrides], cwd=tmp, env=env, check=True,
                   capture_output=True, timeout=600)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("predict-tests")
    (run,) = client.search_runs([experiment.experiment_id])
    data = load_cifar10(official_dir, tmp / "cache", download=False)
    return SimpleNamespace(run=run, client=client, checkpoint=tmp / "run" / "best.pt", data=data,
                           tracking_uri=tracking_uri, folder=tmp / "images",
                           images=_image_files(tmp / "images", data.test_images))


def _image_files(folder: Path, images: np.ndarray) -> list[Path]:
    """The test images as PNG files, the first in a subfolder (folders are searched recursively)."""
    (folder / "sub").mkdir(parents=True)
    paths = [folder / ("sub" if i == 0 else "") / f"{i:03d}.png" for i in range(len(images))]
    for path, image in zip(paths, images):
        Image.fromarray(image).save(path)
    return sorted(paths)


def _predict(capsys, *args: str) -> tuple[int, str, str]:
    code = predict.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _json_lines(out: str) -> dict[str, dict]:
    return {row["path"]: row for row in map(json.loads, out.splitlines())}


def test_predictions_are_the_runs_own_evaluation_of_the_same_images(trained, capsys):
    """Files decoded, normalised and classified (with the run's TTA) as the run scored its test set."""
    code, out, _ = _predict(capsys, str(trained.folder), "--model", str(trained.checkpoint), "--json")
    assert code == 0
    rows = _json_lines(out)
    assert sorted(rows) == sorted(map(str, trained.images))

    expected = _runs_own_predictions(trained.checkpoint, trained.data.test_images, trained.data.test_labels,
                                     trained.data)
    by_index = {int(Path(path).stem): row for path, row in rows.items()}
    assert [by_index[i]["label"] for i in range(len(expected))] == [CLASSES[i] for i in expected]
    assert all(0 < row["confidence"] <= 1 and row["top_k"][0]["label"] == row["label"] for row in rows.values())


def _runs_own_predictions(checkpoint: Path, images: np.ndarray, labels: np.ndarray, data) -> list[int]:
    """The classes that the checkpoint's run gives ``images`` when it evaluates them (with its TTA), in fp32."""
    classifier = inference.from_checkpoint(checkpoint)
    assert classifier.tta == TTA(flip=True, translate=True)
    runtime = make_runtime("cpu", amp=False, channels_last=False, compile=False, threads=None)
    normalize = Normalizer.from_stats(data.mean, data.std, runtime.device, False)
    return engine.evaluate(classifier.model, torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                           torch.from_numpy(labels), normalize, 64, runtime, classifier.tta).predictions.tolist()


@pytest.mark.parametrize("split", ["test", "train"])
def test_evaluate_scores_a_split_as_the_run_classifies_its_images(split, trained, official_dir, capsys, tmp_path):
    images, labels = getattr(trained.data, f"{split}_images"), getattr(trained.data, f"{split}_labels")
    predicted = _runs_own_predictions(trained.checkpoint, images, labels, trained.data)
    confusion = np.zeros((10, 10), dtype=int)
    for label, prediction in zip(labels, predicted):
        confusion[label, prediction] += 1
    args = ["--model", str(trained.checkpoint), "--data", str(official_dir), "--cache-dir", str(tmp_path),
            "--split", split]
    assert evaluate.main([*args, "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["confusion"] == confusion.tolist() and scored["images"] == len(labels)
    assert scored["accuracy"] == np.mean(np.array(predicted) == labels)
    assert scored["data_hash"] == trained.data.content_hash and scored["split"] == split
    for i, cls in enumerate(CLASSES):
        assert scored["class_accuracy"][cls] == confusion[i, i] / confusion[i].sum()
    assert evaluate.main(args) == 0
    table = capsys.readouterr().out
    assert f"| all | {len(labels)} | {scored['accuracy']:.2%} |  |" in table
    worst = min(range(10), key=lambda i: confusion[i, i] / confusion[i].sum())
    taken_for = max((j for j in range(10) if j != worst), key=lambda j: (confusion[worst, j], -j))
    assert (f"| {CLASSES[worst]} | {confusion[worst].sum()} | {confusion[worst, worst] / confusion[worst].sum():.2%} | "
            f"{CLASSES[taken_for]} ({confusion[worst, taken_for] / confusion[worst].sum():.2%}) |") in table


def test_evaluate_scores_several_models_side_by_side(trained, official_dir, capsys, tmp_path):
    state = torch.load(trained.checkpoint, weights_only=False)
    *_, weight, bias = state["model"]  # the last layer's: with them zero, every image is taken for class 0
    state["model"][weight].zero_()
    state["model"][bias].zero_()
    torch.save(state, tmp_path / "airplane.pt")
    run = trained.run.info  # its logged model: the checkpoint's
    args = ["--model", str(trained.checkpoint), "--model", str(tmp_path / "airplane.pt"), "--model", run.run_id,
            "--tracking-uri", trained.tracking_uri, "--data", str(official_dir), "--cache-dir", str(tmp_path / "cache")]
    assert evaluate.main([*args, "--json"]) == 0
    first, second, third = map(json.loads, capsys.readouterr().out.splitlines())
    assert (first["model"], second["model"]) == (str(trained.checkpoint), str(tmp_path / "airplane.pt"))
    assert (first["run_name"], third["run_name"]) == (None, run.run_name)  # a run given by its id: its name
    assert second["class_accuracy"] == {cls: float(cls == "airplane") for cls in CLASSES}
    assert third["confusion"] == first["confusion"]
    assert evaluate.main(args) == 0
    table = capsys.readouterr().out
    assert (f"model 1   {trained.checkpoint}\nmodel 2   {tmp_path / 'airplane.pt'}\n"
            f"model 3   {run.run_id} (MLflow run {run.run_name!r})\n") in table
    assert "| class | images | model 1 | model 2 | model 3 |" in table and "most often taken for" not in table
    assert f"| all | 50 | {first['accuracy']:.2%} | 10.00% | {first['accuracy']:.2%} |" in table
    assert f"| airplane | 5 | {first['class_accuracy']['airplane']:.2%} | 100.00% |" in table
    # each against model 1: the airplanes that it gets wrong are all the second's gains; its other rights, losses
    gains, losses = 5 - first["confusion"][0][0], sum(first["confusion"][i][i] for i in range(1, 10))
    assert (second["against_model_1"]["better"], second["against_model_1"]["worse"]) == (gains, losses)
    assert third["against_model_1"] == {"better": 0, "worse": 0, "p_value": 1.0, "p_value_holm": 1.0}  # the same
    p_value = second["against_model_1"]["p_value"]  # the smaller of the two: Holm's method doubles it
    assert second["against_model_1"]["p_value_holm"] == pytest.approx(min(1.0, 2 * p_value))
    assert f"- model 2: right on {gains} that model 1 gets wrong, wrong on {losses} that it gets right; p = " \
           f"{p_value:.2g} ({min(1.0, 2 * p_value):.2g} by Holm's method for the 2 comparisons)\n" in table
    assert "- model 3: right on 0 that model 1 gets wrong, wrong on 0 that it gets right; p = 1 (1 by Holm's " \
           "method for the 2 comparisons)\n" in table


def test_evaluate_shows_a_bar_of_each_models_images_on_a_terminal_only(trained, official_dir, capsys, tmp_path,
                                                                        monkeypatch):
    args = ["--model", str(trained.checkpoint), "--model", str(trained.checkpoint), "--data", str(official_dir),
            "--cache-dir", str(tmp_path / "cache")]
    assert evaluate.main(args) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert evaluate.main(args) == 0
    err = capsys.readouterr().err
    assert all(f"model {n}:   0%|          | 0/50 [" in err for n in (1, 2)), err


def test_mcnemars_p_value_is_the_two_sided_binomial_tail_of_the_images_that_one_model_alone_gets_right():
    reference = evaluate.Score(np.zeros((10, 10)), np.array([True] * 5 + [False] * 10 + [True] * 7))
    model = evaluate.Score(np.zeros((10, 10)), np.array([False] * 2 + [True] * 3 + [True] * 10 + [True] * 7))
    against = evaluate.paired(model, reference)
    assert (against.better, against.worse) == (10, 2)
    # of 12 images on which they differ, 10 or more (or 2 or fewer) to one side: 2 * (1 + 12 + 66) / 2**12
    assert against.p_value == pytest.approx(2 * (1 + 12 + 66) / 2 ** 12)
    assert evaluate.paired(reference, model).p_value == pytest.approx(against.p_value)
    assert evaluate.paired(model, model).p_value == 1.0


def test_evaluate_reads_each_model_from_its_own_store(trained, official_dir, capsys, tmp_path, monkeypatch):
    """A run of the default store, then a sweep by its dir, whose store is another: loading the run's model set
    MLflow's store for the process, and the sweep was looked for in the default store."""
    from mlflow.tracking import MlflowClient

    from cifar.tracking import BEST_RUN_TAG, OUTPUT_DIR_TAG, SWEEP_DIR_TAG, SWEEP_FILE

    other = f"sqlite:///{tmp_path / 'other.db'}"
    client = MlflowClient(other)
    experiment = client.create_experiment("elsewhere")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "best.pt").write_bytes(trained.checkpoint.read_bytes())  # a job that logged no model
    job = client.create_run(experiment, run_name="the best job", tags={OUTPUT_DIR_TAG: str(tmp_path / "job")})
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    parent = client.create_run(experiment, tags={SWEEP_DIR_TAG: str(sweep_dir), BEST_RUN_TAG: job.info.run_id})
    (sweep_dir / SWEEP_FILE).write_text(json.dumps({"parent_run_id": parent.info.run_id, "swept_keys": [],
                                                    "tracking_uri": other}))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(Path(trained.tracking_uri.removeprefix("sqlite:///")).parent)  # its mlflow.db: the default
    assert evaluate.main(["--model", trained.run.info.run_id, "--model", str(sweep_dir), "--data", str(official_dir),
                          "--cache-dir", str(tmp_path / "cache")]) == 0
    assert f"model 2   {sweep_dir} (MLflow run 'the best job')\n" in capsys.readouterr().out


def test_evaluate_without_data_scores_the_data_the_model_trained_on(trained, official_dir, capsys, tmp_path,
                                                                    monkeypatch):
    """Its run dir's config says which (the run's own dir for a checkpoint, the output dir of the run given by its
    id or that logged a URI's model), from the folder the run started in; data/raw only where no model says.
    Before, always data/raw; and a runs:/ or models:/ URI's model had no run, so two versions of a registered model
    were refused without --data."""
    from cifar.registry import MODEL_NAME as LOGGED_NAME

    monkeypatch.chdir(tmp_path)  # no data/raw here
    alone = tmp_path / "alone.pt"  # a checkpoint out of its run's dir: its data is unknown
    alone.write_bytes(trained.checkpoint.read_bytes())
    run_id = trained.run.info.run_id
    trained.client.set_registered_model_alias(MODEL_NAME, "champion", "1")
    logged = trained.run.outputs.model_outputs[0].model_id
    by_run = [run_id, f"runs:/{run_id}/{LOGGED_NAME}", f"models:/{MODEL_NAME}/1", f"models:/{MODEL_NAME}@champion",
              f"models:/{logged}"]
    for models, which in [([str(trained.checkpoint)], "the model"), (by_run[:1], "the model"),
                          (by_run[1:2], "the model"), (by_run[2:], "the models"),
                          ([str(alone), str(trained.checkpoint.parent)], "model 2")]:
        assert evaluate.main([*(arg for model in models for arg in ("--model", model)),
                              "--tracking-uri", trained.tracking_uri]) == 0
        out = capsys.readouterr().out
        for model in set(models) & set(by_run):
            assert f"{model} (MLflow run {trained.run.info.run_name!r})\n" in out
        assert f"data      {official_dir} (test split, content hash {trained.data.content_hash[:12]}, the data " \
               f"{which} trained on)\n" in out
        assert f"| all | {len(trained.data.test_labels)} |" in out
    assert not (tmp_path / "data").exists()  # decoded into the run's own cache, not a new one here
    other_run = tmp_path / "other-run"  # a run of the same model on other data
    shutil.copytree(trained.checkpoint.parent / ".hydra", other_run / ".hydra")
    config = other_run / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace(str(official_dir), str(tmp_path / "other-data")))
    (tmp_path / "other-data").mkdir()
    shutil.copy(trained.checkpoint, other_run / "best.pt")
    assert evaluate.main(["--model", str(trained.checkpoint), "--model", str(other_run)]) == 2
    assert capsys.readouterr().err == (
        f"cifar.evaluate: error: the models trained on different data (model 1: {official_dir}; model 2: "
        f"{tmp_path / 'other-data'}): give --data, the data to score them on\n")
    assert evaluate.main(["--model", str(alone)]) == 2
    assert capsys.readouterr().err.startswith("cifar.evaluate: error: No CIFAR-10 data in data/raw")


def test_a_registered_version_whose_run_is_gone_is_scored_on_the_data_given(trained, official_dir, capsys, tmp_path):
    """Its run deleted for good (mlflow gc), the version still loads: it has no run to name nor data to default to.
    Before, looking its run up raised MlflowException's traceback."""
    store = f"sqlite:///{tmp_path / 'gone.db'}"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store, registry_uri=store)
    logged = trained.client.get_logged_model(trained.run.outputs.model_outputs[0].model_id)
    client.create_registered_model("gone")
    client.create_model_version("gone", logged.artifact_location, run_id="0" * 32)  # a run the store has not
    assert evaluate.main(["--model", "models:/gone/1", "--tracking-uri", store, "--data", str(official_dir),
                          "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"model     models:/gone/1\ndata      {official_dir} (test split, content hash ")
    assert f"| all | {len(trained.data.test_labels)} |" in out


def test_evaluate_scores_images_labelled_by_their_class_folders_as_predict_classifies_them(trained, capsys,
                                                                                              tmp_path):
    """One's own photos, sorted into class folders (any case, nested, any size, not every class), one unreadable."""
    folder = tmp_path / "mine"
    for i, image in enumerate(trained.data.test_images[:12]):
        path = folder / ("Cat", "dog", "ship")[i % 3] / ("" if i < 9 else "more") / f"{i:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize((64 + i, 48)).save(path, quality=95)
    (folder / "dog" / "notes.png").write_text("not an image")
    code, out, err = _predict(capsys, *(str(folder / c) for c in ("Cat", "dog", "ship")), "--model",
                              str(trained.checkpoint), "--json")
    predicted = {Path(path).relative_to(folder): row["label"] for path, row in _json_lines(out).items()}
    assert code == 1 and len(predicted) == 12
    Image.fromarray(trained.data.test_images[0]).save(folder / "unsorted.png")

    assert evaluate.main(["--model", str(trained.checkpoint), "--data", str(folder), "--json"]) == 1
    out, err = capsys.readouterr()
    scored = json.loads(out)
    assert err.splitlines() == [
        f"cifar.evaluate: skipped {folder / 'unsorted.png'}: not in a class folder",
        f"cifar.evaluate: skipped {folder / 'dog' / 'notes.png'}: not a readable image (not an image format that "
        "Pillow reads)"]
    confusion = np.zeros((10, 10), dtype=int)
    for path, label in predicted.items():
        confusion[CLASSES.index(path.parts[0].lower()), CLASSES.index(label)] += 1
    assert scored["confusion"] == confusion.tolist() and scored["images"] == 12 and scored["split"] is None
    assert [c for c, a in scored["class_accuracy"].items() if a is not None] == ["cat", "dog", "ship"]
    assert evaluate.main(["--model", str(trained.checkpoint), "--data", str(folder)]) == 1
    table = capsys.readouterr().out
    assert f"data      {folder} (images labelled by their class folders, content hash {scored['data_hash'][:12]})" \
        in table
    assert [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ")] == [
        "| class", "| all", "| cat", "| dog", "| ship"]  # the classes that have images


@pytest.mark.parametrize("top", ["mine/", ""], ids=["zipped with its folder", "its class folders zipped"])
def test_evaluate_scores_an_archive_of_class_folders_as_the_folder_unpacked(top, trained, capsys, tmp_path):
    folder = tmp_path / "mine"
    for i, image in enumerate(trained.data.test_images[:6]):
        path = folder / ("cat", "Dog")[i % 2] / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    (folder / "Dog" / "notes.png").write_text("not an image")
    assert evaluate.main(["--model", str(trained.checkpoint), "--data", str(folder), "--json"]) == 1
    unpacked = json.loads(capsys.readouterr().out)
    archive, outside = tmp_path / "mine.zip", Path(tempfile.gettempdir()) / f"outside-{os.getpid()}.png"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.rglob("*.png")):
            zipped.write(path, f"{top}{path.relative_to(folder).as_posix()}")
        zipped.writestr(f"__MACOSX/{top}cat/._0.png", b"a resource fork, as macOS zips hold")
        zipped.writestr(f"../{outside.name}", b"a name that would leave the folder it unpacks to")

    assert evaluate.main(["--model", str(trained.checkpoint), "--data", str(archive), "--json"]) == 1
    out, err = capsys.readouterr()
    scored = json.loads(out)
    assert scored["data"] == str(archive) and scored["split"] is None
    assert [scored[key] for key in ("images", "confusion", "data_hash")] == [
        unpacked[key] for key in ("images", "confusion", "data_hash")]
    assert err == f"cifar.evaluate: skipped {archive}/{top}Dog/notes.png: not a readable image (not an image format " \
                  "that Pillow reads)\n"
    assert not outside.exists()
    assert evaluate.main(["--model", str(trained.checkpoint), "--data", str(archive), "--split", "train"]) == 2
    assert capsys.readouterr().err == (f"cifar.evaluate: error: --split train: --data={archive} is an archive of "
                                       "labelled images, which has no splits: drop --split\n")


def test_predict_classifies_an_archives_images_as_those_of_its_folder_named_as_in_it(trained, capsys, tmp_path):
    archive = tmp_path / "photos.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(trained.folder, arcname="photos")
    model = ["--model", str(trained.checkpoint)]
    from_folder = _json_lines(_predict(capsys, str(trained.folder), *model, "--json")[1])
    code, out, err = _predict(capsys, str(archive), *model, "--json")
    assert code == 0 and err == ""
    assert _json_lines(out) == {
        f"{archive}/photos/{Path(path).relative_to(trained.folder).as_posix()}": {**row, "path": ANY}
        for path, row in from_folder.items()}
    code, out, _ = _predict(capsys, str(archive), *model)
    assert code == 0 and any(line.startswith(f"{archive}/photos/sub/000.png  ") for line in out.splitlines())
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[:100])
    code, out, err = _predict(capsys, str(cut), *model)
    assert code == 2 and out == ""
    assert err.startswith(f"cifar.predict: error: {cut} is truncated or not a zip archive (") and err.count("\n") == 1


def test_an_archive_of_neither_class_folders_nor_a_cifar_layout_is_refused_as_before(trained, capsys, tmp_path):
    archive = tmp_path / "notes.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("notes/readme.txt", "no images")
    assert evaluate.main(["--model", str(trained.checkpoint), "--data", str(archive)]) == 2
    assert capsys.readouterr().err.startswith(f"cifar.evaluate: error: {archive} holds no CIFAR-10 layout: expected ")


def test_a_test_folder_of_its_own_scores_as_the_test_split_of_its_dataset(trained, capsys, tmp_path):
    dataset = fakedata.write_image_folders(tmp_path / "dataset", train_per_class=2, test_per_class=3)
    shutil.copytree(dataset / "fake-cifar" / "test", tmp_path / "test-only" / "test")
    scored = {}
    for data in (dataset, tmp_path / "test-only", dataset / "fake-cifar" / "test"):
        assert evaluate.main(["--model", str(trained.checkpoint), "--data", str(data), "--cache-dir",
                              str(tmp_path / "cache"), "--json"]) == 0
        scored[data] = json.loads(capsys.readouterr().out)
    dataset_split, *labelled = scored.values()
    assert dataset_split["split"] == "test" and [s["split"] for s in labelled] == [None, None]
    for each in labelled:
        assert (each["confusion"], each["data_hash"]) == (dataset_split["confusion"], labelled[0]["data_hash"])


def test_a_path_given_as_option_equals_tilde_is_in_the_home_folder(trained, capsys, tmp_path, monkeypatch):
    """The shell leaves the ~ of --model=~/... as it is; the tools take it as the home folder, as it would."""
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(trained.checkpoint, tmp_path / "best.pt")
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    Image.fromarray(trained.data.test_images[0]).save(tmp_path / "photos" / "cat" / "x.png")
    code, out, _ = _predict(capsys, str(tmp_path / "photos"), "--model=~/best.pt", "--json")
    assert code == 0 and len(_json_lines(out)) == 1
    assert evaluate.main(["--model=~/best.pt", "--data=~/photos", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"] == str(tmp_path / "photos")


@pytest.mark.parametrize("files, args, refusal", [
    ({"cat/x.png": "image", "cats/y.png": "image"}, [],
     "--data={} holds class folders and others (cats): name each folder after the class of its images, one of "
     "airplane, automobile, "),
    ({"cat/x.png": "image"}, ["--split", "train"],
     "--split train: --data={} is a folder of labelled images, which has no splits: drop --split"),
    ({"cat/notes.txt": "text", "dog/": "folder"}, [],
     "--data={} has no image files in its class folders: put the images of each class in the folder named after it"),
    ({"cat/x.png": "text", "y.png": "image"}, [],
     "--data={}: none of its 1 image files can be read ({}/cat/x.png: not a readable image"),
], ids=["another folder", "a split", "no image", "none readable"])
def test_a_bad_folder_of_labelled_images_is_one_line_and_exit_2(files, args, refusal, trained, capsys, tmp_path):
    folder = tmp_path / "mine"
    for name, content in files.items():
        path = folder / name
        (path if content == "folder" else path.parent).mkdir(parents=True, exist_ok=True)
        if content == "image":
            Image.fromarray(trained.data.test_images[0]).save(path)
        elif content == "text":
            path.write_text("not an image")
    assert evaluate.main(["--model", str(trained.checkpoint), "--data", str(folder), *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("cifar.evaluate: error: " + refusal.format(folder, folder)), err


def test_a_folder_of_labelled_images_that_cannot_be_listed_is_one_line_and_exit_2(trained, capsys, tmp_path,
                                                                                    monkeypatch):
    (tmp_path / "mine" / "cat").mkdir(parents=True)
    unlistable(monkeypatch, tmp_path / "mine")
    assert evaluate.main(["--model", str(trained.checkpoint), "--data", str(tmp_path / "mine")]) == 2
    assert capsys.readouterr().err == (  # where it was a PermissionError's traceback
        f"cifar.evaluate: error: --data={tmp_path / 'mine'} cannot be read (Permission denied): fix its permissions, "
        "or point --data at a readable copy\n")


@pytest.mark.parametrize("args, refusal", [
    (["--data", "nowhere"], "No CIFAR-10 data in nowhere: put cifar-10-python.tar.gz, train/<class>/ image folders "
                            "or labelled images in <class>/ folders there, or set --data to your copy"),
    (["--model", "nothing-here.pt"], "--model nothing-here.pt is not a checkpoint file"),
])
def test_evaluate_on_bad_input_is_one_line_and_exit_2(args, refusal, trained, official_dir, capsys, tmp_path):
    defaults = {"--model": str(trained.checkpoint), "--data": str(official_dir), "--cache-dir": str(tmp_path)}
    defaults.update(zip(args[::2], args[1::2]))
    assert evaluate.main([item for pair in defaults.items() for item in pair]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cifar.evaluate: error: {refusal}") and err.count("\n") == 1


def test_a_checkpoint_of_an_earlier_version_classifies_without_translate_tta(trained, tmp_path):
    state = torch.load(trained.checkpoint, weights_only=False)
    del state[inference.SPEC]["tta_translate"]
    torch.save(state, tmp_path / "best.pt")
    earlier = inference.from_checkpoint(tmp_path / "best.pt")
    assert earlier.tta == TTA(flip=True, translate=False)


def test_any_size_and_colour_mode_is_resized_and_converted(trained, tmp_path, capsys):
    image = fakedata.images_for(np.array([3]), seed=5)[0]
    Image.fromarray(image).resize((320, 200)).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(image).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(image).convert("RGBA").save(tmp_path / "alpha.webp")
    code, out, _ = _predict(capsys, str(tmp_path), "--model", str(trained.checkpoint), "--json", "--top-k", "3")
    assert code == 0
    rows = _json_lines(out)
    assert sorted(Path(p).name for p in rows) == ["alpha.webp", "big.jpg", "gray.png"]
    for row in rows.values():
        assert len(row["top_k"]) == 3 and row["label"] in CLASSES
        confidences = [k["confidence"] for k in row["top_k"]]
        assert confidences == sorted(confidences, reverse=True) and sum(confidences) <= 1 + 1e-6


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16_bit_grayscale_image_reads_as_its_8_bit_pixels(suffix, tmp_path):
    gray = np.asarray(Image.fromarray(fakedata.images_for(np.array([3]), seed=5)[0]).convert("L"))
    Image.fromarray(gray).save(tmp_path / f"gray8{suffix}")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / f"gray16{suffix}")
    np.testing.assert_array_equal(predict.read_image(tmp_path / f"gray16{suffix}"),
                                  predict.read_image(tmp_path / f"gray8{suffix}"))


def test_a_jpeg_over_pillows_size_limit_is_read_at_its_draft_scale_and_any_other_image_refused(tmp_path,
                                                                                                 monkeypatch):
    photo = Image.fromarray(fakedata.images_for(np.array([3]), seed=5)[0]).resize((256, 256))
    photo.save(tmp_path / "photo.jpg", quality=95)  # decoded at 1/8 of each side: 32x32
    photo.save(tmp_path / "photo.png")
    photo.resize((60, 60)).save(tmp_path / "small.png")
    as_read = predict.read_image(tmp_path / "photo.jpg")
    # the limits scaled down: a phone's 200-megapixel JPEG over them, Pillow's warning (over half) and error
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2_000)
    monkeypatch.setattr(predict, "MAX_DECODED_PIXELS", 4_000)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        images, read, failures = predict.read_images([tmp_path / "photo.jpg", tmp_path / "photo.png",
                                                      tmp_path / "small.png"])
    np.testing.assert_array_equal(images[0], as_read)
    assert read == [tmp_path / "photo.jpg", tmp_path / "small.png"] and warned == []
    assert failures == [predict.Failure(str(tmp_path / "photo.png"), "not a readable image (256x256: 65,536 pixels to "
                                        "decode, over Pillow's limit of 4,000, its guard against decompression "
                                        "bombs; shrink it first)")]
    assert Image.MAX_IMAGE_PIXELS == 2_000  # Pillow's own check is on again for the rest of the process


# EXIF orientation: the transpose a viewer applies to show the stored pixels upright, and its inverse
SHOWN_BY = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}
STORED_BY = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def stored_sideways(upright: Image.Image, orientation: int, path: Path, **save) -> Path:
    """Save ``upright`` as a camera does: its pixels turned, with the EXIF orientation that turns them back."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright.transpose(STORED_BY[orientation]).save(path, exif=exif, **save)
    assert Image.open(path).transpose(SHOWN_BY[orientation]).tobytes() == upright.tobytes() or "quality" in save
    return path


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_photo_stored_sideways_reads_upright_as_its_exif_orientation_says(orientation, tmp_path):
    upright = Image.fromarray(fakedata.images_for(np.array([3]), seed=5)[0]).resize((48, 64))  # portrait
    upright.save(tmp_path / "upright.png")
    sideways = stored_sideways(upright, orientation, tmp_path / "sideways.png")
    np.testing.assert_array_equal(predict.read_image(sideways), predict.read_image(tmp_path / "upright.png"))
    upright.save(tmp_path / "upright.jpg", quality=95)
    photo = stored_sideways(upright, orientation, tmp_path / "sideways.jpg", quality=95)  # decoded by draft
    as_shown, as_stored = predict.read_image(tmp_path / "upright.jpg").astype(int), np.asarray(
        Image.open(photo).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)).astype(int)
    read = predict.read_image(photo).astype(int)
    assert np.abs(read - as_shown).mean() < 3 < np.abs(read - as_stored).mean()


def test_a_corrupt_exif_block_reads_as_stored_without_a_warning(trained, tmp_path, capsys):
    stored_sideways(Image.fromarray(trained.data.test_images[0]), 6, tmp_path / "x.jpg", quality=95)
    blob = (tmp_path / "x.jpg").read_bytes()
    tiff = blob.index(b"Exif\x00\x00") + 6  # the EXIF block's TIFF header, then its first IFD's offset
    (tmp_path / "x.jpg").write_bytes(blob[:tiff + 4] + b"\xff\xff\xff\xff" + blob[tiff + 8:])
    (tmp_path / "labelled" / "cat").mkdir(parents=True)
    shutil.copy(tmp_path / "x.jpg", tmp_path / "labelled" / "cat")
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        code, out, err = _predict(capsys, str(tmp_path / "x.jpg"), "--model", str(trained.checkpoint), "--json")
        scored = evaluate.main(["--model", str(trained.checkpoint), "--data", str(tmp_path / "labelled"), "--json"])
    assert (code, err, warned) == (0, "", []) and len(_json_lines(out)) == 1
    assert scored == 0 and json.loads(capsys.readouterr().out)["images"] == 1
    with pytest.warns(UserWarning, match="Corrupt EXIF data"):  # as Pillow reads the file on its own
        np.testing.assert_array_equal(predict.read_image(tmp_path / "x.jpg"),
                                      np.asarray(Image.open(tmp_path / "x.jpg").convert("RGB")))


def test_a_database_store_that_refuses_the_connection_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    said = unreadable_database("connection refused", monkeypatch)
    uri = REFUSING_DATABASE.format("mlflow")
    code, out, err = _predict(capsys, str(tmp_path), "--model", "0" * 32, "--tracking-uri", uri)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"cifar.predict: error: the MLflow store {without_passwords(uri)} {said}")


def test_unreadable_files_are_reported_and_skipped_with_exit_1(trained, tmp_path, capsys):
    Image.fromarray(trained.data.test_images[0]).save(tmp_path / "good.png")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:60])
    (tmp_path / "readme.txt").write_text("ignored: not an image suffix")
    (tmp_path / "._good.png").write_bytes(b"\0\5\26\7")  # macOS's metadata beside a file: hidden, not read
    (tmp_path / ".thumbnails").mkdir()  # a viewer's: images in a hidden folder are not read either
    Image.fromarray(trained.data.test_images[1]).save(tmp_path / ".thumbnails" / "good.png")
    code, out, err = _predict(capsys, str(tmp_path), str(tmp_path / "missing.jpg"), "--model", str(trained.checkpoint))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["path", "label", "confidence"]
    assert len(lines) == 2 and lines[1].startswith(str(tmp_path / "good.png"))
    skipped = sorted(line.split(": ")[1].removeprefix("skipped ") for line in err.splitlines())
    assert skipped == sorted(str(tmp_path / n) for n in ("cut.png", "missing.jpg", "notes.png"))
    assert "readme.txt" not in err
    code, out, err = _predict(capsys, str(tmp_path / "notes.png"), "--model", str(trained.checkpoint))
    assert (code, out) == (1, "") and err.startswith("cifar.predict: skipped ")  # no table without a row


def test_a_folder_that_cannot_be_listed_is_reported_and_skipped_with_exit_1(trained, tmp_path, capsys, monkeypatch):
    (tmp_path / "photos" / "locked").mkdir(parents=True)
    Image.fromarray(trained.data.test_images[0]).save(tmp_path / "photos" / "good.png")
    Image.fromarray(trained.data.test_images[1]).save(tmp_path / "photos" / "locked" / "x.png")
    unlistable(monkeypatch, tmp_path / "photos" / "locked")
    code, out, err = _predict(capsys, str(tmp_path / "photos"), "--model", str(trained.checkpoint))
    assert code == 1 and [line.split()[0] for line in out.splitlines()] == ["path", str(tmp_path / "photos/good.png")]
    assert err == (f"cifar.predict: skipped {tmp_path / 'photos' / 'locked'}: not a readable folder (Permission "
                   "denied)\n")  # where its images were left out without a word


def test_a_bad_model_source_is_one_line_and_exit_2(trained, tmp_path, capsys):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    for source in (str(tmp_path / "x.pt"), "0" * 32, "models:/no-such-model/1", "nonsense"):
        code, out, err = _predict(capsys, str(trained.images[0]), "--model", source,
                                  "--tracking-uri", trained.tracking_uri)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith(f"cifar.predict: error: --model {source}")
    for source, fix in ((f"runs:/{'0' * 32}/model", "check the run id"), ("models:/nope/1", "check the name and"),
                        (f"models:/{MODEL_NAME}", f"give a registered model's version too, as models:/{MODEL_NAME}/1, "
                                                  f"models:/{MODEL_NAME}/latest or models:/{MODEL_NAME}@ALIAS")):
        code, _, err = _predict(capsys, str(trained.images[0]), "--model", source, "--tracking-uri",
                                trained.tracking_uri)
        assert code == 2 and err.startswith(f"cifar.predict: error: --model {source} cannot be loaded from ")
        assert f"): {fix}" in err, err
    for content in (trained.images[0].read_bytes(), trained.checkpoint.read_bytes()[:5000]):  # an image, a cut copy
        path = tmp_path / "model.pt"
        path.write_bytes(content)
        code, out, err = _predict(capsys, str(trained.images[0]), "--model", str(path))
        assert code == 2 and err == (f"cifar.predict: error: --model {path} is not a readable checkpoint (not the zip "
                                     "archive that torch.save writes: another kind of file, or a copy cut short): "
                                     "give a best.pt or last.pt\n")  # where an image's said "A load persistent id..."
    missing = tmp_path / "elsewhere" / "mlflow.db"  # a store that does not exist is not created
    for source in ("0" * 32, f"models:/{MODEL_NAME}/1"):
        code, out, err = _predict(capsys, str(trained.images[0]), "--model", source, "--tracking-uri",
                                  f"sqlite:///{missing}")
        assert code == 2 and err == (f"cifar.predict: error: no MLflow store at {missing}: run from the folder "
                                     "that holds it, or give --tracking-uri / MLFLOW_TRACKING_URI\n")
    assert not missing.parent.exists()
    code, _, err = _predict(capsys, str(trained.images[0]), "--model", "0" * 32, "--tracking-uri", "foo://x")
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"cifar.predict: error: --model {'0' * 32}: the "
                                                                 "MLflow store foo://x cannot be read (")


def test_a_bad_device_is_one_line_and_exit_2_naming_the_option(trained, capsys):
    devices = {"gpu": "--device=gpu is not a device: use auto, cpu, cuda, cuda:N or mps"}
    if not torch.cuda.is_available():
        devices["cuda"] = "--device=cuda but CUDA is not available here: use --device=auto or cpu"
    for name, message in devices.items():
        code, out, err = _predict(capsys, str(trained.images[0]), "--model", str(trained.checkpoint), "--device", name)
        assert code == 2 and out == "" and err == f"cifar.predict: error: {message}\n"


def test_the_logged_model_loads_with_pyfunc_and_predicts_as_cifar_predict(trained, capsys, tmp_path):
    import mlflow

    from cifar.registry import MODEL_NAME as LOGGED_NAME

    mlflow.set_tracking_uri(trained.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{trained.run.info.run_id}/{LOGGED_NAME}", dst_path=str(tmp_path))
    assert pyfunc.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "uint8"
    probabilities = pyfunc.predict(trained.data.test_images)
    code, out, _ = _predict(capsys, *map(str, trained.images), "--model", str(trained.checkpoint), "--json")
    rows = _json_lines(out)
    by_index = {int(Path(path).stem): row for path, row in rows.items()}
    assert [by_index[i]["label"] for i in range(len(probabilities))] == [CLASSES[i] for i in probabilities.argmax(1)]
    np.testing.assert_allclose([by_index[i]["confidence"] for i in range(len(probabilities))],
                               probabilities.max(1), atol=1e-5)


def test_run_id_and_registered_version_predict_as_the_checkpoint(trained, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)  # as cifar.predict leaves it
    sources = [str(trained.checkpoint), str(trained.checkpoint.parent), trained.run.info.run_id,
               f"models:/{MODEL_NAME}/1"]
    outputs = []
    for source in sources:
        code, out, err = _predict(capsys, str(trained.folder / "sub"), "--model", source, "--json",
                                  "--tracking-uri", trained.tracking_uri)
        assert code == 0 and err == ""  # no download bar for the logged model: stderr is not a terminal
        outputs.append({p: (r["label"], round(r["confidence"], 4)) for p, r in _json_lines(out).items()})
    assert all(output == outputs[0] for output in outputs)
    version = trained.client.get_model_version(MODEL_NAME, "1")
    assert version.run_id == trained.run.info.run_id


def test_a_sweep_by_its_dir_or_its_parent_runs_id_predicts_with_its_best_job(trained, capsys, tmp_path, monkeypatch):
    from cifar.tracking import BEST_RUN_TAG, SWEEP_DIR_TAG, SWEEP_FILE

    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    experiment_id = trained.client.create_experiment(f"predict-sweep-{tmp_path.name}")
    parent = trained.client.create_run(experiment_id, tags={SWEEP_DIR_TAG: str(sweep_dir)}).info.run_id
    (sweep_dir / SWEEP_FILE).write_text(json.dumps({"parent_run_id": parent, "swept_keys": ["optimizer.lr"],
                                                    "tracking_uri": trained.tracking_uri}))
    image = str(trained.images[0])
    code, out, err = _predict(capsys, image, "--model", str(sweep_dir), "--tracking-uri", trained.tracking_uri)
    assert code == 2 and out == "" and err == (
        f"cifar.predict: error: --model {sweep_dir} (the sweep of MLflow parent run {parent}): the sweep has no best "
        "job (it still runs, or none of its jobs finished): give one of its jobs' run ids\n")
    trained.client.set_tag(parent, BEST_RUN_TAG, trained.run.info.run_id)  # as the sweep's end tags it
    by_job = _predict(capsys, image, "--model", trained.run.info.run_id, "--json", "--tracking-uri",
                      trained.tracking_uri)
    assert by_job[0] == 0
    assert _predict(capsys, image, "--model", parent, "--json", "--tracking-uri", trained.tracking_uri) == by_job
    best_job = trained.run.info.run_name  # what cifar.evaluate names each of these by
    assert provenance(parent, trained.tracking_uri).run_name == best_job
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # which would win over the sweep's own store
    assert provenance(str(sweep_dir)).run_name == best_job  # the store its sweep file names
    assert provenance(str(trained.checkpoint), trained.tracking_uri).run_name is None
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    by_dir = subprocess.run([sys.executable, "-m", "cifar.predict", image, "--model", str(sweep_dir), "--json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True)  # no mlflow.db in tmp_path
    assert (by_dir.returncode, by_dir.stdout) == by_job[:2], by_dir.stderr  # the store its sweep file names
    (sweep_dir / "0").mkdir()  # a job that saved no best.pt (it failed), and the folder of the sweep
    assert _predict(capsys, image, "--model", str(sweep_dir / "0"))[2] == (
        f"cifar.predict: error: --model {sweep_dir / '0'} is a job's dir of a sweep: give --model {sweep_dir}, the "
        "sweep\n")
    assert _predict(capsys, image, "--model", str(tmp_path))[2] == (
        f"cifar.predict: error: --model {tmp_path} is a folder of a sweep, not a sweep's dir: give one, such as the "
        f"latest: --model {sweep_dir}\n")


def test_a_folder_of_runs_given_as_the_model_is_refused_naming_its_latest_run(trained, capsys, tmp_path):
    outputs = tmp_path / "outputs"
    runs = [outputs / day / time for day, time in
            [("2026-12-01", "10-00-00"), ("2026-12-02", "09-00-00"), ("2026-12-02", "11-00-00")]]
    for age, run_dir in zip((300, 100, 200), runs):  # seconds ago: the second run wrote its best.pt last
        run_dir.mkdir(parents=True)
        shutil.copy(trained.checkpoint, run_dir / "best.pt")
        os.utime(run_dir / "best.pt", (1_800_000_000 - age, 1_800_000_000 - age))
    image = str(trained.images[0])
    for folder, what, latest in [(outputs, "3 runs", runs[1]), (runs[0].parent, "a run", runs[0])]:
        code, out, err = _predict(capsys, image, "--model", str(folder))
        assert (code, out) == (2, "") and err == (
            f"cifar.predict: error: --model {folder} is a folder of {what}, not a run's dir: give one, such as the "
            f"latest: --model {latest}\n")
    assert _predict(capsys, image, "--model", str(runs[1]))[0] == 0


@pytest.mark.slow  # 14 s: a run of its own
def test_a_run_whose_best_pt_was_written_over_is_refused_by_run_id(cli, capsys, tmp_path):
    image = tmp_path / "image.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    cli()  # logs no model (FAST): its run id stands for the best.pt in its output dir
    [run] = all_runs(cli)
    best = cli.tmp_path / "run" / "best.pt"
    by_checkpoint = _predict(capsys, str(image), "--model", str(best), "--json")
    assert by_checkpoint[0] == 0
    assert _predict(capsys, str(image), "--model", run.info.run_id, "--json", "--tracking-uri",
                    cli.tracking_uri) == by_checkpoint
    state = torch.load(best, weights_only=False)  # as a later run into the same dir would write it
    state["model"] = {name: weights + 1 for name, weights in state["model"].items()}
    torch.save(state, best)
    code, out, err = _predict(capsys, str(image), "--model", run.info.run_id, "--tracking-uri", cli.tracking_uri)
    assert code == 2 and out == ""
    assert err == (f"cifar.predict: error: --model {run.info.run_id}: the run logged no model, and {best} is no "
                   "longer the one it trained (another run into the same dir, or a dvc checkout, wrote over it): "
                   "train the run again, or train with mlflow.log_model=true to keep its model in MLflow\n")


def test_loading_a_logged_model_leaves_no_copy_in_the_temp_dir(trained, tmp_path, monkeypatch):
    from cifar.registry import MODEL_NAME as LOGGED_NAME

    temp = tmp_path / "temp"  # where MLflow puts the copies it downloads: tempfile.mkdtemp()
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    run_id = trained.run.info.run_id
    for source in (f"runs:/{run_id}/{LOGGED_NAME}", run_id, f"models:/{MODEL_NAME}/1"):
        assert isinstance(inference.load(source, trained.tracking_uri), torch.nn.Module)
    assert sorted(temp.rglob("MLmodel")) == []  # (torch may make its own cache dir there)


@pytest.mark.parametrize("tool", ["predict", "evaluate"])
def test_the_tools_import_torch_without_the_collections_that_it_sets_off(tool, trained, official_dir, tmp_path):
    """torch's modules imported for good (``cifar.collector.import_for_good``): 0.3 s of the 2.3 s that importing
    torch takes on 2 cores went to collections that went over them again and again."""
    arguments = [str(trained.folder)] if tool == "predict" else ["--data", str(official_dir), "--cache-dir",
                                                                  str(tmp_path / "cache")]
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import contextlib, gc, io
        from cifar import {tool}
        with contextlib.redirect_stdout(io.StringIO()):
            status = {tool}.main({["--model", str(trained.checkpoint), *arguments]!r})
        print(status, gc.get_freeze_count())
    """)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    status, frozen = proc.stdout.split()
    assert status == "0" and int(frozen) > 100_000, proc.stderr


def test_diagnostics_are_logged_at_the_chosen_epochs(trained, tmp_path):
    client, run_id = trained.client, trained.run.info.run_id
    diagnostics = {f.path for f in client.list_artifacts(run_id, "diagnostics")}
    assert diagnostics == {"diagnostics/epoch_002"}  # diagnostics.epochs=[2]: none at epoch 1
    files = {Path(f.path).name for f in client.list_artifacts(run_id, "diagnostics/epoch_002")}
    assert files == {"gradient_flow.png", "weights.png", "predictions.png", "per_class.png"}
    local = Path(client.download_artifacts(run_id, "diagnostics/epoch_002/predictions.png", str(tmp_path)))
    assert Image.open(local).format == "PNG"
    class_acc = {k: v for k, v in trained.run.data.metrics.items() if k.startswith("val/class_acc/")}
    assert sorted(class_acc) == sorted(f"val/class_acc/{c}" for c in CLASSES)
    assert all(0 <= v <= 1 for v in class_acc.values())
    summary = Path(client.download_artifacts(run_id, "model/summary.txt", str(tmp_path))).read_text()
    assert "Conv2d" in summary and "Total params" in summary


@pytest.mark.slow
def test_mlflow_models_predict_serves_the_registered_model(trained, tmp_path):
    request = tmp_path / "input.json"
    request.write_text(json.dumps({"inputs": trained.data.test_images[:3].tolist()}))
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    proc = subprocess.run([str(mlflow_cli), "models", "predict", "-m", f"models:/{MODEL_NAME}/1", "-i", str(request),
                           "-t", "json", "--env-manager", "local"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": trained.tracking_uri}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    served = np.array(json.loads(proc.stdout.strip().splitlines()[-1])["predictions"])
    classifier = inference.from_checkpoint(trained.checkpoint)
    with torch.inference_mode():
        expected = classifier(torch.from_numpy(trained.data.test_images[:3])).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


@pytest.mark.slow
def test_a_sweep_registers_the_model_of_its_best_job_only(cli, capsys):
    name = f"sweep-best-{cli.experiment}"
    cli("optimizer.lr=1e-3,1e-2", "trainer.epochs=1", "mlflow.log_model=true", "mlflow.register_model=true",
        f"mlflow.model_name={name}", multirun=True)
    parent, children = sweep_parent_and_children(all_runs(cli))
    best = max(children, key=lambda r: r.data.metrics["val/best_acc"])
    versions = client_for(cli).search_model_versions(f"name = '{name}'")
    assert [v.run_id for v in versions] == [best.info.run_id]
    assert parent.data.tags["registered_model"] == f"models:/{name}/1"
    assert_tags_are_the_runs_own(parent, *children)
    image = cli.tmp_path / "image.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    by_job, by_sweep = (_predict(capsys, str(image), "--model", source, "--json", "--tracking-uri", cli.tracking_uri)
                        for source in (best.info.run_id, str(cli.tmp_path / "sweep")))  # the sweep's: its best job's
    assert by_job[0] == 0 and by_sweep == by_job


@pytest.mark.slow
def test_a_sweep_without_a_validation_set_registers_nothing_and_says_why(cli):
    name = f"sweep-noval-{cli.experiment}"
    proc = cli("seed=0,1", "trainer.epochs=1", "data.val_size=0", "mlflow.log_model=true", "mlflow.register_model=true",
               f"mlflow.model_name={name}", multirun=True)
    parent, children = sweep_parent_and_children(all_runs(cli))
    assert [c.info.status for c in children] == ["FINISHED"] * 2 and parent.info.status == "FINISHED"
    assert client_for(cli).search_model_versions(f"name = '{name}'") == []
    assert "registered_model" not in parent.data.tags
    assert "No model to register: no job of the sweep has a val/best_acc" in proc.stdout + proc.stderr
