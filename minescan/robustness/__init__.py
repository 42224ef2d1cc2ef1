"""Robustness: how a model behaves on imagery unlike its training (perturbations, the robustness report)."""
