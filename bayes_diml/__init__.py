"""bayes_diml: Bayesian inverse mechanism learning.

Given the actions that self-interested agents took while they learned, infer a
posterior over the unknown rule that paid them (above all over the payoff
differences the data identify) and predict how they would behave under a
changed rule. Importing this package changes no global JAX setting.
"""

from . import calibration, loading, plots
from .errors import DataError, FitError, SpecError
from .inference import Fit, compare, fit, load_fit
from .likelihood import (
    episode_log_likelihood,
    log_likelihood,
    log_likelihood_per_episode,
    teacher_forced_log_policies,
)
from .loading import load_data
from .model import Model
from .simulate import simulate
from .spec import default_spec_path, read_spec
from .trajectories import Trajectories

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "SpecError",
    "FitError",
    "Model",
    "Trajectories",
    "fit",
    "Fit",
    "load_fit",
    "compare",
    "read_spec",
    "load_data",
    "default_spec_path",
    "simulate",
    "log_likelihood",
    "log_likelihood_per_episode",
    "episode_log_likelihood",
    "teacher_forced_log_policies",
    "__version__",
]
