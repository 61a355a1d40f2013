"""The LLM proposer: renders the prompts, asks one of the configured endpoints, parses the reply.

A bandit chooses the endpoint by the improvement each has bought per unit of cost (rebuilt from the
history's records; fed by `observe`). Structured output where the endpoint takes it, free text
where it does not; a reply without Chinese gets one translation request. Every failure is one
ProposalError that carries the usage spent. Tested over real HTTP by tests/test_llm_proposer.py.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from agent.bandit import Bandit
from agent.config import ProposerConfig
from agent.context import ProposalContext
from agent.errors import ConfigError, ProposalError
from agent.llm import LLMClient, StructuredOutputRejected
from agent.parse import missing_chinese, parse_reply, parse_translations, reply_schema
from agent.prompts import render
from agent.proposal import Bilingual, Proposal
from agent.records import TASK_TITLES, Candidate, Usage
from sandbox.static_checks import ALLOWED_IMPORTS, CHUNK_SIZE_DEFAULT, ENTRY, REQUIRED_PARAMS

NAMES_SHOWN = 200          # names already used, newest first, listed in the prompt


def _system(reply_format: str) -> str:
    params = ", ".join(f"{p}={CHUNK_SIZE_DEFAULT}" if p == "chunk_size" else p for p in REQUIRED_PARAMS)
    return render("system.j2", reply_format=reply_format,
                  allowed_imports=[m for m in ALLOWED_IMPORTS if m != "__future__"],
                  signature=f"def {ENTRY}({params}) -> tuple[o, S]")


class LLMProposer:
    """The `Proposer` of agent/context.py over one or more OpenAI-compatible endpoints."""

    def __init__(self, config: ProposerConfig, *, seed: int = 0, base_delay_s: float = 1.0,
                 max_delay_s: float = 60.0, observations: Iterable[tuple[str, float, float]] = ()) -> None:
        if not config.endpoints:
            raise ConfigError("proposer kind 'llm' needs at least one [[proposer.endpoints]] entry")
        names = [e.name for e in config.endpoints]
        if len(set(names)) != len(names):
            raise ConfigError(f"proposer.endpoints: names must be unique, got {names}")
        self.config = config
        self.clients = {e.name: LLMClient(e, max_retries=config.max_retries, base_delay_s=base_delay_s,
                                          max_delay_s=max_delay_s, seed=seed) for e in config.endpoints}
        priced = all(e.price_in_per_mtok > 0 or e.price_out_per_mtok > 0 for e in config.endpoints)
        self.cost_unit = "usd" if priced else "ktokens"
        self.bandit = Bandit.from_observations(names, observations, seed=seed)
        self._owner: dict[str, str] = {}       # proposal name -> endpoint that wrote it

    @classmethod
    def from_history(cls, config: ProposerConfig, records: list[Candidate], **kwargs) -> "LLMProposer":
        """A proposer whose bandit has replayed every recorded LLM candidate's outcome and cost."""
        proposer = cls(config, **kwargs)
        by_id = {c.id: c for c in records}
        for child in records:
            name = proposer.endpoint_of(child.usage)
            if name is not None:
                proposer.observe(name, improvement(child, by_id.get(child.parent)), proposer.cost_of(child.usage))
        return proposer

    def endpoint_of(self, usage: Usage) -> str | None:
        """The configured endpoint that produced `usage` (Usage.model is "<endpoint>/<model>")."""
        if usage.calls == 0:
            return None
        return next((n for n, c in self.clients.items() if usage.model == c.label), None)

    def cost_of(self, usage: Usage) -> float:
        """The bandit's cost of a candidate: USD when every endpoint is priced, else thousands of tokens."""
        cost = usage.cost_usd if self.cost_unit == "usd" else (usage.prompt_tokens + usage.completion_tokens) / 1e3
        return max(cost, 1e-9)

    def observe(self, endpoint_name: str, improvement: float, cost: float) -> None:
        """Feed back one outcome: the child's mean minus its parent's (clipped at 0), and what it cost."""
        self.bandit.update(endpoint_name, max(0.0, improvement), max(cost, 1e-9))

    def propose(self, ctx: ProposalContext) -> tuple[Proposal, Usage]:
        endpoint = self.bandit.choose()
        names = ctx.existing_names[-NAMES_SHOWN:]
        user = render("propose.j2", ctx=ctx, titles=TASK_TITLES, names_shown=names,
                      names_omitted=len(ctx.existing_names) - len(names))
        return self._ask(endpoint, lambda fmt: user)

    def repair(self, ctx: ProposalContext, proposal: Proposal, failure: str) -> tuple[Proposal, Usage]:
        endpoint = self._owner.get(proposal.name) or self.bandit.choose()
        try:
            code = proposal.resolve_code(ctx.parent_code)
        except ProposalError:
            code = None
        return self._ask(endpoint, lambda fmt: render("repair.j2", ctx=ctx, proposal=proposal, candidate_code=code,
                                                      failure=failure.strip(), reply_format=fmt))

    def _ask(self, endpoint: str, user: Callable[[str], str]) -> tuple[Proposal, Usage]:
        """One proposal from `endpoint`: structured if it takes it, free text otherwise (at most one switch)."""
        client = self.clients[endpoint]
        usage = Usage(model=client.label)
        for _ in range(2):
            fmt = "json" if client.structured_ok else "text"
            messages = [{"role": "system", "content": _system(fmt)}, {"role": "user", "content": user(fmt)}]
            try:
                reply = client.complete(messages, schema=reply_schema() if fmt == "json" else None)
            except StructuredOutputRejected:
                continue
            except ProposalError as e:
                raise ProposalError(str(e), kind=e.kind, usage=usage + (e.usage or Usage())) from None
            usage = usage + reply.usage
            json_reply = reply.text.lstrip().startswith(("{", "```json"))
            try:
                proposal = parse_reply(reply.text, finish_reason=reply.finish_reason, refusal=reply.refusal)
            except ProposalError as e:
                if fmt == "json" and not json_reply and e.kind in ("no_code", "no_name", "missing_sections"):
                    client.structured_ok = False
                    continue
                raise ProposalError(str(e), kind=e.kind, raw=reply.text, usage=usage) from None
            if fmt == "json" and not json_reply:
                client.structured_ok = False
            proposal, usage = self._complete_chinese(client, proposal, usage)
            self._owner[proposal.name] = endpoint
            return proposal, usage
        raise ProposalError(f"{endpoint}: no usable reply in either structured or free-text form",
                            kind="format", usage=usage)

    def _complete_chinese(self, client: LLMClient, proposal: Proposal, usage: Usage) -> tuple[Proposal, Usage]:
        missing = missing_chinese(proposal)
        if not missing:
            return proposal, usage
        sections = {key: getattr(proposal, key).en for key in missing}
        try:
            reply = client.complete([{"role": "user", "content": render("translate.j2", sections=sections)}])
        except ProposalError as e:
            raise ProposalError(f"reply lacks Chinese for {', '.join(missing)}; the translation request failed: {e}",
                                kind="missing_chinese", usage=usage + (e.usage or Usage())) from None
        usage = usage + reply.usage
        translated = parse_translations(reply.text, missing)
        still = [key for key in missing if not translated.get(key)]
        if still:
            raise ProposalError(f"reply lacks Chinese for {', '.join(still)}, even after asking once",
                                kind="missing_chinese", raw=reply.text, usage=usage)
        update = {key: Bilingual(en=sections[key], zh=translated[key]) for key in missing}
        return proposal.model_copy(update=update), usage


def improvement(child: Candidate, parent: Candidate | None) -> float:
    """The bandit's reward: how much the child's mean beat its parent's (0 when either is unscored)."""
    if parent is None or not child.scored or not parent.scored:
        return 0.0
    return max(0.0, child.mean - parent.mean)
