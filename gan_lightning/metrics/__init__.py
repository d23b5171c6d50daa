"""Measuring what the generator makes: fid_mnist, mode coverage and classifier score on the
project's own MNIST classifier (see classifier.py)."""
