"""One module per ``ferry`` command; each has ``register(app)``."""
