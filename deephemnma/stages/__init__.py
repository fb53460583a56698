"""One module per user-facing stage: a typed ``Config`` (defaults and
``validate()``), ``run(config) -> Outputs`` (the stage's file names and
counts). The command line (:mod:`deephemnma.commands`) and the Scipion
protocols (:mod:`deephemnma.protocols`) both call these; see
:mod:`deephemnma.stages.base`."""
