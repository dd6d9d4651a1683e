"""Priors must live inside their parameter's domain (issue 15, point 2).

A prior whose support is not inside the domain of the parameter it is put on
(``alpha`` in (0, 1], ``beta`` > 0, ``eps`` in [0, 1), ``c`` >= 1, ``phi``, ``rho``,
``delta`` in [0, 1], ``eta`` > 0, payoff ``sigma`` > 0, the public-goods ``scale`` and
``k`` > 0) is refused by ``read_spec`` and ``bayes-diml check`` with one line naming
the parameter, its domain and a prior that fits; the suggested prior is itself
accepted. Every draw of a valid prior (NumPyro samples on the unconstrained scale
through the support's bijection), pooled or per agent, lies in the domain.

The expectations below (domains, supports, which prior fits which parameter) are
written out by hand, not taken from the package.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import jax
import numpy as np
import pytest
from numpyro.infer import MCMC, NUTS, Predictive

from bayes_diml import SpecError, read_spec
from bayes_diml.cli import main
from bayes_diml.inference.numpyro_model import sample_params
from bayes_diml.learners import LEARNERS
from bayes_diml.mechanisms import FAMILIES, Linear, Tabular
from bayes_diml.model import Model
from bayes_diml.priors import PRIOR_FAMILIES, Prior

ROOT = Path(__file__).resolve().parents[1]
OK_DATA = ROOT / "tests" / "data" / "bad" / "ok_data.csv"  # 3 agents a, b, c; actions 0..4
README = ROOT / "models" / "README.md"

INF = math.inf

# ----------------------------------------------------------------- the expectations
# parameter -> (low, high, low closed, high closed)
LEARNER_DOMAINS = {
    "alpha": (0.0, 1.0, False, True),
    "beta": (0.0, INF, False, False),
    "eps": (0.0, 1.0, True, False),
    "c": (1.0, INF, True, False),
    "phi": (0.0, 1.0, True, True),
    "rho": (0.0, 1.0, True, True),
    "delta": (0.0, 1.0, True, True),
    "eta": (0.0, INF, False, False),
}
DOMAIN_TEXT = {"alpha": "(0, 1]", "beta": "(0, inf)", "eps": "[0, 1)", "c": "[1, inf)",
               "phi": "[0, 1]", "rho": "[0, 1]", "delta": "[0, 1]", "eta": "(0, inf)"}

# One or more priors of every family in models/README.md's prior table.
PRIORS = {
    "normal": {"dist": "normal", "loc": 0.3, "scale": 1.0},
    "lognormal": {"dist": "lognormal", "loc": 0.0, "scale": 1.0},
    "halfnormal": {"dist": "halfnormal", "scale": 1.0},
    "beta": {"dist": "beta", "a": 2, "b": 5},
    "gamma": {"dist": "gamma", "concentration": 2, "rate": 0.5},
    "exponential": {"dist": "exponential", "rate": 1.0},
    "uniform(-1, 2)": {"dist": "uniform", "low": -1, "high": 2},
    "uniform(-3, -1)": {"dist": "uniform", "low": -3, "high": -1},
    "uniform(-0.5, 0.5)": {"dist": "uniform", "low": -0.5, "high": 0.5},
    "uniform(0, 1)": {"dist": "uniform", "low": 0, "high": 1},
    "uniform(0.2, 0.8)": {"dist": "uniform", "low": 0.2, "high": 0.8},
    "uniform(0.5, 1)": {"dist": "uniform", "low": 0.5, "high": 1},
    "uniform(0.5, 1.5)": {"dist": "uniform", "low": 0.5, "high": 1.5},
    "uniform(0, 5)": {"dist": "uniform", "low": 0, "high": 5},
    "uniform(1, 20)": {"dist": "uniform", "low": 1, "high": 20},
}
# Which of them fit a domain (every continuous prior puts probability 0 on its end points).
REAL = set(PRIORS)
UNIT = {"beta", "uniform(0, 1)", "uniform(0.2, 0.8)", "uniform(0.5, 1)"}
POSITIVE = {"lognormal", "halfnormal", "gamma", "exponential", "beta", "uniform(0, 1)", "uniform(0.2, 0.8)",
            "uniform(0.5, 1)", "uniform(0.5, 1.5)", "uniform(0, 5)", "uniform(1, 20)"}
AT_LEAST_ONE = {"uniform(1, 20)"}
LEARNER_FITS = {"alpha": UNIT, "eps": UNIT, "phi": UNIT, "rho": UNIT, "delta": UNIT,
                "beta": POSITIVE, "eta": POSITIVE, "c": AT_LEAST_ONE}
# (family, [mechanism.prior] key) -> priors that fit; every prior-table key of every family.
FAMILY_FITS = {
    ("congestion", "d"): REAL, ("congestion", "c1"): REAL, ("congestion", "c2"): REAL,
    ("public_goods", "scale"): POSITIVE, ("public_goods", "k"): POSITIVE, ("public_goods", "cost"): REAL,
    ("linear", "theta"): REAL,
}
FAMILY_DOMAIN_TEXT = {("public_goods", "scale"): "(0, inf)", ("public_goods", "k"): "(0, inf)"}
SIGMA_FITS = POSITIVE

VALUES = {"alpha": 0.3, "beta": 3.0, "eps": 0.1, "c": 1.5, "phi": 0.8, "rho": 0.6, "delta": 0.4, "eta": 0.7}


def _inside(values, name) -> bool:
    low, high, low_closed, high_closed = LEARNER_DOMAINS[name]
    v = np.asarray(values, dtype=float)
    above = (v >= low) if low_closed else (v > low)
    below = (v <= high) if high_closed else (v < high)
    return bool(np.all(np.isfinite(v) & above & below))


def _prior(table: dict) -> Prior:
    return Prior.parse(dict(table), "test")


def _learner_model(rule: str, param: str, prior, **options) -> Model:
    learner = LEARNERS[rule]
    fixed = {k: VALUES[k] for k in learner.param_names}
    return Model(Tabular(num_agents=3, num_actions=2), learner, {**fixed, param: prior}, **options)


def _family(name: str):
    if name == "linear":
        return Linear(num_agents=3, num_actions=3, own=np.eye(3))
    return FAMILIES[name](num_agents=3, num_actions=3)


def _learner_params():
    return [(rule, p) for rule, learner in sorted(LEARNERS.items()) for p in learner.param_names]


def _fits(table: dict, domain: tuple) -> bool:
    """Whether the prior ``table`` has its support inside ``domain`` (worked out here by hand:
    every support is open, so only the end points' values matter)."""
    supports = {"normal": (-INF, INF), "lognormal": (0.0, INF), "halfnormal": (0.0, INF), "gamma": (0.0, INF),
                "exponential": (0.0, INF), "beta": (0.0, 1.0)}
    low, high = supports[table["dist"]] if table["dist"] != "uniform" else (table["low"], table["high"])
    return low >= domain[0] and high <= domain[1]


def _suggestion(message: str) -> tuple[str, dict]:
    """The ``NAME = {...}`` after 'use e.g.' / 'e.g.' in a message, parsed as TOML."""
    match = re.search(r"e\.g\. (\w+ = \{.*\})$", message)
    assert match, f"no suggestion in {message!r}"
    ((name, table),) = tomllib.loads(match.group(1)).items()
    return name, table


# ----------------------------------------------------------------- spec files
SPEC_HEAD = """\
[game]
agents = 3
actions = 5

[mechanism]
family = "{family}"
{mechanism}
[learner]
rule = "{rule}"
{learner}
{payoff}"""

LOGIT_Q = "alpha = {alpha}\nbeta = 3.0\neps = 0.06\n"


def _spec(tmp_path: Path, *, family="congestion", mechanism="", rule="logit_q", learner=LOGIT_Q.format(alpha=0.25),
          payoff="", name="spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(SPEC_HEAD.format(family=family, mechanism=mechanism, rule=rule, learner=learner, payoff=payoff),
                    encoding="utf-8")
    return path


def _refusal(path: Path, capsys) -> str:
    """read_spec and ``check DATA --spec`` both refuse with the same single line naming the file."""
    with pytest.raises(SpecError) as info:
        read_spec(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path} ")
    assert main(["check", str(OK_DATA), "--spec", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {message}\n"
    return message


BAD_SPECS = {
    # the issue's two alpha priors
    "alpha-normal": dict(learner=LOGIT_Q.format(alpha='{dist = "normal", loc = 0.3, scale = 1.0}')),
    "alpha-uniform": dict(learner=LOGIT_Q.format(alpha='{dist = "uniform", low = -1, high = 2}')),
    "eps-lognormal": dict(learner='alpha = 0.25\nbeta = 3.0\neps = {dist = "lognormal", loc = -3, scale = 1}\n'),
    "beta-normal": dict(learner='alpha = 0.25\nbeta = {dist = "normal", loc = 3, scale = 1}\neps = 0.06\n'),
    "c-gamma": dict(rule="logit_q_decreasing",
                    learner='c = {dist = "gamma", concentration = 2, rate = 0.5}\nbeta = 3.0\neps = 0.06\n'),
    "phi-uniform": dict(rule="ewa", learner='phi = {dist = "uniform", low = 0.5, high = 1.5}\nrho = 0.5\n'
                                            'delta = 0.5\nbeta = 3.0\neps = 0.06\n'),
    "eta-normal": dict(rule="hedge", learner='eta = {dist = "normal", loc = 1, scale = 1}\n'),
    "per-agent-beta-centre": dict(learner='alpha = 0.25\nbeta = {dist = "uniform", low = -1, high = 5}\neps = 0.06\n'
                                          'per_agent = ["beta"]\n'),
    "payoff-sigma-normal": dict(payoff='[payoff]\nsigma = {dist = "normal", loc = 0, scale = 1}\n'),
    "public-goods-scale": dict(family="public_goods",
                               mechanism='\n[mechanism.prior]\nscale = {dist = "normal", loc = 1, scale = 1}\n'),
    "public-goods-k": dict(family="public_goods",
                           mechanism='\n[mechanism.prior]\nk = {dist = "uniform", low = -1, high = 3}\n'),
}
BAD_WHERE = {  # case -> (section and key, parameter name, domain)
    "alpha-normal": ("[learner] alpha", "alpha", "(0, 1]"),
    "alpha-uniform": ("[learner] alpha", "alpha", "(0, 1]"),
    "eps-lognormal": ("[learner] eps", "eps", "[0, 1)"),
    "beta-normal": ("[learner] beta", "beta", "(0, inf)"),
    "c-gamma": ("[learner] c", "c", "[1, inf)"),
    "phi-uniform": ("[learner] phi", "phi", "[0, 1]"),
    "eta-normal": ("[learner] eta", "eta", "(0, inf)"),
    "per-agent-beta-centre": ("[learner] beta", "beta", "(0, inf)"),
    "payoff-sigma-normal": ("[payoff] sigma", "sigma", "(0, inf)"),
    "public-goods-scale": ("[mechanism.prior] 'scale'", "scale", "(0, inf)"),
    "public-goods-k": ("[mechanism.prior] 'k'", "k", "(0, inf)"),
}


def test_the_issue_alpha_prior_is_refused_with_the_pinned_line(tmp_path, capsys):
    path = _spec(tmp_path, **BAD_SPECS["alpha-normal"])
    assert _refusal(path, capsys) == (
        f"{path} [learner] alpha: prior normal(loc=0.3, scale=1.0) has support (-inf, inf), outside alpha's "
        'domain (0, 1]; use e.g. alpha = {dist = "beta", a = 2, b = 5}'
    )


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_out_of_domain_prior_is_refused_by_read_spec_and_check(tmp_path, capsys, case):
    path = _spec(tmp_path, **BAD_SPECS[case])
    message = _refusal(path, capsys)
    where, name, domain = BAD_WHERE[case]
    assert message.startswith(f"{path} {where}: prior ")
    assert f"outside {name}'s domain {domain}; use e.g. {name} = {{" in message
    # (c) the suggestion, put in place of the refused prior, is accepted
    suggested_name, table = _suggestion(message)
    assert suggested_name == name
    assert _fits(table, LEARNER_DOMAINS.get(name, (0.0, INF))), message  # sigma, scale, k: > 0
    bad = BAD_SPECS[case]
    old = re.search(rf"^{name} = (\{{.*\}})$", "\n".join(bad.values()), re.M).group(1)
    fixed = {k: v.replace(f"{name} = {old}", f"{name} = {_inline(table)}") for k, v in bad.items()}
    model, _ = read_spec(_spec(tmp_path, name="fixed.toml", **fixed))
    assert model is not None
    assert main(["check", str(_payoff_data(tmp_path)), "--spec", str(tmp_path / "fixed.toml")]) == 0
    assert capsys.readouterr().err == ""


def _payoff_data(tmp_path: Path) -> Path:
    """ok_data.csv with an observed payoff column (it pins the payoff scale, so a prior on
    beta or eta passes ``check``'s identifiability test)."""
    lines = OK_DATA.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "data_with_payoff.csv"
    path.write_text("\n".join([lines[0] + ",payoff", *(line + ",0.5" for line in lines[1:])]) + "\n", encoding="utf-8")
    return path


def _inline(table: dict) -> str:
    return "{" + ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in table.items()) + "}"


def test_valid_specs_of_the_same_shape_are_accepted(tmp_path, capsys):
    """The refusals above are about the priors: in-domain priors on the same keys pass."""
    learner = ('alpha = {dist = "uniform", low = 0, high = 1}\nbeta = {dist = "lognormal", loc = 1, scale = 0.5}\n'
               'eps = {dist = "uniform", low = 0, high = 0.2}\nper_agent = ["beta", "eps"]\n')
    payoff = '[payoff]\nsigma = {dist = "exponential", rate = 2}\n'
    path = _spec(tmp_path, family="public_goods", learner=learner, payoff=payoff,
                 mechanism='\n[mechanism.prior]\nscale = {dist = "gamma", concentration = 2, rate = 2}\n'
                           'cost = {dist = "normal", loc = 0, scale = 1}\n')
    read_spec(path)
    assert main(["check", str(_payoff_data(tmp_path)), "--spec", str(path)]) == 0
    assert capsys.readouterr().err == ""
    path = _spec(tmp_path, rule="logit_q_decreasing", name="c.toml",
                 learner='c = {dist = "uniform", low = 1, high = 20}\nbeta = 3.0\neps = 0.06\n')
    read_spec(path)


def test_per_agent_on_a_fixed_parameter_suggests_a_prior_of_its_domain(tmp_path):
    """The per_agent refusal's example prior fits the parameter it names (it used to
    suggest a lognormal prior for every parameter, also for eps in [0, 1))."""
    for rule, name in _learner_params():
        learner = LEARNERS[rule]
        body = "".join(f"{k} = {VALUES[k]}\n" for k in learner.param_names) + f'per_agent = ["{name}"]\n'
        path = _spec(tmp_path, rule=rule, learner=body, name=f"{rule}_{name}.toml")
        with pytest.raises(SpecError) as info:
            read_spec(path)
        message = str(info.value)
        assert "\n" not in message and f"per_agent parameter '{name}' is fixed" in message
        suggested, table = _suggestion(message)
        assert suggested == name
        assert _fits(table, LEARNER_DOMAINS[name]), message
        _learner_model(rule, name, _prior(table), per_agent=(name,))  # accepted


# ----------------------------------------------------------------- registry-wide
def _readme_prior_families() -> set[str]:
    """The ``dist`` names of the prior table in models/README.md (rows '| `name` | ...')."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Priors and parameter domains", 1)[1].split("\n### ", 1)[0]
    table = section.split("| `dist` |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", table, re.M))


def test_readme_prior_table_lists_every_family_and_the_cases_cover_it():
    families = _readme_prior_families()
    assert families == set(PRIOR_FAMILIES)
    assert {table["dist"] for table in PRIORS.values()} == families


def test_every_learner_parameter_and_family_key_has_an_expectation():
    """A new learner parameter or family prior key fails here until its domain is written down."""
    assert {p for _, p in _learner_params()} == set(LEARNER_FITS)
    keys = set()
    for name in FAMILIES:
        family = _family(name)
        keys |= {(name, k) for k in family.prior_options - family.prior_numbers - set(family.prior_choices)}
    assert keys == set(FAMILY_FITS)


@pytest.mark.parametrize("rule, param", _learner_params())
def test_learner_prior_accepted_iff_its_support_is_inside_the_domain(rule, param):
    for label, table in PRIORS.items():
        prior = _prior(table)
        if label in LEARNER_FITS[param]:
            _learner_model(rule, param, prior)
            continue
        with pytest.raises(SpecError) as info:
            _learner_model(rule, param, prior)
        message = str(info.value)
        assert message.startswith(f"[learner] {param}: prior {table['dist']}(")
        assert f"outside {param}'s domain {DOMAIN_TEXT[param]}; use e.g. {param} = " in message
        assert "\n" not in message
        name, suggestion = _suggestion(message)
        assert name == param
        assert _fits(suggestion, LEARNER_DOMAINS[param]), message
        _learner_model(rule, param, _prior(suggestion))  # (c) accepted
        _learner_model(rule, param, _prior(suggestion), per_agent=(param,))


@pytest.mark.parametrize("family, key", sorted(FAMILY_FITS))
def test_family_prior_accepted_iff_its_support_is_inside_the_domain(family, key):
    mechanism = _family(family)
    for label, table in PRIORS.items():
        if label in FAMILY_FITS[(family, key)]:
            mechanism.check_prior_options({key: dict(table)}, "spec.toml [mechanism.prior]")
            continue
        with pytest.raises(SpecError) as info:
            mechanism.check_prior_options({key: dict(table)}, "spec.toml [mechanism.prior]")
        message = str(info.value)
        assert message.startswith(f"spec.toml [mechanism.prior] '{key}': prior {table['dist']}(")
        assert f"outside {key}'s domain {FAMILY_DOMAIN_TEXT[(family, key)]}; use e.g. {key} = " in message
        name, suggestion = _suggestion(message)
        assert name == key
        assert _fits(suggestion, (0.0, INF)), message
        mechanism.check_prior_options({key: suggestion})  # (c) accepted


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_number_options_must_be_positive(family):
    mechanism = _family(family)
    for key in mechanism.prior_numbers:
        mechanism.check_prior_options({key: 0.5})
        for bad in (0.0, -1.0):
            with pytest.raises(SpecError, match=f"'{key}' must be a positive number"):
                mechanism.check_prior_options({key: bad})


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_choice_options_take_only_their_strings(family):
    """Keys that choose among strings (the neural family's ``space``): the default is
    accepted, anything else refused in one line naming the key and the choices."""
    mechanism = _family(family)
    for key, choices in mechanism.prior_choices.items():
        mechanism.check_prior_options({key: choices[0]})
        for bad in ("no-such", 1.0):
            with pytest.raises(SpecError, match=f"'{key}' must be \"{choices[0]}\"") as info:
                mechanism.check_prior_options({key: bad})
            assert "\n" not in str(info.value)


def test_payoff_sigma_prior_accepted_iff_positive():
    for label, table in PRIORS.items():
        build = lambda: _learner_model("logit_q", "alpha", 0.3, payoff_sigma=_prior(table))  # noqa: E731
        if label in SIGMA_FITS:
            build()
            continue
        with pytest.raises(SpecError) as info:
            build()
        message = str(info.value)
        assert message.startswith(f"[payoff] sigma: prior {table['dist']}(")
        assert "outside sigma's domain (0, inf); use e.g. sigma = " in message
        suggestion = _suggestion(message)[1]
        assert _fits(suggestion, (0.0, INF)), message
        _learner_model("logit_q", "alpha", 0.3, payoff_sigma=_prior(suggestion))


def test_fixed_values_keep_their_domain_messages():
    """Fixed numbers are checked against the same domains (open and closed ends)."""
    for rule, param in _learner_params():
        low, high, low_closed, high_closed = LEARNER_DOMAINS[param]
        edges = [(low, low_closed), (high, high_closed)]
        for value, closed in edges:
            if not math.isfinite(value):
                continue
            if closed:
                _learner_model(rule, param, value)
            else:
                with pytest.raises(SpecError, match=f"learner parameter '{param}' = {value}"):
                    _learner_model(rule, param, value)


# ----------------------------------------------------------------- draws stay inside
# Valid priors with much mass at (or ending on) the domain's edges.
EDGE_PRIORS = {
    "alpha": {"dist": "beta", "a": 0.5, "b": 0.5},
    "eps": {"dist": "uniform", "low": 0, "high": 1},
    "phi": {"dist": "beta", "a": 0.5, "b": 0.5},
    "rho": {"dist": "uniform", "low": 0, "high": 1},
    "delta": {"dist": "beta", "a": 0.5, "b": 0.5},
    "beta": {"dist": "exponential", "rate": 1.0},
    "eta": {"dist": "halfnormal", "scale": 0.5},
    "c": {"dist": "uniform", "low": 1, "high": 1.5},
}


@pytest.mark.parametrize("per_agent", [False, True], ids=["pooled", "per_agent"])
@pytest.mark.parametrize("rule, param", _learner_params())
def test_prior_draws_lie_in_the_domain(rule, param, per_agent):
    model = _learner_model(rule, param, _prior(EDGE_PRIORS[param]), per_agent=(param,) if per_agent else (),
                           per_agent_spread=3.0)
    draws = Predictive(sample_params, num_samples=2000)(jax.random.PRNGKey(1), model, 1)
    values = np.asarray(draws[param])
    assert values.shape == ((2000, 3) if per_agent else (2000,))
    assert _inside(values, param), (values.min(), values.max())


@pytest.mark.parametrize("rule", ["ewa", "logit_q_decreasing"])  # between them: [0, 1], [0, 1), > 0, >= 1
def test_nuts_draws_on_the_unconstrained_scale_lie_in_the_domain(rule):
    """NUTS on the priors alone (every learner parameter unknown and per agent, and the
    payoff sigma): every draw, also of the per-agent values, is inside its domain."""
    learner = LEARNERS[rule]
    model = Model(Tabular(num_agents=3, num_actions=2), learner,
                  {p: _prior(EDGE_PRIORS[p]) for p in learner.param_names}, per_agent=learner.param_names,
                  per_agent_spread=3.0, payoff_sigma=_prior({"dist": "halfnormal", "scale": 0.1}))
    mcmc = MCMC(NUTS(sample_params), num_warmup=100, num_samples=200, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), model, 1, True)
    samples = mcmc.get_samples()
    for name in learner.param_names:
        values = np.asarray(samples[name])
        assert values.shape == (200, 3)
        assert _inside(values, name), (name, values.min(), values.max())
    sigma = np.asarray(samples["payoff_sigma"])
    assert np.all(np.isfinite(sigma) & (sigma > 0))
