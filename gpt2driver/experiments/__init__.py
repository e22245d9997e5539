"""Experiments: configs expand into points (:mod:`.configs`, :mod:`.points`), points run through a
:class:`~gpt2driver.experiments.pointrunner.PointRunner` on an executor (serial, local GPUs, Slurm),
rows go to a resumable results store (:mod:`.store`); sweep, compare (with the ablations) and bench
(with its peers) are built from these."""
