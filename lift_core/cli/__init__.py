"""The command line, ``python -m lift_core layers|analyze|finetune|compare``.

Parsing and printing only: each sub-command calls the library (``lift_core.train``,
``lift_core.runs``, ``lift_core.analysis``) and prints a ``LiftError`` as one line.

- :mod:`.main`: the parser, ``layers`` and ``analyze``, the error contract.
- :mod:`.finetune`, :mod:`.compare`: the training sub-commands.
"""
