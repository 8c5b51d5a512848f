"""Composable objectives for maximization (``featvis.maximize(model, objective=...)``); see
:mod:`featvis.methods.objectives`."""

from .methods.objectives import Batch, Objective, diversity, direction, l2, tv, unit

__all__ = ["Objective", "Batch", "unit", "direction", "l2", "tv", "diversity"]
