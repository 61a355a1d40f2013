"""The search workspace: a git repository of its own, one commit per candidate (the only module that touches git).

Layout: archer.toml, results.csv, reverted.json, candidates/NNNN-name/{naive.py, candidate.json, report.md,
diff.patch}; work in flight lives in .archer/ (excluded from git). results.csv doubles as the index, so
recording stays fast at thousands of candidates. Tested by tests/test_history*.py on real repositories.
"""
from __future__ import annotations

import contextlib
import difflib
import fcntl
import json
import os
import shutil
import signal
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import git
from pydantic import ValidationError

from agent import table
from agent.config import Config, load_config, save_config
from agent.errors import CandidateNotFound, ConfigError, WorkspaceError
from agent.journal import Journal, write_atomic
from agent.records import RECORD_STATUSES, Candidate, Usage
from agent.prompts import render

CANDIDATES = "candidates"
RESULTS = "results.csv"
CONFIG = "archer.toml"
REVERTED = "reverted.json"
REFERENCES = "references.csv"
NO_CODE_MARKER = "# archer: no code"     # first line of naive.py for a candidate recorded without code (import)
STATE = ".archer"
FILES = ("naive.py", "candidate.json", "report.md", "diff.patch")
CRASH_ENV = "ARCHER_CRASH_AT"
CRASH_STEPS = ("folder", "files", "csv", "add", "lock", "commit")
BASELINE_CODE = Path(__file__).resolve().parent.parent / "sandbox" / "naive.py"
AUTHOR = {"user.name": "archer", "user.email": "archer@localhost"}


def folder_name(id: int, name: str) -> str:
    return f"{id:04d}-{name}"


def unified_diff(old: str, new: str, old_label: str, new_label: str) -> str:
    """A unified diff that `git apply` accepts, including files without a final newline."""
    def lines(text: str) -> list[str]:
        out = text.splitlines(keepends=True)
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n\\ No newline at end of file\n"
        return out
    return "".join(difflib.unified_diff(lines(old), lines(new), old_label, new_label))


def summary_of(cand: Candidate, parent: Candidate | None) -> str:
    """The lab-notebook line: "0007 foo: mean 0.676, +0.008 vs 0003" or "0008 foo: rejected (reason)"."""
    head = f"{cand.id:04d} {cand.name}"
    if cand.status == "ok" and cand.mean is not None:
        line = f"{head}: mean {cand.mean:.3f}"
        if parent is not None and parent.scored:
            line += f", {cand.mean - parent.mean:+.3f} vs {parent.id:04d}"
        elif parent is not None:
            line += f", {parent.id:04d} not scored"
        return line
    if cand.status == "pending":
        return f"{head}: pending (not yet evaluated)"
    reason = cand.reasons[0].code if cand.reasons else ""
    return f"{head}: {cand.status}" + (f" ({reason})" if reason else "")


