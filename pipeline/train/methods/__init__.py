"""Voice-face association methods: one module each, one interface (see ``common``)."""
