"""Calorimeter super-resolution: the fine cells of a shower from the detector's coarse ones."""
