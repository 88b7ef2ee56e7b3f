"""Imported first by the data stages (``synth``, ``faces``, ``voice``), before numpy or torch
load: pins their CPU-dependent kernels (see :mod:`pipeline.cpu_pin`)."""

from pipeline.cpu_pin import pin_env

pin_env()
