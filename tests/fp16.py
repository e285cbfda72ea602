"""A loss for the tests of the fp16 path: it makes the loss scaler skip a step."""

from __future__ import annotations

import torch


class FirstLossBlownUp(torch.nn.CrossEntropyLoss):
    """Cross-entropy, but the first batch's times 1e8: float16 gradients that overflow."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, logits, labels):
        self.calls += 1
        return super().forward(logits, labels) * (1e8 if self.calls == 1 else 1.0)
