"""The seed's LSTM headline generator on NYT article headlines."""
