"""The shipped workloads, built the way a user's own package is: model and data code here, their
config options in ``conf/`` (model, data, recipe, sweep), which ``trainer`` finds through the
``trainer.configs`` entry point in pyproject.toml. The framework (``trainer/``) never imports
this package; a config names its classes by ``_target_``."""
