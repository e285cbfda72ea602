"""A live progress bar for interactive runs; silent otherwise (the epoch's log line remains)."""

from __future__ import annotations

import threading

from tqdm import tqdm

# tqdm's default lock holds a multiprocessing lock (made with the first bar, even a disabled one), which a sweep's
# worker process stopped by Ctrl-C leaves behind: the resource tracker then warns of "leaked semaphore objects" after
# the sweep's one line. It keeps apart only the bars of processes forked after it, and a sweep's workers are spawned.
tqdm.set_lock(threading.RLock())


# tqdm's own, but with whole counts of images: its unit scale, kept for the rate, shows 16 of 50 as "16.0/50.0".
BAR_FORMAT = "{l_bar}{bar}| {n}/{total} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class Progress:
    """A bar of images (an epoch's, a validation's, a test's), shown where ``enabled``."""

    def __init__(self, total_images: int, description: str, enabled: bool):
        self._bar = tqdm(
            total=total_images, desc=description, unit="img", unit_scale=True, leave=False, disable=not enabled,
            bar_format=BAR_FORMAT,
        )

    def advance(self, images: int) -> None:
        self._bar.update(images)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()
