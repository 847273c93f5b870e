"""The command-line tools: `trainer` (train.py), `trainer-predict`, `trainer-report` and
`trainer-export`. Each module's ``main`` is the console script."""
