"""Tests for ``bayes_diml.trajectories``: validation matrix, round trips, properties."""

import csv
import io
import math
import os
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayes_diml.errors import DataError
from bayes_diml.trajectories import Trajectories

HEADER = "episode,round,agent,action\n"


def write_csv(tmp_path, text, name="data.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def assert_refused(call, *fragments, error=DataError):
    """``call()`` raises ``error`` whose message contains every fragment."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def refused_csv(tmp_path, text, *fragments, **kwargs):
    path = write_csv(tmp_path, text)
    return assert_refused(lambda: Trajectories.from_csv(path, **kwargs), str(path),
                          *fragments)


# --------------------------------------------------------------------------- columns


def test_misspelled_column_is_named_with_a_suggestion(tmp_path):
    message = refused_csv(tmp_path, "episode,round,agent,acton\n1,0,a,0\n",
                          "line 1", "missing column 'action'", "unknown column 'acton'",
                          "did you mean 'action'")
    assert "found columns 'episode', 'round', 'agent', 'acton'" in message


def test_wrong_case_column_is_refused(tmp_path):
    refused_csv(tmp_path, "Episode,round,agent,action\n1,0,a,0\n", "line 1",
                "missing column 'episode'", "did you mean 'episode'")


def test_missing_column_lists_found_columns(tmp_path):
    refused_csv(tmp_path, "episode,round,action\n1,0,0\n", "line 1",
                "missing column 'agent'", "found columns 'episode', 'round', 'action'")


def test_extra_unknown_column_is_refused(tmp_path):
    refused_csv(tmp_path, "episode,round,agent,action,price\n1,0,a,0,3\n", "line 1",
                "unknown column 'price'")


def test_repeated_column_is_refused(tmp_path):
    refused_csv(tmp_path, "episode,round,agent,action,action\n1,0,a,0,1\n", "line 1",
                "column 'action' appears more than once")


def test_empty_file_is_refused(tmp_path):
    refused_csv(tmp_path, "", "line 1", "empty", "episode,round,agent,action")


@pytest.mark.parametrize("text", [HEADER, HEADER + "\n\n"])
def test_header_only_is_refused(tmp_path, text):
    refused_csv(tmp_path, text, "line 2", "no data rows", "episode,round,agent,action")


def test_row_with_too_many_fields_is_refused(tmp_path):
    refused_csv(tmp_path, HEADER + "1,0,a,0\n1,1,a,0,7\n", "line 3", "5 fields",
                "header has 4")


def test_not_utf8_is_refused(tmp_path):
    path = write_csv(tmp_path, (HEADER + "1,0,caf\xe9,0\n").encode("latin-1"))
    assert_refused(lambda: Trajectories.from_csv(path), str(path), "not UTF-8")


# --------------------------------------------------------------------------- labels


def test_mixed_label_types_name_the_conflicting_line(tmp_path):
    refused_csv(tmp_path, HEADER + "1,0,a,0\n2,0,a,0\nthree,0,a,0\n",
                "line 4", "column 'episode'", "mixed label types", "line 2")


def test_mixed_agent_label_types(tmp_path):
    refused_csv(tmp_path, HEADER + "1,0,bob,0\n1,0,7,0\n", "line 3", "column 'agent'",
                "mixed label types")


def test_integer_labels_written_two_ways_are_refused(tmp_path):
    refused_csv(tmp_path, HEADER + "7,0,a,0\n07,1,a,0\n", "line 3", "column 'episode'",
                "'07'", "line 2")


def test_non_integer_number_label_is_refused(tmp_path):
    refused_csv(tmp_path, HEADER + "1,0,1.5,0\n", "line 2", "column 'agent'",
                "not an integer")


def test_labels_are_sorted(tmp_path):
    path = write_csv(tmp_path, HEADER + "10,0,b,0\n9,0,a,0\n10,0,C,0\n9,0,b,0\n9,0,C,0\n")
    traj = Trajectories.from_csv(path)
    assert traj.episode_labels == (9, 10)  # numerically, not as text
    assert traj.agent_labels == ("C", "a", "b")  # lexicographically
    assert traj.mask[1].tolist() == [[False, True, False]]


# --------------------------------------------------------------------------- rounds


@pytest.mark.parametrize("value,fragment", [("x", "'x' is not a number"),
                                            ("1.5", "'1.5' is not an integer"),
                                            ("2.0", "'2.0' is not an integer")])
def test_round_must_be_an_integer(tmp_path, value, fragment):
    refused_csv(tmp_path, HEADER + f"1,0,a,0\n1,{value},a,0\n", "line 3",
                "column 'round'", fragment)


def test_round_gap_inside_an_episode_is_refused(tmp_path):
    refused_csv(tmp_path, HEADER + "1,0,a,0\n1,0,b,0\n1,2,a,1\n",
                "column 'round'", "episode 1 has no rows at round 1, between rounds 0",
                "line 2", "line 4", "what the learners saw then is unknown")


def test_episode_starting_after_the_first_round_is_refused(tmp_path):
    refused_csv(tmp_path, HEADER + "e1,1,a,0\ne1,2,a,0\ne2,2,a,0\ne2,3,a,1\n",
                "column 'round'", "episode 'e2' has no rows at round 1", "line 2",
                "line 4", "unknown")


def test_round_labels_follow_the_data(tmp_path):
    path = write_csv(tmp_path, HEADER + "1,5,a,0\n1,6,a,1\n2,5,a,1\n")
    traj = Trajectories.from_csv(path)
    assert traj.first_round == 5
    assert traj.episode_lengths.tolist() == [2, 1]
    assert traj.mask[:, :, 0].tolist() == [[False, False], [False, True]]


# --------------------------------------------------------------------------- actions


@pytest.mark.parametrize("value,fragment", [
    ("1.5", "'1.5' is not an integer"),
    ("2.0", "'2.0' is not an integer"),
    ("-1", "negative action code '-1'"),
])
def test_bad_action_codes(tmp_path, value, fragment):
    refused_csv(tmp_path, HEADER + f"1,0,a,0\n1,1,a,{value}\n", "line 3",
                "column 'action'", fragment)


def test_action_code_beyond_num_actions(tmp_path):
    refused_csv(tmp_path, HEADER + "1,0,a,0\n1,1,a,3\n", "line 3", "column 'action'",
                "'3' is out of range", "0..2", "num_actions=3", num_actions=3)


@pytest.mark.parametrize("num_actions", [None, 4])
def test_huge_action_code_is_out_of_range(tmp_path, num_actions):
    refused_csv(tmp_path, HEADER + "1,0,a,0\n1,1,a,99999999999999999999\n", "line 3",
                "column 'action'", "'99999999999999999999' is out of range",
                num_actions=num_actions)


def test_action_label_not_in_action_labels(tmp_path):
    refused_csv(tmp_path, HEADER + "1,0,a,low\n1,1,a,mid\n", "line 3", "column 'action'",
                "'mid' is not in action_labels", "'low', 'high'",
                action_labels=("low", "high"))


def test_mixed_action_types(tmp_path):
    refused_csv(tmp_path, HEADER + "1,0,a,0\n1,1,a,low\n", "line 3", "column 'action'",
                "mixed action types", "line 2")


def test_codes_beyond_action_labels(tmp_path):
    refused_csv(tmp_path, HEADER + "1,0,a,0\n1,1,a,2\n", "line 3", "column 'action'",
                "out of range", "action_labels has 2 entries",
                action_labels=("low", "high"))


def test_codes_with_action_labels_keep_the_labels(tmp_path):
    path = write_csv(tmp_path, HEADER + "1,0,a,1\n1,1,a,0\n")
    traj = Trajectories.from_csv(path, action_labels=["low", "mid", "high"])
    assert traj.action_labels == ("low", "mid", "high")
    assert traj.num_actions == 3
    assert traj.actions[0, :, 0].tolist() == [1, 0]


def test_string_actions_with_integer_action_labels(tmp_path):
    refused_csv(tmp_path, HEADER + "1,0,a,low\n", "line 2", "column 'action'",
                "integer codes", action_labels=(0, 1))


def test_more_string_actions_than_num_actions(tmp_path):
    refused_csv(tmp_path, HEADER + "1,0,a,x\n1,1,a,y\n1,2,a,z\n", "line 4",
                "column 'action'", "num_actions=2", num_actions=2)


def test_string_actions_sorted_unless_given(tmp_path):
    path = write_csv(tmp_path, HEADER + "1,0,a,mid\n1,1,a,high\n1,2,a,low\n")
    assert Trajectories.from_csv(path).action_labels == ("high", "low", "mid")
    given = Trajectories.from_csv(path, action_labels=("low", "mid", "high"))
    assert given.actions[0, :, 0].tolist() == [1, 2, 0]


def test_inferred_num_actions_from_codes(tmp_path):
    path = write_csv(tmp_path, HEADER + "1,0,a,0\n1,1,a,4\n")
    traj = Trajectories.from_csv(path)
    assert traj.num_actions == 5 and traj.action_labels == (0, 1, 2, 3, 4)


def test_inconsistent_arguments(tmp_path):
    path = write_csv(tmp_path, HEADER + "1,0,a,0\n")
    assert_refused(lambda: Trajectories.from_csv(path, num_actions=3,
                                                 action_labels=("a", "b")),
                   "num_actions=3", "2 entries")
    assert_refused(lambda: Trajectories.from_csv(path, action_labels=(0, 2)),
                   "must be 0..1")


# --------------------------------------------------------------------------- missing


@pytest.mark.parametrize("column", ["episode", "round", "agent", "action"])
@pytest.mark.parametrize("value", ["", "NaN", "NA", "nan"])
def test_missing_value_in_required_column(tmp_path, column, value):
    """In a column of integers, an empty cell or a text such as 'NA' is a missing value."""
    cells = {"episode": "1", "round": "1", "agent": "7", "action": "0"}
    cells[column] = value
    row = ",".join(cells[c] for c in ("episode", "round", "agent", "action"))
    refused_csv(tmp_path, HEADER + "1,0,7,0\n" + row + "\n", "line 3",
                f"column '{column}'", "empty cell" if value == "" else f"missing value '{value}'")


@pytest.mark.parametrize("column", ["episode", "agent", "action"])
def test_empty_cell_among_string_labels_is_missing(tmp_path, column):
    cells = {"episode": "e1", "round": "1", "agent": "a", "action": "x"}
    cells[column] = ""
    row = ",".join(cells[c] for c in ("episode", "round", "agent", "action"))
    refused_csv(tmp_path, HEADER + "e1,0,a,x\n" + row + "\n", "line 3",
                f"column '{column}'", "empty cell")


def test_na_like_texts_are_string_labels(tmp_path):
    """README: labels may be any strings; 'NA', 'null', 'nan' are labels, not missing values."""
    text = HEADER + "NA,0,null,nan\nNA,0,bob,x\nNA,1,null,x\nNA,1,bob,None\n"
    traj = Trajectories.from_csv(write_csv(tmp_path, text))
    assert traj.episode_labels == ("NA",)
    assert traj.agent_labels == ("bob", "null")
    assert traj.action_labels == ("None", "nan", "x")
    # rounds 0, 1 of agents bob, null: x, nan / None, x
    assert traj.actions[0].tolist() == [[2, 1], [0, 2]]
    assert not traj.mask.any()
    path = tmp_path / "back.csv"
    traj.to_csv(path)
    assert Trajectories.from_csv(path) == traj
    df = pd.DataFrame({"episode": [1, 1], "round": [0, 0], "agent": ["NA", "n/a"],
                       "action": ["null", "NULL"]})
    assert Trajectories.from_dataframe(df).agent_labels == ("NA", "n/a")
    assert Trajectories.from_arrays(np.zeros((1, 1, 1), int), agent_labels=["NA"]).agent_labels \
        == ("NA",)


def test_parquet_na_text_is_a_label_but_null_is_missing(tmp_path):
    path = tmp_path / "na.parquet"
    pq.write_table(pa.table({"episode": [1, 1], "round": [0, 0], "agent": ["NA", "b"],
                             "action": ["null", "x"]}), path)
    traj = Trajectories.from_parquet(path)
    assert traj.agent_labels == ("NA", "b") and traj.action_labels == ("null", "x")
    pq.write_table(pa.table({"episode": [1, 1], "round": [0, 0],
                             "agent": pa.array(["a", None], pa.string()),
                             "action": [0, 1]}), path)
    assert_refused(lambda: Trajectories.from_parquet(path), "row 1", "column 'agent'",
                   "empty cell")


def test_blank_line_in_the_middle_is_refused(tmp_path):
    refused_csv(tmp_path, HEADER + "1,0,a,0\n\n1,1,a,0\n", "line 3", "column 'episode'",
                "empty cell")


def test_bom_and_trailing_blank_lines_are_accepted(tmp_path):
    path = write_csv(tmp_path, "\ufeff" + HEADER + "1,0,a,0\n1,1,a,1\n\n\n")
    traj = Trajectories.from_csv(path)
    assert traj.num_rounds == 2 and traj.actions[0, :, 0].tolist() == [0, 1]


# --------------------------------------------------------------------------- payoff


@pytest.mark.parametrize("value,fragment", [("abc", "expected a finite number"),
                                            ("nan", "leave the cell empty"),
                                            ("inf", "not finite"),
                                            ("-Infinity", "not finite"),
                                            ("1e999", "not finite")])
def test_bad_payoff(tmp_path, value, fragment):
    refused_csv(tmp_path, "episode,round,agent,action,payoff\n1,0,a,0,1\n1,1,a,0," + value,
                "line 3", "column 'payoff'", fragment)


def test_empty_payoff_cell_is_not_observed(tmp_path):
    path = write_csv(tmp_path, "episode,round,agent,action,payoff\n1,0,a,0,\n1,0,b,1,2\n")
    traj = Trajectories.from_csv(path)
    assert np.isnan(traj.payoff[0, 0, 0]) and traj.payoff[0, 0, 1] == 2.0


# --------------------------------------------------------------------------- duplicates


def test_duplicate_rows_name_both_lines(tmp_path):
    refused_csv(tmp_path, HEADER + "1,0,a,0\n1,0,b,0\n1,0,a,1\n1,0,a,1\n", "lines 2 and 4",
                "columns 'episode', 'round', 'agent'", "episode 1, round 0, agent 'a'")


# --------------------------------------------------------------------------- DataFrame / Parquet


def test_dataframe_rows_are_named_by_position():
    df = pd.DataFrame({"episode": [1, 1], "round": pd.Series([0, 1.5], dtype=object),
                       "agent": ["a", "a"], "action": [0, 1]})
    assert_refused(lambda: Trajectories.from_dataframe(df, source="mydata"),
                   "mydata, row 1, column 'round'", "1.5 is not an integer")
    floats = df.assign(round=[0.0, 1.0])  # a float column is not coerced either
    assert_refused(lambda: Trajectories.from_dataframe(floats), "row 0, column 'round'",
                   "0.0 is not an integer")


@pytest.mark.parametrize("value,fragment", [(None, "empty cell"), (True, "type bool"),
                                            (float("nan"), "missing value")])
def test_dataframe_bad_cells(value, fragment):
    df = pd.DataFrame({"episode": [1, 1], "round": [0, 1], "agent": ["a", "a"],
                       "action": pd.Series([0, value], dtype=object)})
    assert_refused(lambda: Trajectories.from_dataframe(df), "<DataFrame>, row 1",
                   "column 'action'", fragment)


def test_dataframe_object_column_keeps_types_apart():
    df = pd.DataFrame({"episode": [1, 1], "round": pd.Series([0, 1.0], dtype=object),
                       "agent": ["a", "a"], "action": [0, 1]})
    assert_refused(lambda: Trajectories.from_dataframe(df), "row 1, column 'round'",
                   "1.0 is not an integer")


def test_dataframe_string_dtype_column_with_missing_value():
    df = pd.DataFrame({"episode": [1, 1], "round": [0, 1],
                       "agent": pd.array(["a", None], dtype="string"), "action": [0, 1]})
    assert_refused(lambda: Trajectories.from_dataframe(df), "row 1, column 'agent'")


def test_dataframe_typed_columns_are_read():
    df = pd.DataFrame({"episode": np.array([2, 1], np.int32), "round": [7, 7],
                       "agent": pd.array(["a", "b"], dtype="string"),
                       "action": np.array([1, 0], np.uint8),
                       "payoff": np.array([0.5, np.nan], np.float32)})
    traj = Trajectories.from_dataframe(df)
    assert traj.episode_labels == (1, 2) and traj.first_round == 7
    assert traj.actions[:, 0, :].tolist() == [[0, 0], [1, 0]]
    assert traj.mask[:, 0, :].tolist() == [[True, False], [False, True]]
    assert traj.payoff[1, 0, 0] == 0.5 and np.isnan(traj.payoff[0, 0, 1])


def test_dataframe_misspelled_column():
    df = pd.DataFrame({"episode": [1], "rnd": [0], "agent": ["a"], "action": [0]})
    assert_refused(lambda: Trajectories.from_dataframe(df), "column names",
                   "missing column 'round'", "did you mean 'round' for 'rnd'")


def test_saved_index_column_is_explained(tmp_path):
    """A CSV saved with its index, read back by pandas, has a column 'Unnamed: 0'."""
    df = pd.DataFrame({"episode": [1, 1], "round": [0, 0], "agent": ["a", "b"],
                       "action": [0, 1]})
    df.to_csv(tmp_path / "with_index.csv")  # index=True: a nameless first column
    reread = pd.read_csv(tmp_path / "with_index.csv")
    assert_refused(lambda: Trajectories.from_dataframe(reread), "unknown column 'Unnamed: 0'",
                   "'Unnamed: 0' looks like a saved DataFrame index", "to_csv(index=False)")
    assert_refused(lambda: Trajectories.from_csv(tmp_path / "with_index.csv"), "line 1",
                   "column 1 has no name", "saved DataFrame index", "to_csv(index=False)",
                   "delete the first column")
    reread.to_csv(tmp_path / "twice.csv")  # saved twice: a named 'Unnamed: 0' column too
    message = assert_refused(lambda: Trajectories.from_csv(tmp_path / "twice.csv"),
                             "column 1 has no name")
    assert "Unnamed: 0" in message


def test_first_row_with_an_extra_field_is_refused_without_warnings(tmp_path):
    """pandas warned and dropped the extra field of the first data row (index_col=False)."""
    path = write_csv(tmp_path, HEADER + "1,0,a,0,5\n1,0,b,1\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_refused(lambda: Trajectories.from_csv(path), "line 2",
                       "5 fields but the header has 4")
    assert not caught


@pytest.mark.parametrize("first,fragments", [
    ("# a comment\n", ("line 1", "comment line ('# a comment')", "delete them")),
    ("\n", ("line 1", "blank")),
])
def test_first_line_not_a_header(tmp_path, first, fragments):
    path = write_csv(tmp_path, first + HEADER + "1,0,a,0\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_refused(lambda: Trajectories.from_csv(path), *fragments)
    assert not caught


@pytest.mark.parametrize("separator,name", [("\t", "tab"), (";", "semicolon"),
                                            ("|", "pipe")])
def test_other_separators_are_named(tmp_path, separator, name):
    text = (HEADER + "1,0,a,0\n").replace(",", separator)
    assert_refused(lambda: Trajectories.from_csv(write_csv(tmp_path, text)), "line 1",
                   f"looks {name}-separated", "expected comma-separated columns")


def test_unknown_agent_label_names_its_first_line(tmp_path):
    path = write_csv(tmp_path, HEADER + "1,0,alice,0\n1,0,bob,1\n1,1,bob,0\n1,1,Alice,1\n"
                     "1,2,carol,0\n")
    assert_refused(lambda: Trajectories.from_csv(path, agent_labels=["alice", "bob"]),
                   "line 5, column 'agent'", "agent label 'Alice' is not in agent_labels "
                   "['alice', 'bob'] (did you mean 'alice'?)")
    traj = Trajectories.from_csv(path, agent_labels=["Alice", "alice", "bob", "carol", "dan"])
    assert traj.agent_labels == ("Alice", "alice", "bob", "carol")  # those that play


def test_parquet_float_round_is_refused(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"episode": [1, 1], "round": [0.0, 1.5], "agent": ["a", "a"],
                             "action": [0, 1]}), path)
    assert_refused(lambda: Trajectories.from_parquet(path), str(path), "row 0",
                   "column 'round'", "not an integer")


def test_parquet_null_action_is_refused(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"episode": [1, 1], "round": [0, 1], "agent": ["a", "a"],
                             "action": pa.array([0, None], pa.int64())}), path)
    assert_refused(lambda: Trajectories.from_parquet(path), "row 1", "column 'action'",
                   "empty cell")


def test_not_a_parquet_file(tmp_path):
    path = write_csv(tmp_path, HEADER + "1,0,a,0\n", name="x.parquet")
    assert_refused(lambda: Trajectories.from_parquet(path), str(path), "Parquet")


# --------------------------------------------------------------------------- arrays


def test_from_arrays_agent_that_never_plays():
    actions = np.zeros((2, 2, 3), int)
    mask = np.zeros((2, 2, 3), bool)
    mask[:, :, 2] = True
    assert_refused(lambda: Trajectories.from_arrays(actions, mask,
                                                    agent_labels=["a", "b", "c"]),
                   "agent 'c' (index 2) never plays")


def test_from_arrays_empty_round_mid_episode():
    mask = np.zeros((2, 3, 2), bool)
    mask[1, 1, :] = True
    assert_refused(lambda: Trajectories.from_arrays(np.zeros((2, 3, 2), int), mask,
                                                    first_round=1),
                   "episode index 1, round index 1",
                   "episode 1 has no rows at round 2, between rounds 1 and 3")


def test_from_arrays_episode_starting_late():
    mask = np.zeros((2, 3, 1), bool)
    mask[0, 0, :] = True
    assert_refused(lambda: Trajectories.from_arrays(np.zeros((2, 3, 1), int), mask),
                   "episode 0 has no rows at round 0")


def test_from_arrays_trailing_empty_rounds_everywhere():
    mask = np.zeros((1, 3, 1), bool)
    mask[0, 2, 0] = True
    assert_refused(lambda: Trajectories.from_arrays(np.zeros((1, 3, 1), int), mask),
                   "round index 2", "nobody playing")


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(actions=np.zeros((1, 1, 1))), "integer array"),
    (dict(actions=np.zeros((1, 1), int)), "integer array"),
    (dict(actions=np.zeros((1, 1, 1), int), mask=np.zeros((1, 1, 1), int)), "bool"),
    (dict(actions=np.full((1, 1, 1), 3), num_actions=3), "index (0, 0, 0)"),
    (dict(actions=np.full((1, 1, 1), -1)), "out of range"),
    (dict(actions=np.zeros((1, 1, 2), int), agent_labels=["b", "a"]), "sorted"),
    (dict(actions=np.zeros((1, 1, 2), int), agent_labels=[1, 1]), "repeated"),
    (dict(actions=np.zeros((1, 1, 2), int), agent_labels=[1, "a"]), "mixes"),
    (dict(actions=np.zeros((1, 1, 1), int), agent_labels=["1.5"]), "look like numbers"),
    (dict(actions=np.zeros((1, 1, 1), int), episode_labels=[1, 2]), "expected 1"),
    (dict(actions=np.zeros((1, 1, 1), int), payoff=np.full((1, 1, 1), np.inf)),
     "not finite"),
    (dict(actions=np.zeros((1, 1, 1), int), first_round=1.0), "first_round"),
])
def test_from_arrays_refuses(kwargs, fragment):
    assert_refused(lambda: Trajectories.from_arrays(**kwargs), fragment)


def test_from_arrays_ignores_masked_entries():
    actions = np.array([[[1, -7]], [[0, 1]]])
    mask = np.array([[[False, True]], [[False, False]]])
    payoff = np.array([[[0.5, np.inf]], [[np.nan, 2.0]]])
    traj = Trajectories.from_arrays(actions, mask, payoff=payoff)
    assert traj.actions.dtype == np.int32 and traj.actions[0, 0, 1] == 0
    assert np.isnan(traj.payoff[0, 0, 1]) and np.isnan(traj.payoff[1, 0, 0])
    assert traj.num_actions == 2 and traj.action_labels == (0, 1)


def test_constructor_checks_dtypes():
    good = dict(actions=np.zeros((1, 1, 1), np.int32), mask=np.zeros((1, 1, 1), bool),
                num_actions=2, episode_labels=(0,), agent_labels=(0,),
                action_labels=(0, 1), first_round=0)
    Trajectories(**good)
    assert_refused(lambda: Trajectories(**{**good, "actions": np.zeros((1, 1, 1))}),
                   "int32")
    assert_refused(lambda: Trajectories(**{**good, "action_labels": ("a",)}),
                   "action_labels")
    masked = dict(good, actions=np.ones((1, 2, 1), np.int32),
                  mask=np.array([[[False], [True]]]))
    assert_refused(lambda: Trajectories(**masked), "masked entries must hold 0")


def test_from_arrays_to_dataframe():
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 3, size=(2, 4, 3))
    mask = np.zeros((2, 4, 3), bool)
    mask[0, 1, 2] = True  # absent mid-episode
    mask[1, 2:, :] = True  # shorter episode
    mask[1, 1, 0] = True
    payoff = rng.normal(size=(2, 4, 3))
    payoff[0, 0, 0] = np.nan
    traj = Trajectories.from_arrays(actions, mask, payoff=payoff,
                                    episode_labels=["ep1", "ep2"],
                                    agent_labels=[10, 20, 30],
                                    action_labels=["a", "b", "c"], first_round=1)
    expected = [(ep, t + 1, ag, "abc"[actions[e, t, i]], payoff[e, t, i])
                for e, ep in enumerate(["ep1", "ep2"]) for t in range(4)
                for i, ag in enumerate([10, 20, 30]) if not mask[e, t, i]]
    df = traj.to_dataframe()
    assert list(df.columns) == ["episode", "round", "agent", "action", "payoff"]
    got = list(df.itertuples(index=False, name=None))
    assert [row[:4] for row in got] == [row[:4] for row in expected]
    np.testing.assert_array_equal([row[4] for row in got], [row[4] for row in expected])
    assert df["round"].dtype == np.int64 and df["agent"].dtype == np.int64
    back = Trajectories.from_dataframe(df, action_labels=traj.action_labels)
    assert back == traj
    assert traj.episode_lengths.tolist() == [4, 2]


# --------------------------------------------------------------------------- check_against


def uneven():
    mask = np.zeros((2, 3, 2), bool)
    mask[1, 2, :] = True  # trailing: always legal
    return mask


def test_check_against_counts():
    traj = Trajectories.from_arrays(np.zeros((2, 3, 2), int), uneven(), num_actions=3)
    assert_refused(lambda: traj.check_against(num_agents=3, num_actions=3,
                                              allows_absence=True, family="linear",
                                              source="d.csv"),
                   "d.csv", "2 agents", "num_agents=3")
    assert_refused(lambda: traj.check_against(num_agents=2, num_actions=4,
                                              allows_absence=True, family="linear"),
                   "3 actions", "num_actions=4")
    traj.check_against(num_agents=2, num_actions=3, allows_absence=False, family="tabular")


def test_check_against_absence():
    mask = uneven()
    mask[1, 1, 0] = True
    traj = Trajectories.from_arrays(np.zeros((2, 3, 2), int), mask, num_actions=2,
                                    episode_labels=["e1", "e2"], agent_labels=["a", "b"],
                                    first_round=1)
    traj.check_against(num_agents=2, num_actions=2, allows_absence=True,
                       family="congestion")
    message = assert_refused(
        lambda: traj.check_against(num_agents=2, num_actions=2, allows_absence=False,
                                   family="tabular", source="d.csv"),
        "d.csv", "agent 'a'", "episode 'e2', round 2", "'tabular'",
        "needs every agent in every round")
    for family in ("congestion", "anonymous", "public_goods", "linear"):
        assert family in message


# --------------------------------------------------------------------------- round trips


AGENTS = ["Zoë", "al \"x\"", "bob"]  # sorted; a quote and an inner space


def rich_trajectories():
    """String labels, uneven episodes, partial payoffs, an agent absent mid-episode."""
    actions = np.array([[[0, 2, 1], [1, 1, 0], [2, 0, 0]],
                        [[1, 0, 2], [0, 0, 0], [0, 0, 0]]])
    mask = np.array([[[False, False, False], [False, True, False], [False, False, True]],
                     [[False, False, False], [True, False, True], [True, True, True]]])
    payoff = np.array([[[0.1, 1 / 3, -2.5], [np.nan, 0, 1e-300], [7.0, np.nan, 0]],
                       [[np.nextafter(1.0, 2.0), 5, -0.0], [0, np.nan, 0], [0, 0, 0]]])
    return Trajectories.from_arrays(
        np.where(mask, 0, actions), mask, payoff=payoff,
        episode_labels=["day 1", "day,2"], agent_labels=AGENTS,
        action_labels=["high", "low", "mid"], first_round=1)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_round_trip(tmp_path, suffix):
    traj = rich_trajectories()
    path = tmp_path / f"out.{suffix}"
    getattr(traj, f"to_{suffix}")(path)
    back = getattr(Trajectories, f"from_{suffix}")(path)
    assert back == traj
    assert back.payoff[0, 0, 1] == 1 / 3 and back.first_round == 1
    assert os.listdir(tmp_path) == [path.name]  # no temporary left behind


def test_round_trip_with_unplayed_action_needs_the_count(tmp_path):
    traj = Trajectories.from_arrays(np.array([[[0, 1]]]), num_actions=4)
    traj.to_csv(tmp_path / "a.csv")
    assert Trajectories.from_csv(tmp_path / "a.csv") != traj
    assert Trajectories.from_csv(tmp_path / "a.csv", num_actions=4) == traj


def test_csv_text_is_sorted_long_format(tmp_path):
    traj = Trajectories.from_arrays(np.array([[[1, 0]], [[0, 1]]]),
                                    np.array([[[False, True]], [[False, False]]]),
                                    payoff=np.array([[[0.25, 9]], [[np.nan, 1]]]),
                                    agent_labels=["x", "y"], first_round=3)
    traj.to_csv(tmp_path / "a.csv")
    assert (tmp_path / "a.csv").read_text() == (
        "episode,round,agent,action,payoff\n0,3,x,1,0.25\n1,3,x,0,\n1,3,y,1,1.0\n")


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.csv"
    path.write_text("old")

    def broken_writer(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(csv, "writer", broken_writer)
    with pytest.raises(RuntimeError):
        rich_trajectories().to_csv(path)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.csv"]


# --------------------------------------------------------------------------- object


def test_properties_summary_and_equality():
    traj = rich_trajectories()
    assert (traj.num_episodes, traj.num_rounds, traj.num_agents) == (2, 3, 3)
    assert traj.episode_lengths.tolist() == [3, 2]
    assert traj.masked_fraction == pytest.approx(7 / 18)
    assert traj.summary() == {
        "num_episodes": 2, "num_rounds": 3, "num_agents": 3, "num_actions": 3,
        "masked_fraction": pytest.approx(7 / 18),
        "agent_labels": AGENTS,
        "action_labels": ["high", "low", "mid"], "first_round": 1, "has_payoff": True}
    same = rich_trajectories()
    assert same == traj  # NaN payoffs compare equal
    moved = Trajectories.from_arrays(traj.actions, traj.mask, payoff=traj.payoff,
                                     episode_labels=traj.episode_labels,
                                     agent_labels=traj.agent_labels,
                                     action_labels=traj.action_labels, first_round=0)
    assert moved != traj
    assert Trajectories.from_arrays(traj.actions, traj.mask,
                                    episode_labels=traj.episode_labels,
                                    agent_labels=traj.agent_labels,
                                    action_labels=traj.action_labels,
                                    first_round=1) != traj  # payoff None
    with pytest.raises(ValueError):
        traj.actions[0, 0, 0] = 1  # read-only
    with pytest.raises(TypeError):
        hash(traj)


# --------------------------------------------------------------------------- property


LABEL_CHARS = "abcXYZ019 ,\"'é_-"


def label_sets(size):
    ints = st.lists(st.integers(-50, 10**12), min_size=size, max_size=size, unique=True)
    strs = st.lists(st.text(LABEL_CHARS, max_size=4).map(lambda s: "L" + s + "z"),
                    min_size=size, max_size=size, unique=True)
    return st.one_of(ints, strs)


@st.composite
def long_tables(draw):
    """A valid long table as a dict (episode, round, agent) -> (action, payoff)."""
    num_episodes = draw(st.integers(1, 3))
    num_agents = draw(st.integers(1, 3))
    num_actions = draw(st.integers(1, 4))
    episodes = draw(label_sets(num_episodes))
    agents = draw(label_sets(num_agents))
    actions = draw(st.one_of(
        st.just(list(range(num_actions))),
        st.lists(st.text("abcdé", min_size=1, max_size=3).map(lambda s: "A" + s),
                 min_size=num_actions, max_size=num_actions, unique=True)))
    first_round = draw(st.integers(-3, 3))
    with_payoff = draw(st.booleans())
    payoffs = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False))
    rows = {}
    for episode in episodes:
        length = draw(st.integers(1, 4))
        stops = [draw(st.integers(1, length)) for _ in agents]  # trailing drop-outs
        for t in range(length):
            present = [a for a, stop in zip(agents, stops)
                       if t < stop and draw(st.integers(0, 3)) > 0]
            if not present:
                present = [draw(st.sampled_from(agents))]
            for agent in present:
                rows[episode, first_round + t, agent] = (
                    draw(st.sampled_from(actions)), draw(payoffs) if with_payoff else None)
    for agent in agents:  # every agent plays somewhere
        if not any(key[2] == agent for key in rows):
            rows[episodes[0], first_round, agent] = (actions[0], None)
    order = draw(st.permutations(sorted(rows, key=repr)))
    return rows, order, actions, with_payoff, draw(st.booleans())


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(long_tables())
def test_random_tables_round_trip(tmp_path, table):
    rows, order, actions, with_payoff, decorate = table
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["episode", "round", "agent", "action"] + ["payoff"] * with_payoff)
    for key in order:
        action, payoff = rows[key]
        cells = [*key, action]
        if with_payoff:
            cells.append("" if payoff is None else repr(payoff))
        writer.writerow(cells)
    text = buffer.getvalue()
    if decorate:
        text = "\ufeff" + text + "\n\n"
    path = write_csv(tmp_path, text)
    traj = Trajectories.from_csv(path, action_labels=actions)

    episodes = sorted({key[0] for key in rows})
    agents = sorted({key[2] for key in rows})
    first_round = min(key[1] for key in rows)
    num_rounds = max(key[1] for key in rows) - first_round + 1
    assert traj.episode_labels == tuple(episodes)
    assert traj.agent_labels == tuple(agents)
    assert traj.action_labels == tuple(actions)
    assert traj.first_round == first_round
    assert traj.actions.shape == (len(episodes), num_rounds, len(agents))
    assert (traj.payoff is not None) == with_payoff
    for e, episode in enumerate(episodes):
        for t in range(num_rounds):
            for i, agent in enumerate(agents):
                row = rows.get((episode, first_round + t, agent))
                assert traj.mask[e, t, i] == (row is None)
                if row is None:
                    assert traj.actions[e, t, i] == 0
                    continue
                assert traj.action_labels[traj.actions[e, t, i]] == row[0]
                if with_payoff:
                    expected = math.nan if row[1] is None else row[1]
                    np.testing.assert_array_equal(traj.payoff[e, t, i], expected)

    out = tmp_path / "out.csv"
    traj.to_csv(out)
    assert Trajectories.from_csv(out, action_labels=actions) == traj
    out_pq = tmp_path / "out.parquet"
    traj.to_parquet(out_pq)
    assert Trajectories.from_parquet(out_pq, action_labels=actions) == traj
    assert Trajectories.from_dataframe(traj.to_dataframe(), action_labels=actions) == traj
