"""Observed play: the validated, masked ``Trajectories`` container and its files.

A ``Trajectories`` holds what the agents did, episode by episode and round by round,
as plain NumPy arrays on the host (it is not a JAX pytree; the likelihood takes its
arrays). The mask has one meaning everywhere (docs/design.md §2): ``mask[e, t, i]`` is True
when agent ``i`` did not play round ``t`` of episode ``e``.

On disk the data are a long table, one row per (episode, round, agent) that played::

    episode,round,agent,action[,payoff]
    1,0,alice,low,2.5
    1,0,bob,high,
    1,1,alice,high,0.75

A spec's ``[payoff] outcomes`` names a categorical outcome column (``result``: ``win`` /
``tie`` / ``lose``) read in place of ``payoff`` (``outcomes.py``; the readers' ``outcomes``).
CSV, Parquet and DataFrames go through one parsing core. Bad input is refused with a
:class:`~bayes_diml.errors.DataError` naming the source, the line (CSV, 1-based with
the header on line 1) or row (DataFrame and Parquet, 0-based positions as in
``DataFrame.iloc``), the column, what is wrong and what was expected. Nothing is
silently dropped, clipped or coerced. Files are written to a temporary name in the
same folder and renamed into place (docs/design.md §9).

Labels. Episode and agent labels are all integers or all non-numeric strings per
column (a text such as 'NA' or 'null' is a string label; only an empty cell, or a
typed null, is missing; in a column of integers such a text is a missing value), and
are kept sorted (integers numerically, strings lexicographically), so that episode
index ``e`` is the rank of its label. Integer actions are their own codes
``0..num_actions-1``; string actions are mapped to codes through ``action_labels``
(their sorted order unless given). Rounds carry one global numbering: round index
``t`` has the label ``first_round + t``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bayes_diml._arrays import (
    _actions_and_mask,
    _check_codes,
    _check_payoff,
    _describe_array,
    _episode_lengths,
    _played_num_actions,
    _played_rounds,
    _read_only,
    _real_payoff,
    _round_label,
)
from bayes_diml._labels import _as_labels, _check_action_labels, _check_labels, _show, _show_labels
from bayes_diml._long_table import _ROUND_LIMIT, MAX_NUM_ACTIONS, PAYOFF_COLUMN
from bayes_diml._long_table import REQUIRED_COLUMNS as REQUIRED_COLUMNS
from bayes_diml._table_files import _long_frame, _read_csv, _read_parquet, _write_csv, _write_parquet
from bayes_diml._table_parsing import _gap_message, _parse_frame, _resolve_action_args
from bayes_diml.errors import DataError

__all__ = ["Trajectories"]


def absence_families() -> tuple[str, ...]:
    """Mechanism families whose payoffs are defined when an agent sits a round out
    (``allows_absence``), in registry order."""
    from bayes_diml.mechanisms import FAMILIES

    return tuple(name for name, cls in FAMILIES.items() if cls.allows_absence)


# --------------------------------------------------------------------------- class


@dataclasses.dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class Trajectories:
    """Observed repeated play, validated and masked (host-side NumPy, not a pytree).

    Attributes:
        actions: Action codes, int32, shape (num_episodes, num_rounds, num_agents),
            in ``0..num_actions-1``; masked entries hold 0.
        mask: Bool, shape (num_episodes, num_rounds, num_agents); True where the
            agent did not play that round.
        num_actions: The number of actions ``A``.
        episode_labels: Sorted, distinct episode labels (all ints or all strs),
            length num_episodes.
        agent_labels: Sorted, distinct agent labels, length num_agents; agent index
            ``i`` is ``agent_labels[i]``.
        action_labels: Length num_actions: ``(0, ..., A-1)`` for integer codes, or the
            strings that code ``k`` stands for.
        first_round: The label of round index 0; round index ``t`` is round
            ``first_round + t``.
        payoff: Realised payoffs, float64, shape (num_episodes, num_rounds,
            num_agents), NaN where not observed (always NaN where masked); or None.
        outcome: An outcome column (``outcomes.OutcomeColumn``: a label per row that
            a spec's ``[payoff] outcomes`` maps to payoffs), or None; never with ``payoff``.

    Invariants (checked on construction; a :class:`DataError` otherwise): every agent
    plays at least once; every episode has somebody playing at every round from round
    index 0 to its last round (trailing rounds may be empty: episodes of unequal
    length); the last round index is played in some episode. The arrays are stored as
    read-only views.
    """

    actions: np.ndarray
    mask: np.ndarray
    num_actions: int
    episode_labels: tuple
    agent_labels: tuple
    action_labels: tuple
    first_round: int
    payoff: np.ndarray | None = None
    outcome: Any = None

    def __post_init__(self) -> None:
        name = "Trajectories"
        actions, mask = self.actions, self.mask
        if not isinstance(actions, np.ndarray) or actions.dtype != np.int32 or actions.ndim != 3:
            raise DataError(f"{name}: actions must be an int32 array of shape (num_episodes, "
                            f"num_rounds, num_agents), got {_describe_array(actions)}")
        if (not isinstance(mask, np.ndarray) or mask.dtype != np.bool_
                or mask.shape != actions.shape):
            raise DataError(f"{name}: mask must be a bool array of shape {actions.shape}, "
                            f"got {_describe_array(mask)}")
        if min(actions.shape) == 0:
            raise DataError(f"{name}: actions has shape {actions.shape}; expected at least "
                            "one episode, one round and one agent")
        num_actions = self.num_actions
        if (isinstance(num_actions, bool) or not isinstance(num_actions, int)
                or not 1 <= num_actions <= MAX_NUM_ACTIONS):
            raise DataError(f"{name}: num_actions={num_actions!r}; expected an int in "
                            f"1..{MAX_NUM_ACTIONS}")
        num_episodes, _, num_agents = actions.shape
        _check_labels(self.episode_labels, num_episodes, f"{name}: episode_labels")
        _check_labels(self.agent_labels, num_agents, f"{name}: agent_labels")
        _check_action_labels(self.action_labels, num_actions, f"{name}: action_labels")
        if (isinstance(self.first_round, bool) or not isinstance(self.first_round, int)
                or abs(self.first_round) > _ROUND_LIMIT):
            raise DataError(f"{name}: first_round={self.first_round!r}; expected an int "
                            "of magnitude at most 2**62")
        _check_codes(actions, mask, num_actions, f"{name}: actions")
        if (mask & (actions != 0)).any():
            index = tuple(int(x) for x in np.argwhere(mask & (actions != 0))[0])
            raise DataError(f"{name}: actions, index {index}: masked entries must hold 0")
        if self.payoff is not None:
            payoff = self.payoff
            if (not isinstance(payoff, np.ndarray) or payoff.dtype != np.float64
                    or payoff.shape != actions.shape):
                raise DataError(f"{name}: payoff must be None or a float64 array of shape "
                                f"{actions.shape}, got {_describe_array(payoff)}")
            _check_payoff(payoff, mask, f"{name}: payoff")
            if not np.isnan(payoff[mask]).all():
                index = tuple(int(x) for x in np.argwhere(mask & ~np.isnan(payoff))[0])
                raise DataError(f"{name}: payoff, index {index}: masked entries must be NaN")
        if self.outcome is not None:
            self.outcome.check(mask, f"{name}: outcome")
        self._check_structure()
        for field in ("actions", "mask", "payoff"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, _read_only(value))

    def _check_structure(self) -> None:
        """Every agent plays somewhere; no episode has an empty round before its end."""
        name = "Trajectories"
        never = np.flatnonzero(self.mask.all(axis=(0, 1)))
        if never.size:
            label = self.agent_labels[never[0]]
            raise DataError(
                f"{name}: mask, agent {_show(label)} (index {never[0]}) never plays in any "
                "episode or round; drop that agent, or give the rounds it played")
        played = _played_rounds(self.mask)
        lengths = _episode_lengths(self.mask)
        for e in range(played.shape[0]):
            label = self.episode_labels[e]
            if lengths[e] == 0:
                raise DataError(f"{name}: mask, episode {_show(label)} (index {e}) has "
                                "nobody playing in any round; drop the episode")
            gaps = np.flatnonzero(~played[e, : lengths[e]])
            if gaps.size:
                t = int(gaps[0])
                after = t + int(np.argmax(played[e, t:]))
                before = None if t == 0 else self.first_round + t - 1
                message = _gap_message(label, self.first_round + t, before,
                                       self.first_round + after)
                raise DataError(f"{name}: mask, episode index {e}, round index {t}: "
                                f"{message}")
        if lengths.max() != self.num_rounds:
            raise DataError(
                f"{name}: mask, round index {int(lengths.max())} (round "
                f"{self.first_round + int(lengths.max())}) and later have nobody playing "
                "in any episode; cut the arrays to the rounds that were played")

    # ----------------------------------------------------------------- properties

    @property
    def num_episodes(self) -> int:
        """The number of episodes ``E``."""
        return int(self.actions.shape[0])

    @property
    def num_rounds(self) -> int:
        """The number of rounds ``T`` (the longest episode)."""
        return int(self.actions.shape[1])

    @property
    def num_agents(self) -> int:
        """The number of agents ``n``."""
        return int(self.actions.shape[2])

    @property
    def episode_lengths(self) -> np.ndarray:
        """1 + index of the last round any agent played: int64, shape (num_episodes,)."""
        return _episode_lengths(self.mask)

    @property
    def masked_fraction(self) -> float:
        """The fraction of (episode, round, agent) entries where the agent did not play."""
        return float(self.mask.mean())

    def summary(self) -> dict:
        """A JSON-ready description of the data.

        Returns:
            A dict with keys ``num_episodes``, ``num_rounds``, ``num_agents``,
            ``num_actions``, ``masked_fraction``, ``agent_labels`` (list),
            ``action_labels`` (list), ``first_round`` and ``has_payoff``.
        """
        return {
            "num_episodes": self.num_episodes,
            "num_rounds": self.num_rounds,
            "num_agents": self.num_agents,
            "num_actions": self.num_actions,
            "masked_fraction": self.masked_fraction,
            "agent_labels": list(self.agent_labels),
            "action_labels": list(self.action_labels),
            "first_round": self.first_round,
            "has_payoff": self.payoff is not None,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trajectories):
            return NotImplemented
        labels_equal = all(
            a == b and all(type(x) is type(y) for x, y in zip(a, b))
            for a, b in ((self.episode_labels, other.episode_labels),
                         (self.agent_labels, other.agent_labels),
                         (self.action_labels, other.action_labels)))
        if self.payoff is None or other.payoff is None:
            payoff_equal = self.payoff is None and other.payoff is None
        else:
            payoff_equal = np.array_equal(self.payoff, other.payoff, equal_nan=True)
        outcome_equal = (self.outcome is None and other.outcome is None) or (
            self.outcome is not None and self.outcome.equals(other.outcome))
        return (labels_equal and payoff_equal and outcome_equal
                and self.num_actions == other.num_actions
                and self.first_round == other.first_round
                and np.array_equal(self.actions, other.actions)
                and np.array_equal(self.mask, other.mask))

    __hash__ = None  # type: ignore[assignment]  # holds arrays: not hashable

    def __repr__(self) -> str:
        return (f"Trajectories(num_episodes={self.num_episodes}, num_rounds="
                f"{self.num_rounds}, num_agents={self.num_agents}, num_actions="
                f"{self.num_actions}, first_round={self.first_round}, masked_fraction="
                f"{self.masked_fraction:.3g}, has_payoff={self.payoff is not None})")

    # ----------------------------------------------------------------- spec check

    def check_against(self, *, num_agents: int, num_actions: int, allows_absence: bool,
                      family: str, source: str = "data") -> None:
        """Refuses data that a model specification cannot explain.

        Args:
            num_agents: The spec's number of agents.
            num_actions: The spec's number of actions.
            allows_absence: Whether the mechanism family defines payoffs when an agent
                sits a round out (False for joint families such as tabular, neural).
            family: The family's name, for the message.
            source: The data's file name or description, for the message.

        Raises:
            DataError: The counts differ, or ``allows_absence`` is False and some agent
                did not play a round in which another agent played (trailing rounds
                in which nobody played are always legal).
        """
        if num_agents != self.num_agents:
            raise DataError(f"{source}: the data have {self.num_agents} agents "
                            f"{_show_labels(self.agent_labels)} but the spec (family "
                            f"{family!r}) says num_agents={num_agents}")
        if num_actions != self.num_actions:
            raise DataError(
                f"{source}: the data have {self.num_actions} actions but the spec (family "
                f"{family!r}) says num_actions={num_actions}; if some actions were never "
                f"played, read the data with num_actions={num_actions} or action_labels")
        if allows_absence:
            return
        absent = self.mask & _played_rounds(self.mask)[:, :, None]
        if absent.any():
            e, t, i = (int(x) for x in np.argwhere(absent)[0])
            raise DataError(
                f"{source}: agent {_show(self.agent_labels[i])} did not play in episode "
                f"{_show(self.episode_labels[e])}, round {self.first_round + t}, while "
                f"other agents did; family {family!r} needs every agent in every round "
                f"(its joint payoffs are undefined without one); families that allow "
                f"absent agents: {', '.join(absence_families())}")

    # ----------------------------------------------------------------- readers

    @classmethod
    def from_arrays(cls, actions: Any, mask: Any = None, *, num_actions: int | None = None,
                    payoff: Any = None, episode_labels: Sequence | None = None,
                    agent_labels: Sequence | None = None,
                    action_labels: Sequence | None = None,
                    first_round: int = 0) -> Trajectories:
        """Builds trajectories from arrays.

        Args:
            actions: Integer action codes, shape (num_episodes, num_rounds, num_agents);
                any integer dtype; values at masked entries are ignored (stored as 0).
            mask: Bool, same shape, True where the agent did not play; None: all
                played.
            num_actions: The number of actions; None: ``len(action_labels)`` if given,
                else 1 + the largest played code.
            payoff: Real numbers, same shape, NaN where not observed; None: no payoffs.
                Values at masked entries are ignored (stored as NaN).
            episode_labels: Sorted distinct labels; None: ``0..num_episodes-1``.
            agent_labels: Sorted distinct labels; None: ``0..num_agents-1``.
            action_labels: ``0..num_actions-1``, or strings in code order; None: the
                integer codes.
            first_round: The label of round index 0.

        Returns:
            The validated trajectories.

        Raises:
            DataError: Wrong dtype or shape, codes out of range, infinite payoffs,
                bad labels, an agent that never plays, or a round inside an episode
                in which nobody plays.
        """
        name = "from_arrays"
        actions, mask = _actions_and_mask(actions, mask, name)
        num_actions, labels = _resolve_action_args(num_actions, action_labels, name)
        if num_actions is None:
            num_actions = len(labels) if labels is not None else _played_num_actions(actions, mask)
        _check_codes(actions, mask, num_actions, f"{name}: actions")
        codes = np.where(mask, 0, actions).astype(np.int32)
        if payoff is not None:
            payoff = _real_payoff(payoff, mask, name)
        first_round = _round_label(first_round, name)
        num_episodes, _, num_agents = actions.shape
        return cls(
            actions=codes, mask=mask.copy(), num_actions=num_actions,
            episode_labels=(tuple(range(num_episodes)) if episode_labels is None
                            else _as_labels(episode_labels, f"{name}: episode_labels")),
            agent_labels=(tuple(range(num_agents)) if agent_labels is None
                          else _as_labels(agent_labels, f"{name}: agent_labels")),
            action_labels=tuple(range(num_actions)) if labels is None else labels,
            first_round=first_round, payoff=payoff)

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame, num_actions: int | None = None,
                       action_labels: Sequence | None = None,
                       source: str = "<DataFrame>",
                       agent_labels: Sequence | None = None, outcomes: Any = None) -> Trajectories:
        """Reads a long table ``episode, round, agent, action[, payoff]``.

        Rows are named in messages by their 0-based position (as in ``df.iloc``).

        Args:
            df: One row per (episode, round, agent) that played, in any order.
            num_actions: The number of actions; None: inferred (1 + the largest
                integer code, or the number of distinct string labels).
            action_labels: The actions' names in code order; string actions must be
                among them, integer codes must be below their number.
            source: How the data are named in messages.
            agent_labels: The expected agent labels (e.g. a spec's); a label outside
                them is refused at its first row, with the closest expected label.
                The result's ``agent_labels`` are still those that occur in the data.
            outcomes: ``(column, labels)``: read that outcome column, its labels among
                ``labels`` (None: any; ``load_data`` passes the spec's ``[payoff] outcomes``).

        Returns:
            The validated trajectories; ``first_round`` is the smallest round.

        Raises:
            DataError: Any malformed cell, column, or structure (see the module doc).
        """
        return cls(**_parse_frame(df, source, "row", 0, "column names", num_actions,
                                  action_labels, agent_labels, outcomes=outcomes))

    @classmethod
    def from_csv(cls, path: str | os.PathLike, num_actions: int | None = None,
                 action_labels: Sequence | None = None,
                 agent_labels: Sequence | None = None, outcomes: Any = None) -> Trajectories:
        """Reads a long-format CSV file (UTF-8, optional BOM, header on line 1).

        Every cell is read as text: a label such as 'NA' or 'null' is a label, and
        only an empty cell is missing. The separator is a comma; a file whose header
        has tabs, semicolons or pipes and no comma is refused as such, and so is a
        file whose line 1 is a '#' comment or blank.

        Args:
            path: The file.
            num_actions: As in :meth:`from_dataframe`.
            action_labels: As in :meth:`from_dataframe`.
            agent_labels, outcomes: As in :meth:`from_dataframe`.

        Returns:
            The validated trajectories.

        Raises:
            DataError: Not UTF-8 (naming the byte offset and line), empty, a row with
                more fields than the header, or any malformed cell, column or
                structure; the message names the line (1-based, header on line 1)
                and column. Blank lines at the end of the file are ignored; a blank
                line elsewhere is an error.
        """
        source = str(path)
        df, row_lines = _read_csv(path, source)
        return cls(**_parse_frame(df, source, "line", 2, "line 1 (the header)", num_actions,
                                  action_labels, agent_labels, row_lines, outcomes))

    @classmethod
    def from_parquet(cls, path: str | os.PathLike, num_actions: int | None = None,
                     action_labels: Sequence | None = None,
                     agent_labels: Sequence | None = None, outcomes: Any = None) -> Trajectories:
        """Reads a long-format Parquet file: same columns, arguments and result as :meth:`from_csv`.

        Rows are named in messages by their 0-based position in the file.

        Raises:
            DataError: Not a Parquet file, or any malformed cell, column or structure
                (a null is a missing value; a string such as 'NA' is a label).
        """
        source = str(path)
        extra = () if outcomes is None else (outcomes[0],)
        return cls.from_dataframe(_read_parquet(path, source, extra), num_actions, action_labels,
                                  source, agent_labels, outcomes)

    # ----------------------------------------------------------------- writers

    def _long_columns(self) -> dict[str, list]:
        """The played entries as long-table columns, sorted by episode, round, agent."""
        e, t, i = np.nonzero(~self.mask)  # C order: episode, then round, then agent
        action_codes = self.actions[e, t, i]
        columns = {
            "episode": [self.episode_labels[k] for k in e.tolist()],
            "round": (t.astype(np.int64) + self.first_round).tolist(),
            "agent": [self.agent_labels[k] for k in i.tolist()],
            "action": [self.action_labels[k] for k in action_codes.tolist()],
        }
        if self.payoff is not None:
            columns[PAYOFF_COLUMN] = self.payoff[e, t, i].tolist()
        if self.outcome is not None:
            columns[self.outcome.column] = self.outcome.cells(e, t, i)
        return columns

    def to_dataframe(self) -> pd.DataFrame:
        """The long table: one row per (episode, round, agent) that played.

        Returns:
            Columns ``episode, round, agent, action`` (labels; integer columns are
            int64) and ``payoff`` (float64, NaN where not observed) if payoffs are
            present; rows sorted by episode, round and agent.
        """
        return _long_frame(self._long_columns())

    def to_csv(self, path: str | os.PathLike) -> None:
        """Writes the long table as UTF-8 CSV, atomically (temporary file, then rename).

        Payoffs are written with ``repr`` precision (they read back exactly), empty
        where not observed. :meth:`from_csv` reads the file back to an equal object;
        pass ``action_labels=self.action_labels`` when some action was never played
        or string labels are not in sorted order (the file cannot say either).

        Args:
            path: The file to write (replaced if it exists).
        """
        _write_csv(self._long_columns(), path)

    def to_parquet(self, path: str | os.PathLike) -> None:
        """Writes the long table as Parquet, atomically (temporary file, then rename).

        Label columns are int64 or string; payoff is float64, null where not
        observed. Reads back with :meth:`from_parquet` as :meth:`to_csv` does.

        Args:
            path: The file to write (replaced if it exists).
        """
        _write_parquet(self._long_columns(), path)
