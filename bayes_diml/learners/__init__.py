"""Learning rules (DESIGN §2) and their registry."""

from .base import Learner, apply_step, step_coefficients
from .logit_q import log_policy_epsilon_softmax, logit_q, logit_q_decreasing

LEARNERS: dict[str, Learner] = {learner.name: learner for learner in (logit_q, logit_q_decreasing)}
"""Registry: rule name (as written in specs) -> learner."""

__all__ = [
    "LEARNERS",
    "Learner",
    "apply_step",
    "step_coefficients",
    "log_policy_epsilon_softmax",
    "logit_q",
    "logit_q_decreasing",
]
