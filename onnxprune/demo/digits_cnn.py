"""A small residual CNN for scikit-learn's 8x8 digits (the embedded demo's model)."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F


class DigitsCNN(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
                                   nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w))
        self.fc = nn.Linear(2 * w, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = F.max_pool2d(self.conv2(x), 2)
        x = F.relu(x + self.block(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
