"""Fleetsim: edge-to-cloud IoT fleet simulator and streaming pipeline."""

__version__ = "0.1.0"
