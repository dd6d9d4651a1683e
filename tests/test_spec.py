"""Tests for ``bayes_diml.spec``: the shipped specs, refusals with named keys, round trips.

Specs are parsed with ``tomllib`` and never evaluated (docs/design.md §9); every refusal is a
``SpecError`` whose message names the file and the offending key or section.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import numpy as np
import pytest

import bayes_diml
from bayes_diml import SpecError
from bayes_diml.priors import Prior
from bayes_diml.spec import dumps_toml, model_to_table, parse_spec

MODELS = Path(__file__).resolve().parents[1] / "models"
SPEC_PATHS = sorted(MODELS.glob("*.toml"))
SPEC_IDS = [p.stem for p in SPEC_PATHS]

# The E2 truth as written in models/e2_congestion.toml (typed here, not parsed).
E2_TRUTH = {
    "c1": [0.1785, 0.1895, 0.3443, 0.1276, 0.2800],
    "c2": [0.1229, 0.0688, 0.0555, 0.0775, 0.1157],
    "tau": [0.1125, 0.0300, 0.0865, 0.1339, 0.0846],
}
E2_LEARNER = {"alpha": 0.25, "beta": 3.0, "eps": 0.06}

# A valid spec (E2's shape: 4 agents, 5 actions); the malformed cases edit it.
BASE = """\
[game]
agents = 4
actions = 5

[mechanism]
family = "congestion"

[mechanism.truth]
c1 = [0.1785, 0.1895, 0.3443, 0.1276, 0.2800]
c2 = [0.1229, 0.0688, 0.0555, 0.0775, 0.1157]
tau = [0.1125, 0.0300, 0.0865, 0.1339, 0.0846]

