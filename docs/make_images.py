"""Regenerate the README's pictures from a real Optuna sweep on the JPEG copy of CIFAR-10.

Runs ``hparams_search=optuna`` (8 trials of 4 epochs on 10,000 training images) in a temp dir,
then writes, under docs/:
- ``mlflow_runs.png``: the sweep in the MLflow UI's runs table (a real ``mlflow server`` and
  headless Chromium through Playwright), its parent row expanded into the trials;
- ``learning_curves.png`` and ``confusion_matrix.png``: the best trial's own plots, as logged;
- ``optimization_history.png``: the study's history, as logged on the sweep's parent run.
The PNGs are quantised to 256 colours to stay small. Takes about 10 minutes on a 2-core CPU.

    uv run python docs/make_images.py [--data ../shared/data/cifar10-jpeg.tar.gz]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO))

from cifar import ui  # noqa: E402
from tests.servers import CHROMIUM_FLAGS, chromium, free_port, serving_mlflow  # noqa: E402

EXPERIMENT = "cifar-docs"
SWEEP = ["hparams_search=optuna", "hydra.sweeper.n_trials=8", "trainer.epochs=4", "data.limit=10000",
         "trainer.device=cpu", f"mlflow.experiment={EXPERIMENT}", "mlflow.log_model=false"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/cifar10-jpeg.tar.gz")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data} is missing: pass --data with a copy of CIFAR-10")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = f"sqlite:///{work / 'mlflow.db'}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": store}
        subprocess.run([sys.executable, "-m", "cifar.train", "-m", *SWEEP, f"data.path={args.data.resolve()}",
                        f"data.cache_dir={work / 'cache'}", f"hydra.sweep.dir={work / 'sweep'}"],
                       cwd=work, env=env, check=True)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(store)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        runs = client.search_runs([experiment.experiment_id])
        [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        best = parent.data.tags["best_run_id"]
        for run_id, artifact in ((best, "plots/learning_curves.png"), (best, "plots/confusion_matrix.png"),
                                 (parent.info.run_id, "optuna/optimization_history.png")):
            _save(Path(client.download_artifacts(run_id, artifact, str(work))), DOCS / Path(artifact).name)
        _screenshot_runs_table(work, store, parent, DOCS / "mlflow_runs.png")


def _screenshot_runs_table(work: Path, store: str, parent, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with serving_mlflow(store, free_port(), work / "server.log", work) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 620})
        page.goto(f"{url}/{parent.data.tags[ui.VIEW_TAG]}")
        row = page.get_by_role("row").filter(has_text=parent.info.run_name[:20]).first
        row.wait_for(timeout=90_000)
        page.get_by_role("button", name="Close").last.click()  # the assistant's side panel
        page.get_by_role("button", name="Exit shared view").locator("xpath=..").locator("xpath=..").evaluate(
            "element => element.remove()")  # the shared-view banner: the table is the subject
        row.locator("button[data-component-id$='runnamecellrenderer.tsx_46']").click()
        page.wait_for_timeout(2000)
        page.screenshot(path=work / "runs.png")
        browser.close()
    _save(work / "runs.png", out)


def _save(png: Path, out: Path) -> None:
    with Image.open(png) as image:
        image.convert("RGB").quantize(256).save(out, optimize=True)
    print(f"{out.relative_to(REPO)}: {out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
