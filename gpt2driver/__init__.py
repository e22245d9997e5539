"""gpt2driver: build, run, validate, sweep and profile a CUDA GPT-2 inference engine."""

__version__ = "0.1.0"

PROTOCOL_VERSION = 1
