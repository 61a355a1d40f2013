"""The search configuration (archer.toml): one pydantic model per concern, unknown keys rejected.

`archer init` writes the defaults; `archer run` reads it back and saves the resolved form.
Tested by tests/test_config.py.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import tomli_w
from pydantic import Field, ValidationError

from agent.errors import ConfigError
from agent.records import Strict


class EvalConfig(Strict):
    profile: str = "auto"                  # smoke | quick | screen | mad (sandbox/profiles.py); auto: screen
                                           # with CUDA, smoke without, fixed in archer.toml by the first run
    seeds: list[int] = Field(default_factory=lambda: [0])
    model: str = "delta_net"               # the layer around the candidate's delta rule
    device: str = "auto"                   # auto | cpu | cuda
    timeout_s: float = 3600.0              # wall-clock limit of one evaluation; the process group is killed
    memory_gb: float = 16.0                # address-space limit of the worker on CPU runs
    cascade: list[str] = Field(default_factory=list)  # e.g. ["quick", "screen"]: later stages only for promising ones
    cascade_verify: list[str] = Field(default_factory=lambda: ["mad"])  # cascade stages entered only by beating
                                           # the parent beyond the noise (the others: by not being worse beyond it)
    cascade_sigmas: float = 2.0            # the cascade's noise: this many standard errors of the difference
    deterministic: bool = False            # on GPUs, every op deterministic: a replay with the same seeds repeats
                                           # bit for bit (cost: NOTES.md, "Same seed, different scores")


class Endpoint(Strict):
    """One OpenAI-compatible endpoint and model."""
    name: str = "default"
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"    # the key is read from this environment variable, never stored
    timeout_s: float = 120.0
    temperature: float = 0.7
    max_tokens: int = 8000
    price_in_per_mtok: float = 0.0         # USD per million prompt tokens
    price_out_per_mtok: float = 0.0        # USD per million completion tokens
    structured_output: bool = True         # ask for a JSON schema reply; falls back to free text


class ProposerConfig(Strict):
    kind: Literal["mutate", "llm"] = "mutate"
    endpoints: list[Endpoint] = Field(default_factory=list)
    repair_rounds: int = 2                 # failed check or training error sent back at most this often
    max_retries: int = 4                   # per call, on 429 / 5xx / timeouts, with exponential backoff
    history_reports: int = 3               # insight reports shown in the prompt
    max_mutations: int = 2                 # mutate: transformations combined in one proposal


class ParentConfig(Strict):
    policy: Literal["greedy", "tournament", "explicit"] = "tournament"
    tournament_size: int = 3
    explore: float = 0.2                   # chance of picking an under-explored valid candidate instead
    explicit: int | None = None            # the parent for policy "explicit"


class BudgetConfig(Strict):
    candidates: int | None = None          # stop after this many new candidates
    tokens: int | None = None
    cost_usd: float | None = None
    wall_hours: float | None = None


class ExecutorConfig(Strict):
    kind: Literal["local", "ray"] = "local"
    address: str | None = None             # Ray cluster address ("auto", "ray://host:10001")
    gpus: list[int] | None = None          # local: GPU indices to use (None: all visible)
    per_gpu: int = 1                       # evaluations at once on one GPU
    lookahead: int = 1                     # proposals prepared ahead of free GPUs
    spare_workers: bool | None = None      # local: a worker started ahead per slot (None: on when slots have GPUs)


class Config(Strict):
    seed: int = 0                          # the controller's own randomness (parent choice, mutations)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    proposer: ProposerConfig = Field(default_factory=ProposerConfig)
    parents: ParentConfig = Field(default_factory=ParentConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)


def load_config(path: Path) -> Config:
    try:
        data = tomllib.loads(Path(path).read_text())
        return Config.model_validate(data)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"{path}: {loc}: {first['msg']}") from None


def save_config(config: Config, path: Path) -> None:
    Path(path).write_text(tomli_w.dumps(config.model_dump(exclude_none=True)))