[learner]
rule = "logit_q"
alpha = 0.25
beta = 3.0
eps = 0.06
"""

BASE_NO_TRUTH = BASE.split("[mechanism.truth]")[0] + BASE[BASE.index("[learner]"):]


def write_spec(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def edit(old: str, new: str, base: str = BASE) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


def refused(path: Path, *fragments: str) -> str:
    """``read_spec(path)`` raises SpecError naming the file and every fragment."""
    with pytest.raises(SpecError) as info:
        bayes_diml.read_spec(path)
    message = str(info.value)
    for fragment in (path.name, *fragments):
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# ------------------------------------------------------------------ shipped specs


def test_models_folder_has_specs():
    assert len(SPEC_PATHS) >= 4
    assert "e2_congestion" in SPEC_IDS


@pytest.mark.parametrize("path", SPEC_PATHS, ids=SPEC_IDS)
def test_every_shipped_spec_loads_with_truth_of_the_right_shapes(path):
    model, truth = bayes_diml.read_spec(path)
    assert isinstance(model, bayes_diml.Model)
    assert truth is not None, f"{path.name} has no [mechanism.truth]"
    shapes = model.mechanism.param_shapes()
    assert set(truth["mechanism"]) == set(shapes)
    for name, shape in shapes.items():
        array = np.asarray(truth["mechanism"][name])
        assert array.shape == tuple(shape), name
        assert np.all(np.isfinite(array)), name
    assert set(truth["learner"]) == set(model.learner.param_names)
    model.learner.check_params(truth["learner"], path.name)
    game = tomllib.loads(path.read_text(encoding="utf-8"))["game"]
    assert (model.num_agents, model.num_actions) == (game["agents"], game["actions"])


def test_e2_truth_equals_the_values_in_the_file():
    model, truth = bayes_diml.read_spec(MODELS / "e2_congestion.toml")
    assert model.mechanism.family == "congestion"
    assert (model.num_agents, model.num_actions) == (4, 5)
    for name, values in E2_TRUTH.items():
        np.testing.assert_array_equal(truth["mechanism"][name], np.array(values))
    assert model.learner.name == "logit_q"
    assert model.learner_params == E2_LEARNER
    assert truth["learner"] == E2_LEARNER


def test_default_spec_is_e2_congestion():
    path = bayes_diml.default_spec_path()
    assert path.is_file()
    model, truth = bayes_diml.read_spec(path)
    e2, e2_truth = bayes_diml.read_spec(MODELS / "e2_congestion.toml")
    assert model.mechanism.family == e2.mechanism.family == "congestion"
    assert (model.num_agents, model.num_actions) == (e2.num_agents, e2.num_actions)
    assert model.learner.name == e2.learner.name
    assert model.learner_params == e2.learner_params
    assert truth is not None
    for name in e2_truth["mechanism"]:
        np.testing.assert_array_equal(truth["mechanism"][name], e2_truth["mechanism"][name])
    assert truth["learner"] == e2_truth["learner"]


# ------------------------------------------------------------------ refusals

_LINEAR_NO_FEATURES = edit('family = "congestion"', 'family = "linear"', BASE_NO_TRUTH)

# case id -> (spec text, fragments the message must contain besides the file name)
MALFORMED: dict[str, tuple[str, tuple[str, ...]]] = {
    "invalid_toml": (edit("agents = 4", "agents = = 4"), ("not valid TOML", "line 2")),
    "missing_game": (BASE.replace("[game]\nagents = 4\nactions = 5\n", ""), ("[game]",)),
    "game_not_a_table": (edit("[game]\nagents = 4\nactions = 5\n", "game = 3\n"), ("[game]",)),
    "missing_agents": (edit("agents = 4\n", ""), ("[game]", "'agents'")),
    "agents_zero": (edit("agents = 4", "agents = 0"), ("[game]", "'agents'")),
    "agents_float": (edit("agents = 4", "agents = 4.0"), ("[game]", "'agents'")),
    "agents_bool": (edit("agents = 4", "agents = true"), ("[game]", "'agents'")),
    "missing_actions": (edit("actions = 5\n", ""), ("[game]", "'actions'")),
    "actions_one": (edit("actions = 5", "actions = 1"), ("[game]", "'actions'")),
    "unknown_top_level_key": (BASE + "\n[solver]\nsteps = 3\n", ("'solver'",)),
    "unknown_game_key": (
        edit("actions = 5", "actions = 5\nagnets = 4"),
        ("[game]", "'agnets'", "did you mean 'agents'"),
    ),
    "missing_mechanism": (BASE_NO_TRUTH.replace('[mechanism]\nfamily = "congestion"\n', ""), ("[mechanism]",)),
    "missing_family": (edit('family = "congestion"\n', ""), ("[mechanism]", "'family'")),
    "unknown_family": (
        edit('family = "congestion"', 'family = "congestoin"'),
        ("[mechanism]", "'congestoin'", "did you mean 'congestion'"),
    ),
    "option_of_another_family": (
        edit('family = "congestion"', 'family = "congestion"\nhidden = [8]'),
        ("[mechanism]", "'hidden'"),
    ),
    "truth_wrong_shape": (
        edit("c1 = [0.1785, 0.1895, 0.3443, 0.1276, 0.2800]", "c1 = [0.1785, 0.1895, 0.3443, 0.1276]"),
        ("[mechanism.truth]", "'c1'", "(4,)", "(5,)"),
    ),
    "truth_missing_parameter": (
        edit("tau = [0.1125, 0.0300, 0.0865, 0.1339, 0.0846]\n", ""),
        ("[mechanism.truth]", "tau"),
    ),
    "truth_unknown_parameter": (
        edit("tau = [", "toll = [0.0, 0.0, 0.0, 0.0, 0.0]\ntau = ["),
        ("[mechanism.truth]", "toll"),
    ),
    "truth_not_finite": (edit("c2 = [0.1229,", "c2 = [nan,"), ("[mechanism.truth]", "'c2'")),
    "truth_ragged": (edit("c2 = [0.1229,", "c2 = [[1, 2], 0.1229,"), ("[mechanism.truth]", "'c2'")),
    "truth_weights_missing_file": (
        edit("[mechanism.truth]\n", '[mechanism.truth]\nweights = "missing.npz"\n'),
        ("[mechanism.truth]", "'weights'", "missing.npz"),
    ),
    "learner_parameter_string": (edit("alpha = 0.25", 'alpha = "0.25"'), ("[learner]", "'alpha'")),
    "learner_parameter_inf": (edit("beta = 3.0", "beta = inf"), ("[learner]", "'beta'")),
    "learner_parameter_bool": (edit("beta = 3.0", "beta = true"), ("[learner]", "'beta'")),
    "learner_parameter_missing": (edit("eps = 0.06\n", ""), ("[learner]", "'eps'")),
    "learner_unknown_key": (edit("eps = 0.06", "eps = 0.06\ngamma = 0.9"), ("[learner]", "'gamma'")),
    "unknown_rule": (
        edit('rule = "logit_q"', 'rule = "logit_qq"'),
        ("[learner]", "'logit_qq'", "did you mean 'logit_q'"),
    ),
    "prior_unknown_dist": (
        edit("alpha = 0.25", 'alpha = {dist = "betta", a = 2, b = 5}'),
        ("[learner]", "alpha", "'betta'", "did you mean 'beta'"),
    ),
    "prior_missing_parameter": (
        edit("alpha = 0.25", 'alpha = {dist = "beta", a = 2}'),
        ("[learner]", "alpha", "'b'"),
    ),
    "prior_unexpected_parameter": (
        edit("alpha = 0.25", 'alpha = {dist = "beta", a = 2, b = 5, c = 1}'),
        ("[learner]", "alpha", "'c'"),
    ),
    "prior_without_dist": (edit("alpha = 0.25", "alpha = {a = 2, b = 5}"), ("[learner]", "alpha", "'dist'")),
    "prior_zero_scale": (
        edit("eps = 0.06", 'eps = {dist = "halfnormal", scale = 0}'),
        ("[learner]", "eps", "'scale'"),
    ),
    "prior_negative_scale": (
        edit("eps = 0.06", 'eps = {dist = "lognormal", loc = -3, scale = -1}'),
        ("[learner]", "eps", "'scale'"),
    ),
    "prior_parameter_string": (
        edit("alpha = 0.25", 'alpha = {dist = "beta", a = "2", b = 5}'),
        ("[learner]", "alpha", "'a'"),
    ),
    "linear_without_features": (_LINEAR_NO_FEATURES, ("[mechanism]", "'features'")),
    "linear_features_missing_file": (
        edit('family = "linear"', 'family = "linear"\nfeatures = "nope.npz"', _LINEAR_NO_FEATURES),
        ("[mechanism]", "'features'", "nope.npz"),
    ),
    "hidden_not_ints": (
        edit('family = "congestion"', 'family = "neural"\nhidden = [8, "x"]', BASE_NO_TRUTH),
        ("[mechanism]", "'hidden'"),
    ),
    "embed_dim_zero": (
        edit('family = "congestion"', 'family = "neural"\nembed_dim = 0', BASE_NO_TRUTH),
        ("[mechanism]", "'embed_dim'"),
    ),
    "subsidy_not_bool": (
        edit('family = "congestion"', 'family = "public_goods"\nsubsidy = "yes"', BASE_NO_TRUTH),
        ("[mechanism]", "'subsidy'"),
    ),
    "duplicate_action_labels": (
        edit("actions = 5", 'actions = 5\naction_labels = ["a", "b", "b", "c", "d"]'),
        ("[game]", "'action_labels'"),
    ),
    # (this message says "integer action labels ... 0..4", not the key 'action_labels')
    "integer_action_labels_not_codes": (
        edit("actions = 5", "actions = 5\naction_labels = [1, 2, 3, 4, 5]"),
        ("[game]", "action labels", "0..4"),
    ),
    "integer_action_labels_out_of_order": (
        edit("actions = 5", "actions = 5\naction_labels = [0, 2, 1, 3, 4]"),
        ("[game]", "action labels", "0..4"),
    ),
    "action_labels_wrong_length": (
        edit("actions = 5", 'actions = 5\naction_labels = ["a", "b", "c", "d"]'),
        ("[game]", "'action_labels'"),
    ),
    "action_labels_mixed_types": (
        edit("actions = 5", 'actions = 5\naction_labels = ["a", "b", "c", "d", 4]'),
        ("[game]", "'action_labels'"),
    ),
    "duplicate_agent_labels": (
        edit("actions = 5", 'actions = 5\nagent_labels = ["ann", "bob", "bob", "cy"]'),
        ("[game]", "'agent_labels'"),
    ),
    "mechanism_prior_unknown_key": (
        edit("[learner]", '[mechanism.prior]\ndd = {dist = "normal", loc = 0, scale = 1}\n\n[learner]'),
        ("[mechanism.prior]", "'dd'", "did you mean 'd'"),
    ),
    "mechanism_prior_bad_prior": (
        edit("[learner]", '[mechanism.prior]\nd = {dist = "normal", loc = 0, scale = -1}\n\n[learner]'),
        ("[mechanism.prior]", "d", "'scale'"),
    ),
    "mechanism_prior_not_a_table": (
        edit('family = "congestion"', 'family = "congestion"\nprior = 3'),
        ("[mechanism.prior]",),
    ),
    "mechanism_prior_option_of_another_family": (
        edit("[learner]", "[mechanism.prior]\nweight_scale = 2.0\n\n[learner]"),
        ("[mechanism.prior]", "'weight_scale'"),
    ),
    "learner_truth_unknown_parameter": (
        BASE + "\n[learner.truth]\ngamma = 0.5\n",
        ("[learner.truth]", "'gamma'"),
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_spec_is_refused_naming_file_and_key(tmp_path, case):
    text, fragments = MALFORMED[case]
    refused(write_spec(tmp_path, text), *fragments)


# Learner parameters outside their domains (checked in Model.__post_init__).
OUT_OF_DOMAIN: dict[str, tuple[str, str]] = {
    "alpha_negative": ("alpha = 0.25", "alpha = -0.1"),
    "alpha_zero": ("alpha = 0.25", "alpha = 0"),
    "alpha_above_one": ("alpha = 0.25", "alpha = 1.5"),
    "eps_one": ("eps = 0.06", "eps = 1"),
    "eps_negative": ("eps = 0.06", "eps = -0.01"),
    "beta_zero": ("beta = 3.0", "beta = 0"),
    "beta_negative": ("beta = 3.0", "beta = -2.0"),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_DOMAIN))
def test_learner_parameter_out_of_domain_is_refused_naming_file_and_parameter(tmp_path, case):
    parameter = case.split("_")[0]
    refused(write_spec(tmp_path, edit(*OUT_OF_DOMAIN[case])), "[learner]", f"'{parameter}'")


def test_learner_c_below_one_is_refused(tmp_path):
    text = edit('rule = "logit_q"', 'rule = "logit_q_decreasing"').replace("alpha = 0.25", "c = 0.5")
    with pytest.raises(SpecError, match="'c'"):
        bayes_diml.read_spec(write_spec(tmp_path, text))


def test_truth_weights_file_that_is_not_npz_is_refused(tmp_path):
    (tmp_path / "weights.npz").write_text("not an archive", encoding="utf-8")
    path = write_spec(tmp_path, edit("[mechanism.truth]\n", '[mechanism.truth]\nweights = "weights.npz"\n'))
    refused(path, "[mechanism.truth]", "weights.npz")


def test_truth_weights_with_pickled_objects_are_refused(tmp_path):
    np.savez(tmp_path / "weights.npz", tau=np.array([{"x": 1}] * 5, dtype=object))
    path = write_spec(
        tmp_path, edit("tau = [0.1125, 0.0300, 0.0865, 0.1339, 0.0846]\n", 'weights = "weights.npz"\n')
    )
    refused(path, "[mechanism.truth]", "weights.npz")


def test_truth_from_npz_beside_the_spec(tmp_path):
    np.savez(tmp_path / "truth.npz", tau=np.array(E2_TRUTH["tau"]))
    path = write_spec(
        tmp_path, edit("tau = [0.1125, 0.0300, 0.0865, 0.1339, 0.0846]\n", 'weights = "truth.npz"\n')
    )
    _, truth = bayes_diml.read_spec(path)
    np.testing.assert_array_equal(truth["mechanism"]["tau"], E2_TRUTH["tau"])
    np.testing.assert_array_equal(truth["mechanism"]["c1"], E2_TRUTH["c1"])


def test_missing_spec_file_is_refused(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(SpecError, match="absent.toml"):
        bayes_diml.read_spec(path)


def test_spec_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(BASE.replace('"logit_q"', '"logit_q\xe9"').encode("latin-1"))
    with pytest.raises(SpecError, match="latin1.toml"):
        bayes_diml.read_spec(path)


# ---------------------------------------------------------- known spec-layer bugs
# Each is a refusal the schema (models/README.md, docs/design.md §9) promises and read_spec does not
# make. Found by the test-writing pass and fixed; kept as regression tests (the third field says what went wrong).
FIXED_BUGS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "truth_strings_coerced": (
        edit("c1 = [0.1785, 0.1895, 0.3443, 0.1276, 0.2800]", 'c1 = ["0.1785", "0.1895", "0.3443", "0.1276", "0.28"]'),
        ("[mechanism.truth]", "'c1'"),
        "bayes_diml/spec.py parse_spec: np.asarray(value, dtype=np.float64) silently turns the strings "
        "c1 = [\"0.1785\", ...] into numbers (docs/design.md §9: nothing coerced); expected SpecError naming 'c1'",
    ),
    "truth_bools_coerced": (
        edit("c1 = [0.1785, 0.1895, 0.3443, 0.1276, 0.2800]", "c1 = [true, false, true, false, true]"),
        ("[mechanism.truth]", "'c1'"),
        "bayes_diml/spec.py parse_spec: c1 = [true, false, ...] is accepted as [1.0, 0.0, ...]; "
        "expected SpecError naming 'c1'",
    ),
    "learner_truth_string_coerced": (
        edit("alpha = 0.25", 'alpha = {dist = "beta", a = 2, b = 5}') + '\n[learner.truth]\nalpha = "0.3"\n',
        ("[learner.truth]", "'alpha'"),
        "bayes_diml/spec.py parse_spec: [learner.truth] values go through float(v), so alpha = \"0.3\" "
        "is accepted as 0.3 (and alpha = true as 1.0); expected SpecError naming 'alpha'",
    ),
    "learner_truth_for_fixed_parameter": (
        BASE + "\n[learner.truth]\nalpha = 0.5\n",
        ("[learner.truth]", "'alpha'"),
        "bayes_diml/spec.py parse_spec: [learner.truth] alpha = 0.5 is accepted although [learner] fixes "
        "alpha = 0.25 (README: [learner.truth] holds parameters that carry a prior); truth['learner']['alpha'] "
        "becomes 0.5 so simulate uses 0.5 while fit assumes 0.25; expected SpecError naming 'alpha'",
    ),
    "mechanism_prior_number_for_a_prior_table": (
        edit("[learner]", "[mechanism.prior]\nd = 2.0\n\n[learner]"),
        ("[mechanism.prior]", "'d'"),
        "mechanisms/base.py check_prior_options (called by read_spec since dda8466) accepts any positive "
        "number for any known key, so congestion's `d = 2.0` passes read_spec and `check --spec`, and the "
        "fit then fails in sample_site with \"[mechanism.prior] d: a prior is an inline table\" (the "
        "read-time check does not know which keys take a prior table and which a number, e.g. weight_scale)",
    ),
    "agent_labels_not_sorted": (
        edit("actions = 5", 'actions = 5\nagent_labels = ["bob", "ann", "cy", "dee"]'),
        ("[game]", "'agent_labels'"),
        "bayes_diml/spec.py _labels does not check that agent_labels are sorted (README: 'list of n labels "
        "(sorted)'); the spec is accepted and every data file is then refused by loading.check_data with "
        "'agent labels [...] differ from the spec's agent_labels'",
    ),
    "action_label_empty_string": (
        edit("actions = 5", 'actions = 5\naction_labels = ["", "b", "c", "d", "e"]'),
        ("[game]", "'action_labels'"),
        "bayes_diml/spec.py _labels accepts action labels that Trajectories refuses (empty string, line "
        "breaks: trajectories._label_problem), so no data file can use the spec",
    ),
}


@pytest.mark.parametrize(
    "case",
    sorted(FIXED_BUGS),
)
def test_spec_refusals_the_schema_promises(tmp_path, case):
    text, fragments, _ = FIXED_BUGS[case]
    refused(write_spec(tmp_path, text), *fragments)


# ------------------------------------------------------------------ labels, priors


def test_string_action_labels_keep_their_order(tmp_path):
    # README: string actions in data are coded in the order of action_labels (else sorted),
    # so an unsorted list is valid and defines the codes.
    text = edit("actions = 5", 'actions = 5\naction_labels = ["walk", "bus", "car", "bike", "train"]')
    model, _ = bayes_diml.read_spec(write_spec(tmp_path, text))
    assert model.action_labels == ("walk", "bus", "car", "bike", "train")


def test_integer_action_labels_and_agent_labels(tmp_path):
    text = edit("actions = 5", 'actions = 5\naction_labels = [0, 1, 2, 3, 4]\nagent_labels = ["a1", "a2", "a3", "a4"]')
    model, _ = bayes_diml.read_spec(write_spec(tmp_path, text))
    assert model.action_labels == (0, 1, 2, 3, 4)
    assert model.agent_labels == ("a1", "a2", "a3", "a4")


def test_prior_inline_table_parses_into_a_prior(tmp_path):
    text = edit("alpha = 0.25", 'alpha = {dist = "beta", a = 2, b = 5}', BASE_NO_TRUTH)
    model, truth = bayes_diml.read_spec(write_spec(tmp_path, text))
    assert truth is None
    prior = model.learner_priors["alpha"]
    assert isinstance(prior, Prior)
    assert prior.dist == "beta"
    assert prior.kwargs == {"a": 2.0, "b": 5.0}
    assert all(isinstance(v, float) for v in prior.kwargs.values())
    assert model.fixed_learner_params == {"beta": 3.0, "eps": 0.06}


@pytest.mark.parametrize(
    "table, kwargs",
    [
        ('{dist = "normal", loc = 0, scale = 1}', {"loc": 0.0, "scale": 1.0}),
        ('{dist = "lognormal", loc = -2, scale = 0.5}', {"loc": -2.0, "scale": 0.5}),
        ('{dist = "halfnormal", scale = 0.1}', {"scale": 0.1}),
        ('{dist = "gamma", concentration = 2, rate = 20}', {"concentration": 2.0, "rate": 20.0}),
        ('{dist = "uniform", low = 0.0, high = 0.2}', {"low": 0.0, "high": 0.2}),
        ('{dist = "exponential", rate = 10}', {"rate": 10.0}),
    ],
)
def test_every_prior_family_parses(tmp_path, table, kwargs):
    # on congestion's d, which is real-valued so that every family fits (a prior must fit
    # its parameter's domain: tests/test_prior_domains.py)
    text = edit("[learner]", f"[mechanism.prior]\nd = {table}\n\n[learner]", BASE_NO_TRUTH)
    model, _ = bayes_diml.read_spec(write_spec(tmp_path, text))
    assert Prior.parse(model.mechanism_prior["d"], "d").kwargs == kwargs


def test_uniform_prior_needs_low_below_high(tmp_path):
    path = write_spec(tmp_path, edit("eps = 0.06", 'eps = {dist = "uniform", low = 0.2, high = 0.1}'))
    refused(path, "eps", "low < high")


def test_learner_truth_completes_the_truth(tmp_path):
    text = edit("alpha = 0.25", 'alpha = {dist = "beta", a = 2, b = 5}')
    # with its true value the truth holds every learner parameter (without it, see
    # test_a_learner_prior_without_truth_still_fits_but_does_not_simulate)
    model, truth = bayes_diml.read_spec(write_spec(tmp_path, text + "\n[learner.truth]\nalpha = 0.3\n", "ok.toml"))
    assert truth["learner"] == {"alpha": 0.3, "beta": 3.0, "eps": 0.06}
    assert set(model.learner_priors) == {"alpha"}


def test_learner_truth_out_of_domain_is_refused(tmp_path):
    text = edit("alpha = 0.25", 'alpha = {dist = "beta", a = 2, b = 5}') + "\n[learner.truth]\nalpha = 1.5\n"
    refused(write_spec(tmp_path, text), "[learner.truth]", "'alpha'")


# ------------------------------------------------------------------ round trips


def _signature(model) -> dict:
    """Everything that defines a model, in comparable form (arrays compared separately)."""
    mechanism = model.mechanism
    return {
        "family": mechanism.family,
        "num_agents": model.num_agents,
        "num_actions": model.num_actions,
        "hidden": getattr(mechanism, "hidden", None),
        "embed_dim": getattr(mechanism, "embed_dim", None),
        "subsidy_hidden": getattr(mechanism, "subsidy_hidden", None),
        "feature_names": getattr(mechanism, "feature_names", None),
        "learner": model.learner.name,
        "learner_params": model.learner_params,
        "mechanism_prior": model.mechanism_prior,
        "action_labels": model.action_labels,
        "agent_labels": model.agent_labels,
    }


def _round_trip(model, folder: Path):
    """model -> table + files -> TOML text in ``folder`` -> (parse_spec model, read_spec model)."""
    table, files = model_to_table(model)
    folder.mkdir(parents=True, exist_ok=True)
    for name, arrays in files.items():
        np.savez(folder / name, **arrays)
    text = dumps_toml(table)
    (folder / "spec.toml").write_text(text, encoding="utf-8")
    parsed, truth = parse_spec(tomllib.loads(text), source="round-trip", base_dir=folder)
    assert truth is None
    read, _ = bayes_diml.read_spec(folder / "spec.toml")
    return parsed, read


def _assert_equivalent(model, other):
    assert _signature(other) == _signature(model)
    for name in ("own", "cross"):
        a, b = getattr(model.mechanism, name, None), getattr(other.mechanism, name, None)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


@pytest.mark.parametrize("path", SPEC_PATHS, ids=SPEC_IDS)
def test_round_trip_of_every_shipped_spec(tmp_path, path):
    model, _ = bayes_diml.read_spec(path)
    for other in _round_trip(model, tmp_path / "out"):
        _assert_equivalent(model, other)


def _linear_spec(tmp_path: Path, own: bool = True, cross: bool = True) -> Path:
    rng = np.random.default_rng(7)
    arrays = {}
    if own:
        arrays["own"] = rng.normal(size=(5, 3))
    if cross:
        arrays["cross"] = rng.normal(size=(5, 5, 3))
    np.savez(tmp_path / "features.npz", **arrays)
    text = edit(
        'family = "congestion"',
        'family = "linear"\nfeatures = "features.npz"\nfeature_names = ["toll", "time", "comfort"]',
        BASE_NO_TRUTH,
    )
    return write_spec(tmp_path, text)


@pytest.mark.parametrize("own, cross", [(True, True), (True, False), (False, True)], ids=["both", "own", "cross"])
def test_round_trip_of_a_linear_model(tmp_path, own, cross):
    model, truth = bayes_diml.read_spec(_linear_spec(tmp_path, own, cross))
    assert truth is None
    assert model.mechanism.family == "linear"
    assert model.mechanism.feature_names == ("toll", "time", "comfort")
    assert (model.mechanism.own is None) == (not own)
    assert (model.mechanism.cross is None) == (not cross)
    for other in _round_trip(model, tmp_path / "out"):
        _assert_equivalent(model, other)


def test_round_trip_keeps_priors_labels_and_family_options(tmp_path):
    text = """\
