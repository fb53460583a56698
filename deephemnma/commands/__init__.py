"""One module per ``deephemnma <command>`` (cryoDRGN style).

Each module defines ``add_args(parser)`` and ``main(args)`` and a module docstring
whose first line is the command's help."""
