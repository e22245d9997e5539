"""Where a sweep's points run, behind one interface (:class:`.base.Executor`): one after the other
on the default GPU (:mod:`.serial`), one worker per local GPU (:mod:`.local`), or a Slurm job array
(:mod:`.slurm`; its array tasks run :mod:`.shard`)."""
