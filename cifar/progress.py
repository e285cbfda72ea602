"""A live progress bar for interactive runs; silent otherwise (the epoch's log line remains)."""

from __future__ import annotations

from tqdm import tqdm


class Progress:
    """A bar of images (an epoch's, a validation's, a test's) where ``enabled``; otherwise nothing at all. tqdm
    makes a multiprocessing lock even for a disabled bar, which a sweep's worker process stopped by Ctrl-C leaves
    behind, and the resource tracker then warns of "leaked semaphore objects" after the sweep's one line."""

    def __init__(self, total_images: int, description: str, enabled: bool):
        self._bar = (tqdm(total=total_images, desc=description, unit="img", unit_scale=True, leave=False)
                     if enabled else None)

    def advance(self, images: int) -> None:
        if self._bar is not None:
            self._bar.update(images)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
