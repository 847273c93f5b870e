"""Large-batch tools beyond the optimizers: gradient-noise injection (grad_noise.py) and the
gradient noise scale B_simple (noise_scale.py). LAMB/LARS/LARC live in trainer.optim."""
