"""The llm.c file formats: checkpoints (read, validate, write, random weights, Hugging Face
conversion), tokenizer files, and the generated models the driver caches."""
