"""Calibration and training data: sources (npy/npz, image folders, tars, CIFAR batches) and preprocessing."""
