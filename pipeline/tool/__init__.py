"""The ``voxface`` command line's pieces (:mod:`pipeline.cli`): a model on your own clips."""
