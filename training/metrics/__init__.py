"""Evaluation: Fréchet math, feature detectors, domain feature nets (digits, MNIST, DNA), sequence metrics, plots."""
