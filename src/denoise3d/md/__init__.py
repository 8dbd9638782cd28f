"""Simulation with fine-tuned force fields: an ASE calculator, MD, and energy-landscape plots."""

from denoise3d.md.calculator import Denoise3DCalculator

__all__ = ["Denoise3DCalculator"]
