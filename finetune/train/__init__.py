"""The one training loop, its batching, and evaluation over a whole split."""
