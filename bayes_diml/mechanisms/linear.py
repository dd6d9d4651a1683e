"""Linear mechanism on user features of own action and opponents' counts."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .._types import Params, PRNGKey
from .base import Mechanism, present_counts

__all__ = ["Linear"]


@dataclasses.dataclass(frozen=True, eq=False)
class Linear(Mechanism):
    """``M(a)_i = phi_i(a) . theta`` with features linear in the opponents' counts,

        phi_i(a) = own[a_i] + sum_c counts_{-i}[c] * cross[a_i, c]

    ``own`` has shape ``(A, F)`` and ``cross`` ``(A, A, F)`` (either may be zero);
    they are data, loaded from a ``.npz`` file named in the spec, never code.
    Parameter ``theta``: ``(F,)``. The economists' default: each weight has a
    meaning given by its feature (``feature_names``).

    Gauge: a feature that is constant across own actions in every context (for
    example an intercept) is not identified under full-information learners;
    the identifiability report finds such directions from the Fisher
    information. Absent agents are not counted.
    """

    own: np.ndarray | None = None
    cross: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()

    family = "linear"
    allows_absence = True
    counts_context = True
    prior_options = frozenset({"theta"})
    spec_options = frozenset({"features", "feature_names"})

    FEATURES_FILE = "features.npz"
    """The name ``spec_table`` gives the features file (in a run folder)."""

    def __post_init__(self):
        from ..errors import SpecError

        A = self.num_actions
        if self.own is None and self.cross is None:
            raise SpecError("linear family: give at least one of the feature arrays 'own' (A, F) or 'cross' (A, A, F)")
        num_features = None
        for name, arr, lead in (("own", self.own, (A,)), ("cross", self.cross, (A, A))):
            if arr is None:
                continue
            arr = np.asarray(arr)
            if arr.ndim != len(lead) + 1 or arr.shape[: len(lead)] != lead:
                raise SpecError(f"linear family: feature array '{name}' has shape {arr.shape}, expected {lead + ('F',)}")
            if not np.all(np.isfinite(arr)):
                raise SpecError(f"linear family: feature array '{name}' has non-finite entries")
            if num_features is not None and arr.shape[-1] != num_features:
                raise SpecError("linear family: 'own' and 'cross' disagree on the number of features F")
            num_features = arr.shape[-1]
        if self.feature_names and len(self.feature_names) != num_features:
            raise SpecError(f"linear family: {len(self.feature_names)} feature_names for {num_features} features")

    @classmethod
    def spec_kwargs(cls, section, where, base_dir):
        """``features``: a ``.npz`` file (relative to ``base_dir``) with arrays ``own`` and/or
        ``cross`` (and optionally ``feature_names``); ``feature_names``: a list that
        overrides the file's."""
        from ..errors import SpecError
        from .options import check_keys, load_npz

        if "features" not in section:
            raise SpecError(f"{where}: the linear family needs 'features', a .npz file with arrays 'own' (A, F) and/or 'cross' (A, A, F)")
        arrays = load_npz(base_dir, section["features"], "features", where)
        check_keys(arrays, {"own", "cross", "feature_names"}, f"{where} features file")
        names = section.get("feature_names", arrays.get("feature_names", ()))
        return {"own": arrays.get("own"), "cross": arrays.get("cross"), "feature_names": tuple(str(x) for x in names)}

    def spec_table(self):
        """``features = "features.npz"`` (the arrays in ``files``) and ``feature_names``."""
        table, files = super().spec_table()
        table["features"] = self.FEATURES_FILE
        files[self.FEATURES_FILE] = {k: np.asarray(v) for k, v in (("own", self.own), ("cross", self.cross)) if v is not None}
        if self.feature_names:
            table["feature_names"] = list(self.feature_names)
        return table, files

    def output_params(self):
        return ("theta",)

    @property
    def num_features(self) -> int:
        """F, the number of features."""
        arr = self.own if self.own is not None else self.cross
        return int(np.shape(arr)[-1])

    def param_shapes(self):
        return {"theta": (self.num_features,)}

    def init_params(self, key: PRNGKey) -> Params:
        return {"theta": jax.random.normal(key, (self.num_features,))}

    def invisible_features(self) -> np.ndarray:
        """Boolean ``(F,)``: features that do not vary with the agent's own action in
        any context; they shift all own actions alike and are pinned at 0 when the
        gauge is fixed."""
        flat = np.zeros(self.num_features, bool) | True
        if self.own is not None:
            flat &= np.ptp(np.asarray(self.own), axis=0) == 0
        if self.cross is not None:
            flat &= np.all(np.ptp(np.asarray(self.cross), axis=0) == 0, axis=0)
        return flat

    @property
    def levels_gauge(self) -> bool:
        """The weights of features that do not vary with the own action shift every action
        alike (pinned at 0 by the gauge): payoff levels are identified only without them."""
        return bool(self.invisible_features().any())

    def sample_prior(self, options, fix_gauge):
        """``theta ~ Normal(0, 1)`` (or the ``theta`` prior); invisible features pinned at 0.

        With the gauge fixed, only the visible features' weights are sampled (site
        ``theta_visible``) and ``theta`` is a deterministic site with zeros elsewhere.
        """
        import numpyro

        from .options import sample_site

        default = {"dist": "normal", "loc": 0.0, "scale": 1.0}
        invisible = self.invisible_features() if fix_gauge else np.zeros(self.num_features, bool)
        if not invisible.any():
            return {"theta": sample_site("theta", options, default, (self.num_features,))}
        visible = np.flatnonzero(~invisible)
        prior = {"theta_visible": options["theta"]} if "theta" in options else {}
        free = sample_site("theta_visible", prior, default, (visible.size,))
        theta = jnp.zeros((self.num_features,)).at[visible].set(free)
        return {"theta": numpyro.deterministic("theta", theta)}

    def counterfactual_payoffs(self, params, joint_action, present=None):
        theta = params["theta"]
        pay = jnp.zeros((self.num_agents, self.num_actions))
        if self.own is not None:
            pay = pay + (jnp.asarray(self.own, theta.dtype) @ theta)[None, :]
        if self.cross is not None:
            _, counts_minus = present_counts(joint_action, present, self.num_actions)
            cross_theta = jnp.asarray(self.cross, theta.dtype) @ theta  # (A_k, A_c)
            pay = pay + counts_minus @ cross_theta.T
        return pay
