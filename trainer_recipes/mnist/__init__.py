"""MNIST: the MLP 784-512-512-10, the LeCun IDX data and the offline 8x8-digits stand-in."""
