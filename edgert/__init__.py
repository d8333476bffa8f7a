"""edgert: compile trained PyTorch models into artifacts that run, adapt and profile on edge boards."""
__version__ = "0.1.0"
