"""PyTorch models, datasets and the train function every Ray worker runs."""
