import time

from cifar.progress import Progress


def test_a_bar_counts_images_in_whole_numbers_and_shows_nothing_when_disabled(capsys):
    # tqdm redraws a bar at most every 0.1 s
    with Progress(50, "test", enabled=True) as progress:
        time.sleep(0.15)
        progress.advance(16)
    shown = capsys.readouterr().err
    assert "test:  32%" in shown and "16/50 [" in shown, shown
    assert "16.0" not in shown and "50.0" not in shown, shown
    with Progress(50_000, "epoch 1/5", enabled=True) as progress:
        time.sleep(0.15)
        progress.advance(16_640)
    assert "16640/50000 [" in capsys.readouterr().err
    with Progress(50, "test", enabled=False) as progress:
        progress.advance(16)
    assert capsys.readouterr().err == ""
