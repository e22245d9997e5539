"""``gpt2driver bench``: our executables and their peers (Hugging Face's generate, gpt2_optim's own
program) on the same weights, with the decode floor. :mod:`.run` runs it; :mod:`.hf`,
:mod:`.hfmodel` and :mod:`.gpt2optim` are the peers; :mod:`.rows` the bench's rows and view;
:mod:`.report` what it writes."""
