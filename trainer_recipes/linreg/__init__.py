"""The seed's linear-regression study: how the batch size trades gradient noise for speed."""
