"""The paper study, not the library.

This package reproduces the experiments of the paper: the experiment and
estimator registries, the published numbers, the markdown writers and the
data-size study. It is importable from a source checkout only (it is not part
of the installed ``bayes_diml`` wheel), and nothing under ``bayes_diml/``
imports from it. Global JAX settings (the persistent compilation cache,
``jax.clear_caches()``) belong here, set where the harness starts.
"""
