"""Orchestration only: the stage list (``stages``), the pipeline that runs it (``pipeline``) and
the run directory with its markers (``rundir``). No stage imports from here."""
