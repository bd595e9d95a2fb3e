"""The ``phisnet`` subcommands, one module each: ``add_parser(sub, fmt)`` declares its options, ``run(args)`` runs
it (``train`` has its own parser, shared with ``train.py``). ``phisnet.cli`` assembles them."""
