"""Bjontegaard deltas (placeholder, being written)."""

from __future__ import annotations

import bjontegaard


def bd_rate(anchor_rate, anchor_metric, test_rate, test_metric, method="pchip"):
    return float(bjontegaard.bd_rate(anchor_rate, anchor_metric, test_rate, test_metric, method=method))


def bd_metric(anchor_rate, anchor_metric, test_rate, test_metric, method="pchip"):
    return float(bjontegaard.bd_psnr(anchor_rate, anchor_metric, test_rate, test_metric, method=method))
