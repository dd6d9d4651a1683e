"""bayes_diml: Bayesian inverse mechanism learning.

Given the actions that self-interested agents took while they learned, infer a
posterior over the unknown rule that paid them (above all over the payoff
differences the data identify) and predict how they would behave under a
changed rule. Importing this package changes no global JAX setting.

The public API is ``__all__`` below: enough to build a model in Python (a mechanism
family, a learner, priors), simulate or load play, fit it and analyse the fit, without
a spec file. Every function that draws random numbers takes an explicit ``seed`` (an
int or a JAX key) with no default. Anything not listed is internal and may change.
"""

from . import plots
from .calibration import sbc
from .errors import DataError, FitError, MisfitWarning, SpecError, UncalibratedWarning
from .inference import Fit, compare, fit, load_fit
from .inference.counterfactual import counterfactual
from .inference.design import design
from .inference.diagnostics import diagnose, sensitivity, summary
from .inference.identifiability import identifiability_report
from .inference.ppc import ppc
from .inference.queries import payoff_differences, sample_queries
from .inference.storage import save_fit
from .learners import Learner, bandit_q, ewa, hedge, logit_q, logit_q_decreasing
from .likelihood import (
    episode_log_likelihood,
    log_likelihood,
    log_likelihood_per_episode,
    teacher_forced_log_policies,
)
from .loading import load_data
from .mechanisms import Anonymous, Congestion, Linear, Mechanism, Neural, PublicGoods, Tabular
from .model import Model
from .priors import Prior
from .simulate import simulate
from .spec import default_spec_path, parse_spec, read_spec
from .trajectories import Trajectories

__version__ = "0.1.0"

__all__ = [
    # errors
    "DataError",
    "SpecError",
    "FitError",
    "UncalibratedWarning",
    "MisfitWarning",
    # building a model
    "Model",
    "Prior",
    "Mechanism",
    "Tabular",
    "Congestion",
    "PublicGoods",
    "Anonymous",
    "Linear",
    "Neural",
    "Learner",
    "logit_q",
    "logit_q_decreasing",
    "ewa",
    "hedge",
    "bandit_q",
    "read_spec",
    "parse_spec",
    "default_spec_path",
    # data
    "Trajectories",
    "load_data",
    "simulate",
    # likelihood
    "log_likelihood",
    "log_likelihood_per_episode",
    "episode_log_likelihood",
    "teacher_forced_log_policies",
    # fitting and storing
    "fit",
    "Fit",
    "save_fit",
    "load_fit",
    # analyses of a fit
    "summary",
    "diagnose",
    "sensitivity",
    "payoff_differences",
    "sample_queries",
    "identifiability_report",
    "ppc",
    "counterfactual",
    "design",
    "compare",
    "sbc",
    "plots",
]
