"""Test and benchmark fixtures, not installed with minescan."""
