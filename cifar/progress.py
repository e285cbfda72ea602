"""A live progress bar for interactive runs; silent otherwise (the epoch's log line remains)."""

from __future__ import annotations

from tqdm import tqdm


class Progress:
    def __init__(self, total_images: int, description: str, enabled: bool):
        self._bar = tqdm(
            total=total_images, desc=description, unit="img", unit_scale=True, leave=False, disable=not enabled
        )

    def advance(self, images: int) -> None:
        self._bar.update(images)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()
