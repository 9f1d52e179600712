"""Drift: reference profiles, serving windows, the Numba metric kernels and their scipy-named faces, the
detector, feature skew against the offline store, and Evidently's report."""