[game]
agents = 3
actions = 4
action_labels = ["zeta \\"z\\"", "alpha\\\\a", "caf\u00e9", "b"]
agent_labels = ["a", "b", "c"]

[mechanism]
family = "public_goods"
subsidy = true
subsidy_hidden = [5, 3]

[mechanism.prior]
scale = {dist = "lognormal", loc = 0, scale = 0.5}
weight_scale = 2.0

[learner]
rule = "logit_q_decreasing"
c = {dist = "uniform", low = 1, high = 30}
beta = {dist = "gamma", concentration = 2, rate = 0.5}
eps = {dist = "beta", a = 1, b = 20}
"""
    model, _ = bayes_diml.read_spec(write_spec(tmp_path, text))
    assert model.action_labels == ('zeta "z"', "alpha\\a", "caf\u00e9", "b")
    assert model.mechanism.subsidy_hidden == (5, 3)
    for other in _round_trip(model, tmp_path / "out"):
        _assert_equivalent(model, other)


def test_round_trip_of_public_goods_without_subsidy(tmp_path):
    text = edit('family = "congestion"', 'family = "public_goods"\nsubsidy = false', BASE_NO_TRUTH)
    model, _ = bayes_diml.read_spec(write_spec(tmp_path, text))
    assert model.mechanism.subsidy_hidden is None
    for other in _round_trip(model, tmp_path / "out"):
        _assert_equivalent(model, other)


# ------------------------------------------------------------------ nothing evaluated

_PAYLOAD = "__import__('os').system('touch PWNED')"


@pytest.mark.parametrize(
    "old, new",
    [
        ("agents = 4", f'agents = "{_PAYLOAD}"'),
        ("actions = 5", f'actions = "{_PAYLOAD}"'),
        ('family = "congestion"', f'family = "{_PAYLOAD}"'),
        ('rule = "logit_q"', f'rule = "{_PAYLOAD}"'),
        ("alpha = 0.25", f'alpha = "{_PAYLOAD}"'),
        ("c1 = [0.1785, 0.1895, 0.3443, 0.1276, 0.2800]", f'c1 = "{_PAYLOAD}"'),
        ("alpha = 0.25", f'alpha = {{dist = "beta", a = "{_PAYLOAD}", b = 5}}'),
        ("[mechanism.truth]\n", f'[mechanism.truth]\nweights = "{_PAYLOAD}"\n'),
    ],
    ids=["agents", "actions", "family", "rule", "alpha", "truth", "prior", "weights"],
)
def test_nothing_in_a_spec_is_evaluated(tmp_path, monkeypatch, old, new):
    monkeypatch.chdir(tmp_path)
    path = write_spec(tmp_path, edit(old, new))
    with pytest.raises(SpecError):
        bayes_diml.read_spec(path)
    assert not (tmp_path / "PWNED").exists()
    assert not Path(os.getcwd(), "PWNED").exists()


def test_a_learner_prior_without_truth_still_fits_but_does_not_simulate(tmp_path, capsys):
    """A simulation spec with a learner prior added and no [learner.truth]: reading it for a
    fit works (the learner truth is partial), simulating from it names the missing value."""
    from bayes_diml.cli import main

    path = write_spec(tmp_path, edit("alpha = 0.25", 'alpha = {dist = "beta", a = 2, b = 5}'))
    model, truth = bayes_diml.read_spec(path)
    assert set(model.learner_priors) == {"alpha"}
    assert truth["learner"] == {"beta": 3.0, "eps": 0.06}
    status = main(["simulate", str(path), "--episodes", "2", "--rounds", "3", "--out", str(tmp_path / "d.csv")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.count("\n") == 0
    assert "['alpha']" in err and "[learner.truth]" in err and str(path) in err
    assert not (tmp_path / "d.csv").exists()
