"""The memorization signal: the guidance-difference measure during sampling, its per-image tracker, the Forge
hook, and the threshold calibration."""
