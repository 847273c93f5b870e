"""The run itself: building every object from the config (build.py), the loop (loop.py), one
optimizer step (step.py), evaluation, progress, precision, seeding and staged training."""
