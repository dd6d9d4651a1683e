"""Learning rules (docs/design.md §2) and their registry."""

from .bandit_q import bandit_q
from .base import Learner, apply_step, step_coefficients
from .ewa import ewa
from .hedge import hedge
from .logit_q import log_policy_epsilon_softmax, logit_q, logit_q_decreasing
from .stickiness import STICKINESS, choice_indicator, log_policy, previous_choices, with_stickiness

LEARNERS: dict[str, Learner] = {
    learner.name: learner for learner in (logit_q, logit_q_decreasing, ewa, hedge, bandit_q)
}
"""Registry: rule name (as written in specs) -> learner. Every rule also takes the optional
``stickiness`` (``learners.stickiness``); a model that names it holds ``with_stickiness(rule)``."""

__all__ = [
    "LEARNERS",
    "Learner",
    "apply_step",
    "step_coefficients",
    "log_policy_epsilon_softmax",
    "log_policy",
    "STICKINESS",
    "with_stickiness",
    "choice_indicator",
    "previous_choices",
    "logit_q",
    "logit_q_decreasing",
    "ewa",
    "hedge",
    "bandit_q",
]
