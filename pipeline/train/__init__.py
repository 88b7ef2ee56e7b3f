"""Training: paired face/voice batches (``pairs``), the encoders, the shared training loop and the
methods (one module each under ``methods``)."""