class Workspace:
    """An archer workspace; build one with `Workspace.init` or `Workspace.open`."""

    def __init__(self, path: Path, repo: git.Repo, config: Config):
        self.path = Path(path)
        self.repo = repo
        self.config = config
        self.journal = Journal(self.path / STATE / "journal")
        self._cache: dict[int, tuple[int, Candidate]] = {}
        self._folders: dict[int, str] | None = None
        self._rows: dict[int, dict] | None = None
        self._reverted: dict[int, dict] | None = None
        self.repairs: list[str] = []
        self._head = ""

    @classmethod
    def init(cls, path: Path, config: Config | None = None, *, baseline_code: str | None = None) -> "Workspace":
        """A new workspace at `path` holding archer.toml, results.csv and the baseline as candidate 0000."""
        path = Path(path)
        if (path / CONFIG).exists() or (path / CANDIDATES).exists():
            raise WorkspaceError(f"{path}: already holds a workspace")
        if (path / ".git").exists():
            raise WorkspaceError(f"{path}: already a git repository; choose a new folder")
        if path.exists() and not path.is_dir():
            raise WorkspaceError(f"{path}: exists and is not a folder")
        if baseline_code is None:
            if not BASELINE_CODE.exists():
                raise WorkspaceError(f"{BASELINE_CODE}: the baseline naive.py is missing")
            baseline_code = BASELINE_CODE.read_text()
        config = config or Config()
        # files already in the folder (the project's history/README.md) are left to their owner
        foreign = sorted(p.name for p in path.iterdir()) if path.exists() else []
        path.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.init(path, initial_branch="main")
        with repo.config_writer() as cw:
            for key, value in AUTHOR.items():
                cw.set_value(*key.split("."), value)
        exclude = Path(repo.git_dir) / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        exclude.write_text("".join(f"/{name}\n" for name in [f"{STATE}/", *foreign]))
        (path / STATE).mkdir(exist_ok=True)
        save_config(config, path / CONFIG)
        (path / REVERTED).write_text("{}\n")
        ws = cls(path, repo, config)
        ws._folders, ws._rows, ws._reverted = {}, {}, {}
        baseline = Candidate(id=0, name="baseline", parent=None, proposer="baseline", status="pending",
                             profile=config.eval.profile, model=config.eval.model, seeds=list(config.eval.seeds))
        report = render("history_baseline.j2", profile=config.eval.profile)
        with ws._writing():
            ws._write_candidate(baseline, baseline_code, report, summary_of(baseline, None),
                                extra=(CONFIG, REVERTED))
        return ws

    @classmethod
    def open(cls, path: Path) -> "Workspace":
        """Open a workspace, repairing what a crash can leave (stale lock, uncommitted folder, stale csv)."""
        path = Path(path)
        if not (path / CONFIG).exists():
            raise WorkspaceError(f"{path}: not an archer workspace (no {CONFIG}); create one with `archer init {path}`")
        try:
            repo = git.Repo(path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise WorkspaceError(f"{path}: not a git repository; the workspace is corrupt") from None
        if Path(repo.working_tree_dir).resolve() != path.resolve():
            raise WorkspaceError(f"{path}: not the root of its own git repository; the workspace is corrupt")
        try:
            repo.head.commit
        except ValueError:
            raise WorkspaceError(f"{path}: the git repository has no commits (an interrupted `archer init`?); "
                                 "remove the folder and run `archer init` again") from None
        try:
            config = load_config(path / CONFIG)
        except ConfigError as e:
            raise WorkspaceError(str(e)) from None
        (path / STATE).mkdir(exist_ok=True)
        ws = cls(path, repo, config)
        ws._try_repair()
        return ws

    @contextlib.contextmanager
    def _writing(self):
        """Hold the workspace's writer lock (a flock the kernel drops if this process dies)."""
        (self.path / STATE).mkdir(exist_ok=True)
        with open(self.path / STATE / "write.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                self._sync()
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _sync(self) -> None:
        """Forget cached listings when another process committed since this one last looked."""
        try:
            head = self.repo.head.commit.hexsha
        except ValueError:
            head = ""  # no commit yet (during init)
        if head != self._head:
            self._folders = self._rows = self._reverted = None
            self._head = head

    def _try_repair(self) -> None:
        (self.path / STATE).mkdir(exist_ok=True)
        with open(self.path / STATE / "write.lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another archer process is writing: its state is not ours to repair
            try:
                self.repairs = self._repair()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _repair(self) -> list[str]:
        """Bring the working tree back to the last commit and results.csv in step; returns what it fixed."""
        fixed = []
        git_dir = Path(self.repo.git_dir)
        lock = git_dir / "index.lock"
        if lock.exists():
            lock.unlink()
            fixed.append("removed a stale .git/index.lock")
        if (git_dir / "REVERT_HEAD").exists() or (git_dir / "sequencer").exists():
            self.repo.git.revert("--quit")
            fixed.append("abandoned an unfinished revert")
        tracked = (CANDIDATES, RESULTS, REVERTED)
        dirty = self.repo.git.status("--porcelain", "--untracked-files=all", "--", *tracked)
        if dirty.strip():
            kept = self._keep_copies([line[3:] for line in dirty.splitlines() if len(line) > 3])
            self.repo.git.reset("-q")
            in_head = set(self.repo.git.ls_tree("--name-only", "HEAD").split())
            self.repo.git.checkout("-q", "HEAD", "--", *[p for p in tracked if p in in_head])
            self.repo.git.clean("-q", "-f", "-d", "--", CANDIDATES)
            fixed.append(f"rolled back uncommitted changes to the last commit (copies kept in {kept}): "
                         + "; ".join(dirty.strip().splitlines()[:5]))
        self._folders = self._rows = self._reverted = None
        committed = set(self.repo.git.ls_tree("--name-only", "HEAD", f"{CANDIDATES}/").split())
        for folder in self._scan().values():
            if f"{CANDIDATES}/{folder}" not in committed:
                shutil.rmtree(self.path / CANDIDATES / folder)
                fixed.append(f"removed the uncommitted folder {CANDIDATES}/{folder}")
        self._folders = None
        folders = self._scan()
        try:
            rows = self._load_rows()
        except WorkspaceError:
            rows = {}
        in_step = {i: r["name"] for i, r in rows.items()} == {i: f.split("-", 1)[1] for i, f in folders.items()}
        if not in_step:
            self._rows = {c.id: table.row_of(c) for c in self.records()}
            self._write_results()
            self._commit([RESULTS], "results.csv regenerated from the candidates (it was out of step)")
            fixed.append("regenerated results.csv")
        return fixed

    def _keep_copies(self, paths: list[str]) -> Path:
        """Copy uncommitted files to .archer/recovered/<time>/ before a repair rolls them back."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        dest = self.path / STATE / "recovered" / stamp
        for rel in paths:
            rel = rel.strip('"').split(" -> ")[-1]
            src = self.path / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
        return dest.relative_to(self.path)

    def _scan(self) -> dict[int, str]:
        if self._folders is None:
            folders = {}
            root = self.path / CANDIDATES
            if root.is_dir():
                for entry in os.scandir(root):
                    head, _, name = entry.name.partition("-")
                    if entry.is_dir() and head.isdigit() and name:
                        folders[int(head)] = entry.name
            self._folders = folders
        return self._folders

    def _load_rows(self) -> dict[int, dict]:
        if self._rows is None:
            try:
                df = table.read_csv((self.path / RESULTS).read_text())
            except (OSError, ValueError) as e:
                raise WorkspaceError(f"{self.path / RESULTS}: unreadable ({e})") from None
            self._rows = {int(r["id"]): r for r in df.to_dict("records")}
        return self._rows

    def _reverted_entries(self) -> dict[int, dict]:
        if self._reverted is None:
            try:
                data = json.loads((self.path / REVERTED).read_text())
                self._reverted = {int(k): v for k, v in data.items()}
            except FileNotFoundError:
                self._reverted = {}
            except (json.JSONDecodeError, ValueError, AttributeError) as e:
                raise WorkspaceError(f"{self.path / REVERTED}: unreadable ({e})") from None
        return self._reverted

    def _crash_point(self, step: str) -> None:
        """Test hook: ARCHER_CRASH_AT=<step> kills this process there (see CRASH_STEPS)."""
        if os.environ.get(CRASH_ENV) == step:
            if step == "lock":
                os.close(os.open(Path(self.repo.git_dir) / "index.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            os.kill(os.getpid(), signal.SIGKILL)

    def _commit(self, paths: list[str], message: str, *, whole_index: bool = False) -> str:
        """Stage `paths` and commit them (or everything staged, after a `git revert --no-commit`)."""
        self.repo.git.add("-A", "--", *paths)
        self._crash_point("add")
        self._crash_point("lock")
        staged = self.repo.git.diff("--cached", "--name-only", *([] if whole_index else ["--", *paths]))
        if staged.strip():
            self.repo.git.commit("-q", "--no-verify", "-m", message, *([] if whole_index else ["--", *paths]))
        self._crash_point("commit")
        self._head = self.repo.head.commit.hexsha
        return self._head

    def _write_results(self) -> None:
        df = table.frame_of(list(self._load_rows().values()))
        write_atomic(self.path / RESULTS, table.to_csv(df))

    def _write_candidate(self, cand: Candidate, code: str, report_md: str, message: str,
                         extra: tuple[str, ...] = ()) -> None:
        folder = folder_name(cand.id, cand.name)
        target = self.path / CANDIDATES / folder
        try:
            parent_code, parent_label = "", "/dev/null"
            if cand.parent is not None:
                parent_code = self.code(cand.parent)
                parent_label = f"a/{CANDIDATES}/{self._folder_of(cand.parent)}/naive.py"
            target.mkdir(parents=True, exist_ok=True)
            self._crash_point("folder")
            (target / "naive.py").write_text(code)
            (target / "candidate.json").write_text(cand.model_dump_json(indent=1) + "\n")
            (target / "report.md").write_text(report_md)
            (target / "diff.patch").write_text(
                unified_diff(parent_code, code, parent_label, f"b/{CANDIDATES}/{folder}/naive.py"))
            self._crash_point("files")
            rows = dict(self._load_rows())
            rows[cand.id] = table.row_of(cand)
            write_atomic(self.path / RESULTS, table.to_csv(table.frame_of(list(rows.values()))))
            self._crash_point("csv")
            self._commit([f"{CANDIDATES}/{folder}", RESULTS, *extra],
                         f"{message}\n\nArcher-Candidate: {cand.id:04d}")
        except BaseException:
            self._folders = self._rows = None
            with contextlib.suppress(git.GitCommandError, OSError):
                self._repair()
            raise
        self._scan()[cand.id] = folder
        self._rows = rows
        self._cache.pop(cand.id, None)

    def _folder_of(self, id: int) -> str:
        folder = self._scan().get(id)
        if folder is None:
            raise CandidateNotFound(f"no candidate {id:04d} in {self.path}")
        return folder

    def _read(self, id: int, filename: str) -> str:
        """A file of candidate `id`: from the working tree, or from git history when it was reverted."""
        folder = self._scan().get(id)
        if folder is not None:
            return (self.path / CANDIDATES / folder / filename).read_text()
        entry = self._reverted_entries().get(id)
        if entry is None:
            raise CandidateNotFound(f"no candidate {id:04d} in {self.path}")
        return self.repo.git.show(f"{entry['commit']}:{CANDIDATES}/{entry['folder']}/{filename}",
                                  strip_newline_in_stdout=False)

    def get(self, id: int) -> Candidate:
        folder = self._scan().get(id)
        path = self.path / CANDIDATES / folder / "candidate.json" if folder else None
        stamp = path.stat().st_mtime_ns if path is not None and path.exists() else -1
        hit = self._cache.get(id)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        text = self._read(id, "candidate.json")
        try:
            cand = Candidate.model_validate_json(text)
        except ValidationError as e:
            raise WorkspaceError(f"candidate {id:04d}: candidate.json is invalid ({e.errors()[0]['msg']})") from None
        self._cache[id] = (stamp, cand)
        return cand

    def usage_totals(self) -> Usage:
        """LLM usage summed over every candidate, reverted ones included (plain JSON reads, no validation)."""
        total = Usage()
        for id in sorted(set(self._scan()) | set(self._reverted_entries())):
            hit = self._cache.get(id)
            usage = hit[1].usage if hit else Usage.model_validate(json.loads(self._read(id, "candidate.json"))["usage"])
            total = total + usage
        return total

    def code(self, id: int) -> str:
        return self._read(id, "naive.py")

    def report(self, id: int) -> str:
        return self._read(id, "report.md")

    def has_code(self, id: int) -> bool:
        """False for candidates recorded without code (imported from logs): they cannot be parents or replayed."""
        return not self.code(id).startswith(NO_CODE_MARKER)

    def diff_patch(self, id: int) -> str:
        return self._read(id, "diff.patch")

    def records(self, *, include_reverted: bool = False) -> list[Candidate]:
        """Every candidate in search order (by id); reverted ones only when asked for."""
        self._sync()
        ids = set(self._scan())
        if include_reverted:
            ids |= set(self._reverted_entries())
        return [self.get(i) for i in sorted(ids)]

    def results(self) -> "table.pd.DataFrame":
        """results.csv as a DataFrame (read from the index, no candidate.json parsed)."""
        self._sync()
        return table.frame_of(list(self._load_rows().values()))

    def ids(self) -> list[int]:
        return sorted(self._scan())

    def next_id(self) -> int:
        """One more than any id ever used: recorded, reverted, or claimed by a journal entry's "id"."""
        self._sync()
        used = set(self._scan()) | set(self._reverted_entries())
        used |= {e["id"] for e in self.journal.pending().values() if isinstance(e.get("id"), int)}
        return max(used, default=-1) + 1

    def names(self) -> set[str]:
        names = {f.split("-", 1)[1] for f in self._scan().values()}
        return names | {e["name"] for e in self._reverted_entries().values()}

    def record(self, cand: Candidate, code: str, report_md: str) -> Candidate:
        """Commit one candidate; recording the same id and name again (a resumed journal entry) is a no-op."""
        if cand.status not in RECORD_STATUSES:
            raise WorkspaceError(f"candidate {cand.id:04d}: unknown status {cand.status!r}")
        with self._writing():
            self._folders = None
            existing = self._scan().get(cand.id) or self._reverted_entries().get(cand.id, {}).get("folder")
            if existing is not None:
                if existing == folder_name(cand.id, cand.name):
                    return self.get(cand.id)
                raise WorkspaceError(f"candidate {cand.id:04d} already exists as {existing}")
            if cand.name in self.names():
                raise WorkspaceError(f"the name {cand.name!r} is already used by another candidate")
            parent = None
            if cand.parent is not None:
                if cand.parent not in self._scan():
                    raise CandidateNotFound(f"candidate {cand.id:04d}: parent {cand.parent:04d} is not in the table")
                parent = self.get(cand.parent)
            self._write_candidate(cand, code, report_md, summary_of(cand, parent))
        return cand

    def update(self, cand: Candidate, report_md: str | None = None) -> Candidate:
        """Rewrite a recorded candidate's record (e.g. the baseline once scored) in one commit."""
        with self._writing():
            folder = self._folder_of(cand.id)
            if folder != folder_name(cand.id, cand.name):
                raise WorkspaceError(f"candidate {cand.id:04d} is {folder}; its name cannot change")
            parent = self.get(cand.parent) if cand.parent is not None else None
            target = self.path / CANDIDATES / folder
            try:
                (target / "candidate.json").write_text(cand.model_dump_json(indent=1) + "\n")
                if report_md is not None:
                    (target / "report.md").write_text(report_md)
                rows = dict(self._load_rows())
                rows[cand.id] = table.row_of(cand)
                write_atomic(self.path / RESULTS, table.to_csv(table.frame_of(list(rows.values()))))
                self._commit([f"{CANDIDATES}/{folder}", RESULTS],
                             f"{summary_of(cand, parent)} (updated)\n\nArcher-Candidate: {cand.id:04d}")
            except BaseException:
                self._folders = self._rows = None
                with contextlib.suppress(git.GitCommandError, OSError):
                    self._repair()
                raise
            self._rows = rows
            self._cache.pop(cand.id, None)
        return cand

    def commits_of(self, id: int) -> list[str]:
        """The commits that wrote candidate `id`, newest first."""
        folder = self._folder_of(id)
        return self.repo.git.log("--format=%H", "--", f"{CANDIDATES}/{folder}").split()

    def revert(self, id: int, reason: str) -> None:
        """`git revert` of every commit of candidate `id`; it leaves the table and the pool of parents."""
        if id == 0:
            raise WorkspaceError("the baseline (0000) cannot be reverted")
        if not reason.strip():
            raise WorkspaceError("a revert needs a reason")
        with self._writing():
            self._folders = self._reverted = None
            entries = self._reverted_entries()
            if id in entries:
                raise WorkspaceError(f"candidate {id:04d} is already reverted ({entries[id]['reason']})")
            folder = self._folder_of(id)
            shas = self.commits_of(id)
            cand = self.get(id)
            try:
                self.repo.git.revert("--no-commit", "-X", "ours", *shas)
                if (self.path / CANDIDATES / folder).exists():
                    raise WorkspaceError(f"revert of {folder} left files behind; nothing was changed")
                entries = dict(entries)
                entries[id] = {"name": cand.name, "folder": folder, "reason": reason.strip(), "commit": shas[0],
                               "reverted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                write_atomic(self.path / REVERTED, json.dumps({str(k): v for k, v in sorted(entries.items())},
                                                              ensure_ascii=False, indent=1) + "\n")
                rows = {k: v for k, v in self._load_rows().items() if k != id}
                write_atomic(self.path / RESULTS, table.to_csv(table.frame_of(list(rows.values()))))
                message = (f"Revert {folder_name(id, cand.name)}: {reason.strip()}\n\n"
                           f"This reverts commit{'s' if len(shas) > 1 else ''} {', '.join(shas)}.\n\n"
                           f"Archer-Reverted: {id:04d}")
                self._commit([RESULTS, REVERTED], message, whole_index=True)
                with contextlib.suppress(git.GitCommandError):
                    self.repo.git.revert("--quit")
            except BaseException:
                self._folders = self._rows = self._reverted = None
                with contextlib.suppress(git.GitCommandError, OSError):
                    self._repair()
                raise
            self._reverted = entries
            self._rows = rows
            self._scan().pop(id, None)
            self._cache.pop(id, None)

    def reverted(self) -> dict[int, str]:
        return {i: e["reason"] for i, e in sorted(self._reverted_entries().items())}

    def save_config(self, config: Config) -> None:
        """Store the resolved configuration in archer.toml, committed when it changed."""
        with self._writing():
            save_config(config, self.path / CONFIG)
            self.config = config
            if self.repo.git.status("--porcelain", "--", CONFIG).strip():
                self._commit([CONFIG], "archer.toml: configuration updated")

    def merge_file(self, ours: str, base: str, theirs: str, labels: tuple[str, str, str]) -> tuple[str, int]:
        """Three-way merge of one file's texts with `git merge-file`: (merged text, number of conflicts)."""
        with tempfile.TemporaryDirectory(prefix="archer-merge-") as tmp:
            paths = []
            for role, text in zip(("ours", "base", "theirs"), (ours, base, theirs)):
                paths.append(Path(tmp) / role)
                paths[-1].write_text(text)
            status, merged, err = self.repo.git.merge_file(
                "-p", "--diff3", "-L", labels[0], "-L", labels[1], "-L", labels[2], *map(str, paths),
                with_extended_output=True, with_exceptions=False, strip_newline_in_stdout=False)
        if status < 0 or status > 127:
            raise WorkspaceError(f"git merge-file failed: {err.strip()}")
        return merged, status

    def save_references(self, scores: dict[str, dict[str, float]]) -> None:
        """Scores of reference models (e.g. gated_delta_net from an imported log) in references.csv, committed."""
        rows = [{"name": name, **{table.TASK_TITLES[t]: s.get(t) for t in table.TASKS}} for name, s in scores.items()]
        df = table.pd.DataFrame(rows, columns=["name", *table.TASK_COLUMNS])
        df["mean"] = df[table.TASK_COLUMNS].mean(axis=1, skipna=False)
        with self._writing():
            write_atomic(self.path / REFERENCES, df.to_csv(index=False, float_format="%.6f", lineterminator="\n"))
            self._commit([REFERENCES], f"references.csv: {len(rows)} reference model{'s' if len(rows) != 1 else ''}")

    def references(self) -> "table.pd.DataFrame":
        """Reference models' scores (name, task columns, mean); empty when there are none."""
        path = self.path / REFERENCES
        if not path.exists():
            return table.pd.DataFrame(columns=["name", *table.TASK_COLUMNS, "mean"])
        return table.pd.read_csv(path)

    def baseline(self) -> Candidate:
        return self.get(0)

    def best(self) -> Candidate | None:
        """The scored, non-reverted candidate with the highest mean (ties: the earliest)."""
        df = self.results()
        df = df[(df["status"] == "ok") & df["mean"].notna()]
        if df.empty:
            return None
        return self.get(int(df.sort_values(["mean", "id"], ascending=[False, True]).iloc[0]["id"]))
