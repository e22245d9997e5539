"""The executables: built with the Makefile for a compute capability (:mod:`.build`), checked
before a run (:mod:`.preflight`) and run as child processes (:mod:`.runner`)."""
