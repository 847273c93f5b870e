"""Circles vs squares: an example of a user's own package trained by ``trainer``."""
