"""One module per command: ``add_args(parser)``, ``config(args)`` (argparse ->
the stage's Config) and ``main(args)``; the module docstring is the help."""


def run_and_summarize(stage, cfg):
    """Run a stage and print its summary (only in the process that writes the
    outputs: process 0 under torchrun)."""
    out = stage.run(cfg)
    if getattr(out, "primary", True):
        for line in stage.summary(out, cfg):
            print(line)
    return 0
