"""The results table: one row per non-reverted candidate, as results.csv and as the `archer log` view.

Columns follow the earlier pipeline's task titles (agent.records.TASK_TITLES). Built with pandas from
Candidate records; tested by tests/test_history.py and tests/test_cli_history.py.
"""
from __future__ import annotations

import io

import pandas as pd
from rich.table import Table

from agent.records import TASKS, TASK_TITLES, Candidate

TASK_COLUMNS = [TASK_TITLES[t] for t in TASKS]
COLUMNS = ["id", "name", *TASK_COLUMNS, "mean", "std", "status", "parent", "proposer", "profile"]
DTYPES = {"id": "int64", "name": "string", **{c: "float64" for c in TASK_COLUMNS}, "mean": "float64",
          "std": "float64", "status": "string", "parent": "Int64", "proposer": "string", "profile": "string"}
SORT_KEYS = ("id", "mean", *TASKS)


def row_of(cand: Candidate) -> dict:
    row = {"id": cand.id, "name": cand.name, "mean": cand.mean,
           "std": cand.std if cand.mean is not None else None, "status": cand.status,
           "parent": cand.parent, "proposer": cand.proposer, "profile": cand.profile}
    for task in TASKS:
        score = cand.scores.get(task)
        row[TASK_TITLES[task]] = score.mean if score is not None else None
    return row


def frame_of(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df = df.astype(DTYPES)
    return df.sort_values("id", kind="stable").reset_index(drop=True)


def results_frame(cands: list[Candidate]) -> pd.DataFrame:
    return frame_of([row_of(c) for c in cands])


def to_csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format="%.6f", lineterminator="\n")


def read_csv(text: str) -> pd.DataFrame:
    df = pd.read_csv(io.StringIO(text), keep_default_na=True)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"missing columns: {', '.join(missing)}")
    return df[COLUMNS].astype(DTYPES)


def with_delta(df: pd.DataFrame) -> pd.DataFrame:
    """Adds `delta`: the candidate's mean minus its parent's mean (NaN where either is not scored)."""
    means = df.set_index("id")["mean"]
    out = df.copy()
    out["delta"] = df["mean"].to_numpy() - df["parent"].map(means).astype("float64").to_numpy()
    return out


def select(df: pd.DataFrame, *, status: list[str] | None = None, proposer: str | None = None,
           min_mean: float | None = None, sort: str = "id", descending: bool | None = None,
           limit: int | None = None) -> pd.DataFrame:
    """Filter and sort the table; `proposer` matches a prefix ("llm" matches "llm:gpt-4o")."""
    out = with_delta(df)
    if status:
        out = out[out["status"].isin(status)]
    if proposer:
        out = out[out["proposer"].str.startswith(proposer)]
    if min_mean is not None:
        out = out[out["mean"] >= min_mean]
    if sort not in SORT_KEYS:
        raise ValueError(f"sort by one of: {', '.join(SORT_KEYS)}")
    column = TASK_TITLES.get(sort, sort)
    desc = (sort != "id") if descending is None else descending
    out = out.sort_values([column, "id"], ascending=[not desc, True], na_position="last", kind="stable")
    if limit is not None:
        out = out.head(limit) if sort != "id" or desc else out.tail(limit)
    return out


def _num(x, fmt: str = "{:.3f}") -> str:
    return "" if x is None or pd.isna(x) else fmt.format(x)


def rich_table(df: pd.DataFrame, *, title: str | None = None) -> Table:
    """The `archer log` view of a selected frame (see `select`); the best score per task is bold."""
    table = Table(title=title, header_style="bold", pad_edge=False, box=None)
    table.add_column("id", justify="right")
    table.add_column("name", overflow="fold")
    short = {c: "".join(w[0] for w in c.split()) if " " in c else c[:4] for c in TASK_COLUMNS}
    for c in TASK_COLUMNS:
        table.add_column(short[c], justify="right")
    for c in ("mean", "±", "Δparent", "status", "parent", "proposer"):
        table.add_column(c, justify="right" if c in ("mean", "±", "Δparent", "parent") else "left")
    best = {c: df[c].max() for c in TASK_COLUMNS}
    for rd in df.to_dict("records"):
        cells = [f"{int(rd['id']):04d}", str(rd["name"])]
        for c in TASK_COLUMNS:
            text = _num(rd[c])
            cells.append(f"[bold]{text}[/bold]" if text and rd[c] == best[c] else text)
        status = str(rd["status"])
        colour = {"ok": "green", "pending": "yellow"}.get(status, "red")
        parent = rd["parent"]
        cells += [_num(rd["mean"]), _num(rd["std"]), _num(rd.get("delta"), "{:+.3f}"),
                  f"[{colour}]{status}[/{colour}]", "" if pd.isna(parent) else f"{int(parent):04d}",
                  str(rd["proposer"])]
        table.add_row(*cells)
    return table


def plain_text(df: pd.DataFrame) -> str:
    """A selected frame (see `select`) as fixed-width text: fast for thousands of rows, and for pipes."""
    def left(col: pd.Series, title: str) -> pd.Series:
        col = col.astype(str)
        return col.str.ljust(int(max(col.str.len().max() if len(col) else 0, len(title))))

    out = pd.DataFrame({"id": df["id"].map("{:04d}".format), "name": left(df["name"], "name")})
    for c in TASK_COLUMNS:
        out[c] = df[c].map(_num)
    out["mean"] = df["mean"].map(_num)
    out["±"] = df["std"].map(_num)
    delta = df["delta"] if "delta" in df else with_delta(df)["delta"]
    out["Δparent"] = delta.map(lambda x: _num(x, "{:+.3f}"))
    out["status"] = left(df["status"], "status")
    out["parent"] = df["parent"].map(lambda p: "" if pd.isna(p) else f"{int(p):04d}")
    out["proposer"] = left(df["proposer"], "proposer")
    return out.to_string(index=False, justify="left")
