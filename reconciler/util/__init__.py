"""Helpers every layer may import: text, times, JSON loading, atomic files, group commit."""
